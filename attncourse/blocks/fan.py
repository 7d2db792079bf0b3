"""Stub: replaced by the fan module (Part VI)."""

__all__: list[str] = []
