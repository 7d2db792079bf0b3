"""Part II, spatial and hybrid attention: which channels, and where."""

from .bam import BAM
from .cbam import CBAM
from .coord import CoordAttention
from .scse import SCSE, ChannelSE, SpatialSE

__all__ = ["CBAM", "BAM", "SCSE", "ChannelSE", "SpatialSE", "CoordAttention"]
