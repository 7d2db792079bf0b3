"""Shuffle Attention, SA-Net (Zhang & Yang, ICASSP 2021). Chapter: ``chapters/hybrid/shuffle.md``."""

__all__: list[str] = []
