"""Part II, spatial and hybrid attention: which channels, and where."""

from .bam import BAM
from .cbam import CBAM
from .coord import CoordAttention
from .ema import EMA
from .gam import GAM, gam_parameters
from .scse import SCSE, ChannelSE, SpatialSE
from .shuffle import ShuffleAttention
from .triplet import TripletAttention, TripletBranch

__all__ = [
    "CBAM", "BAM", "SCSE", "ChannelSE", "SpatialSE", "CoordAttention",
    "TripletAttention", "TripletBranch", "GAM", "gam_parameters", "ShuffleAttention", "EMA",
]
