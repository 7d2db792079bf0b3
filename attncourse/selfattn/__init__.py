"""Part III, self-attention on feature maps: every position attends to every other."""

from .ccnet import CrissCrossAttention
from .danet import ChannelAttention, DualAttention, PositionAttention
from .gcnet import GlobalContextBlock
from .mhsa import MultiHeadSelfAttention2d, sine_position_2d
from .nonlocal_ import NonLocalBlock

__all__ = [
    "MultiHeadSelfAttention2d",
    "sine_position_2d",
    "NonLocalBlock",
    "GlobalContextBlock",
    "PositionAttention",
    "ChannelAttention",
    "DualAttention",
    "CrissCrossAttention",
]
