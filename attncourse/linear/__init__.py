"""Part IV, linear attention: attention whose cost grows linearly with the number of positions."""

from .external import *  # noqa: F401,F403
from .external import __all__ as _external_all
from .flatten import *  # noqa: F401,F403
from .flatten import __all__ as _flatten_all
from .kernel import EPS, RowNormalise, elu_feature_map, kernel_attention, kernel_attention_heads, kernel_weights
from .linear import FEATURE_MAPS, LinearAttention2d

__all__ = [
    "EPS",
    "RowNormalise",
    "elu_feature_map",
    "kernel_attention",
    "kernel_attention_heads",
    "kernel_weights",
    "FEATURE_MAPS",
    "LinearAttention2d",
    *_external_all,
    *_flatten_all,
]
