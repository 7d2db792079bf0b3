"""Part III, self-attention on feature maps: every position attends to every other."""

from .mhsa import *  # noqa: F401,F403
from .nonlocal_ import *  # noqa: F401,F403
from .gcnet import *  # noqa: F401,F403
from .danet import *  # noqa: F401,F403
from .ccnet import *  # noqa: F401,F403
from . import ccnet, danet, gcnet, mhsa, nonlocal_

__all__ = [*mhsa.__all__, *nonlocal_.__all__, *gcnet.__all__, *danet.__all__, *ccnet.__all__]
