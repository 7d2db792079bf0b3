"""Stub: replaced by the muse module (Part VI)."""

__all__: list[str] = []
