"""Triplet Attention (Misra et al., WACV 2021). Chapter: ``chapters/hybrid/triplet.md``."""

__all__: list[str] = []
