"""Stub: replaced by the mobilevit module (Part VI)."""

__all__: list[str] = []
