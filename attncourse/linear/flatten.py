"""Focused Linear Attention (Han et al., ICCV 2023). Chapter: ``chapters/linear/flatten.md``."""

__all__: list[str] = []
