"""Part I, channel attention: which channels matter for this input."""

from .se import SqueezeExcite

__all__ = ["SqueezeExcite"]
