"""EMA, Efficient Multi-scale Attention (Ouyang et al., ICASSP 2023). Chapter: ``chapters/hybrid/ema.md``."""

from __future__ import annotations

import torch
from einops import einsum, rearrange, reduce
from torch import nn
from torch.nn import functional as F

from .._checks import check_channels, check_divisible, check_input, check_positive_int
from .._registry import register
from ..layers import Gate

__all__ = ["EMA"]


@register("ema")
class EMA(nn.Module):
    r"""EMA: per channel group, a row-and-column gate and a 3×3 conv weigh each other into one spatial map.

    Paper: D. Ouyang, S. He, G. Zhang, M. Luo, H. Guo, J. Zhan, Z. Huang, "Efficient Multi-Scale
    Attention Module with Cross-Spatial Learning", ICASSP 2023, doi:10.1109/ICASSP49357.2023.10096516;
    also arXiv:2305.13563. Official code: github.com/YOLOonMe/EMA-attention-module
    (``EMA_attention_module``).

    The computation, for input x of shape C × H × W, G groups of c = C/G channels
    (``factor`` = G); each group is handled alone, with weights shared by all groups::

        x_g = x[g·c : (g+1)·c]                               a group, c × H × W
        z^h(i) = 1/W Σ_j x_g(i, j),  z^w(j) = 1/H Σ_i x_g(i, j)   row and column means, c × H, c × W
        [a^h, a^w] = split(W_1 [z^h, z^w] + b_1)             shared 1×1 conv c -> c on the H + W strip
        x1 = GN(x_g · σ(a^h) · σ(a^w))                        1×1 branch (coordinate-attention-like)
        x2 = W_3 ⋆ x_g + b_3                                  3×3 branch, c -> c, padding 1
        s1 = softmax_c(GAP(x1)),  s2 = softmax_c(GAP(x2))     c weights each, softmax over the channels
        m(i, j) = Σ_k s1_k · x2_k(i, j) + Σ_k s2_k · x1_k(i, j)   cross-spatial: one H × W map per group
        y_g = x_g · σ(m)                                      the same map gates all c channels

    As in the official code: GN is ``GroupNorm(c, c)`` (one channel per GN group, ε = 1e-5, with
    affine weight and bias), both convolutions have biases, and there is no activation between
    the 1×1 conv and the sigmoids (unlike Coordinate Attention's BN + h-swish).

    A consequence of the code's GroupNorm: each channel of x1 is normalised over its own H × W,
    so its spatial mean is exactly GN's bias β_k. Hence s1 = softmax(β) does not depend on the
    input: a learned weighting of x2's channels (tested).

    Args:
        channels: C, the number of input (and output) channels.
        factor: G, the number of channel groups. Paper and official code: 32. C must be divisible
            by G, so that each group has c = C/G ≥ 1 channels.

    Shapes:
        input ``(B, C, H, W)`` → output ``(B, C, H, W)``; any H, W ≥ 1, square or not.

    Parameters, with c = C/G: ``c² + c`` (1×1 conv) ``+ 9c² + c`` (3×3 conv) ``+ 2c`` (GN), that is
    ``10c² + 4c``; 672 at C = 256 (c = 8), 48 at C = 64 with the default G = 32 (c = 2).

    Differences from the official code: none in the computation. It asserts only
    ``channels // factor > 0``; here C not divisible by G raises a ``ValueError`` when the module
    is built. The official forward would fail on such a C anyway, at every batch size and map
    size: its first reshape, ``x.reshape(B·G, -1, H, W)``, needs B·C·H·W divisible by B·G·H·W,
    that is C divisible by G (tested on that reshape, re-typed); it never mixes channels across
    groups. Means are written as sum / count, and
    the shared 3×3 conv runs as one grouped convolution over the C channels with its weights tiled
    G times: the same numbers, about twice as fast on the CPU as a c-channel conv over B·G maps.

    The gates: ``self.gate_h`` (``kind="height"``, ``(B·G, c, H, 1)``) and ``self.gate_w``
    (``kind="width"``, ``(B·G, c, 1, W)``) output σ(a^h) and σ(a^w); ``self.gate`` (``kind="spatial"``,
    ``(B·G, 1, H, W)``, group g of sample b at row b·G + g) outputs σ(m), the map that multiplies x.
    """

    def __init__(self, channels: int, *, factor: int = 32) -> None:
        super().__init__()
        self.channels = check_channels(self, channels)
        self.factor = check_positive_int(self, "factor", factor)
        if factor > channels:
            raise ValueError(
                f"EMA expected factor <= channels (at least one channel per group), got factor={factor} "
                f"for channels={channels}"
            )
        check_divisible(self, "channels", channels, "factor", factor)
        c = channels // factor
        self.group_channels = c
        self.conv1x1 = nn.Conv2d(c, c, kernel_size=1)  # W_1, b_1: shared by rows and columns
        self.conv3x3 = nn.Conv2d(c, c, kernel_size=3, padding=1)  # W_3, b_3
        self.gn = nn.GroupNorm(c, c)  # one channel per GN group, as the official code
        self.gate_h = Gate(nn.Sigmoid(), kind="height")  # σ(a^h)
        self.gate_w = Gate(nn.Sigmoid(), kind="width")  # σ(a^w)
        self.softmax = nn.Softmax(dim=-1)  # over the c channels of a group
        self.gate = Gate(nn.Sigmoid(), kind="spatial")  # σ(m)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(self, x, self.channels)
        h, w = x.shape[2], x.shape[3]
        g = rearrange(x, "b (g c) h w -> (b g) c h w", g=self.factor)  # x_g for every group: (B·G, c, H, W)
        z_h = reduce(g, "n c h w -> n c h 1", "sum") / w  # z^h: row means, (B·G, c, H, 1)
        z_w = reduce(g, "n c h w -> n c w 1", "sum") / h  # z^w: column means, (B·G, c, W, 1)
        a = self.conv1x1(torch.cat([z_h, z_w], dim=2))  # W_1 [z^h, z^w] + b_1: (B·G, c, H + W, 1)
        a_h, a_w = torch.split(a, [h, w], dim=2)  # (B·G, c, H, 1), (B·G, c, W, 1)
        a_w = rearrange(a_w, "n c w 1 -> n c 1 w")
        x1 = self.gn(g * self.gate_h(a_h) * self.gate_w(a_w))  # 1×1 branch
        # 3×3 branch: self.conv3x3 on every group, run as one grouped convolution with its weights
        # tiled G times (the same numbers; on the CPU much faster than a c-channel conv on B·G maps)
        k = self.conv3x3
        x2 = F.conv2d(x, k.weight.repeat(self.factor, 1, 1, 1), k.bias.repeat(self.factor), padding=1, groups=self.factor)
        x2 = rearrange(x2, "b (g c) h w -> (b g) c h w", g=self.factor)  # (B·G, c, H, W)
        s1 = self.softmax(reduce(x1, "n c h w -> n c", "sum") / (h * w))  # softmax_c(GAP(x1)): (B·G, c)
        s2 = self.softmax(reduce(x2, "n c h w -> n c", "sum") / (h * w))  # softmax_c(GAP(x2))
        m = einsum(s1, x2, "n c, n c h w -> n h w") + einsum(s2, x1, "n c, n c h w -> n h w")  # (B·G, H, W)
        y = g * self.gate(rearrange(m, "n h w -> n 1 h w"))  # y_g = x_g · σ(m)
        return rearrange(y, "(b g) c h w -> b (g c) h w", g=self.factor)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, factor={self.factor}, group_channels={self.group_channels}"
