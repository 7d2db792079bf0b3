"""EMA, Efficient Multi-scale Attention (Ouyang et al., ICASSP 2023). Chapter: ``chapters/hybrid/ema.md``."""

__all__: list[str] = []
