"""Work in progress (Part III)."""

__all__: list[str] = []
