"""Part V, local attention: attention that looks at a neighbourhood (windows, outlooks, local
contexts) or weighs positions by their distance (decays), with convolution put back in."""

from .cot import *  # noqa: F401,F403
from .cot import __all__ as _cot_all
from .hat import *  # noqa: F401,F403
from .hat import __all__ as _hat_all
from .outlook import *  # noqa: F401,F403
from .outlook import __all__ as _outlook_all
from .rmt import *  # noqa: F401,F403
from .rmt import __all__ as _rmt_all
from .window import *  # noqa: F401,F403
from .window import __all__ as _window_all

__all__ = [*_window_all, *_outlook_all, *_cot_all, *_hat_all, *_rmt_all]
