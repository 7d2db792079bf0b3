"""External Attention (Guo et al., TPAMI 2022). Chapter: ``chapters/linear/external.md``."""

__all__: list[str] = []
