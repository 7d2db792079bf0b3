"""attncourse: attention in vision, derived from the papers.

The companion package of the attncourse book. Every mechanism is an ``nn.Module`` that maps
``(B, C, H, W)`` to the same shape, takes the channel count first, and is registered under a
short name::

    import attncourse
    attncourse.available()          # ['bam', 'cam', 'cbam', 'ccnet', ...]
    se = attncourse.create("se", 64)
    y = se(torch.randn(8, 64, 14, 14))

    from attncourse.nets import resnet50
    net = attncourse.insert(resnet50(), "se")   # a copy with SE after every bn3: SE-ResNet-50
"""

from __future__ import annotations

from . import blocks, channel, hybrid, linear, local, selfattn
from ._registry import available, create, get, register
from .channel import ECA, SelectiveKernel, SimAM, SqueezeExcite
from .hybrid import BAM, CBAM, EMA, GAM, SCSE, CoordAttention, ShuffleAttention, TripletAttention
from .selfattn import (
    ChannelAttention,
    CrissCrossAttention,
    DualAttention,
    GlobalContextBlock,
    MultiHeadSelfAttention2d,
    NonLocalBlock,
    PositionAttention,
)
from .linear import ExternalAttention, FocusedLinearAttention2d, LinearAttention2d
from .local import (
    ContextualTransformer2d,
    HybridAttentionBlock2d,
    ManhattanSelfAttention2d,
    OutlookAttention2d,
    OverlappingCrossAttention2d,
    WindowAttention2d,
)
from .cost import count_flops, count_parameters
from .insert import insert
from .layers import Gate
from .show import show_source

__version__ = "0.1.0"

__all__ = [
    "available",
    "create",
    "get",
    "register",
    "Gate",
    "SqueezeExcite",
    "ECA",
    "SelectiveKernel",
    "SimAM",
    "CBAM",
    "BAM",
    "SCSE",
    "CoordAttention",
    "TripletAttention",
    "GAM",
    "ShuffleAttention",
    "EMA",
    "MultiHeadSelfAttention2d",
    "NonLocalBlock",
    "GlobalContextBlock",
    "PositionAttention",
    "ChannelAttention",
    "DualAttention",
    "CrissCrossAttention",
    "LinearAttention2d",
    "ExternalAttention",
    "FocusedLinearAttention2d",
    "WindowAttention2d",
    "OutlookAttention2d",
    "ContextualTransformer2d",
    "HybridAttentionBlock2d",
    "OverlappingCrossAttention2d",
    "ManhattanSelfAttention2d",
    "insert",
    "count_parameters",
    "count_flops",
    "show_source",
    "__version__",
]
