"""Part I, channel attention: which channels matter for this input."""

from .eca import ECA, eca_kernel_size
from .se import SqueezeExcite
from .simam import SimAM
from .sk import SelectiveKernel

__all__ = ["SqueezeExcite", "ECA", "eca_kernel_size", "SelectiveKernel", "SimAM"]
