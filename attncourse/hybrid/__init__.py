"""Part II, spatial and hybrid attention: which channels, and where."""

from .bam import BAM
from .cbam import CBAM
from .coord import CoordAttention
from .scse import SCSE, ChannelSE, SpatialSE
from .triplet import *  # noqa: F401,F403
from .triplet import __all__ as _triplet_all
from .gam import *  # noqa: F401,F403
from .gam import __all__ as _gam_all
from .shuffle import *  # noqa: F401,F403
from .shuffle import __all__ as _shuffle_all
from .ema import *  # noqa: F401,F403
from .ema import __all__ as _ema_all

__all__ = ["CBAM", "BAM", "SCSE", "ChannelSE", "SpatialSE", "CoordAttention", *_triplet_all, *_gam_all, *_shuffle_all, *_ema_all]
