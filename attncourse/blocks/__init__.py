"""Part VI, attention inside transformer blocks: the ViT block itself, a convolution-transformer
hybrid (MobileViT), attention over channels inside a ViT block (FAN), attention maps carried from
one layer to the next (ReViT) and attention in parallel with convolution (MUSE)."""

from .vit import *  # noqa: F401,F403
from .vit import __all__ as _vit_all
from .mobilevit import *  # noqa: F401,F403
from .mobilevit import __all__ as _mobilevit_all
from .fan import *  # noqa: F401,F403
from .fan import __all__ as _fan_all
from .revit import *  # noqa: F401,F403
from .revit import __all__ as _revit_all
from .muse import *  # noqa: F401,F403
from .muse import __all__ as _muse_all

__all__ = [*_vit_all, *_mobilevit_all, *_fan_all, *_revit_all, *_muse_all]
