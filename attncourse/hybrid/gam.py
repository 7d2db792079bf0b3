"""GAM, the Global Attention Mechanism (Liu et al., arXiv 2112.05561). Chapter: ``chapters/hybrid/gam.md``."""

__all__: list[str] = []
