"""Part II, spatial and hybrid attention: which channels, and where."""

__all__: list[str] = []
