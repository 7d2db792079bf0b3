"""Stub: replaced by the revit module (Part VI)."""

__all__: list[str] = []
