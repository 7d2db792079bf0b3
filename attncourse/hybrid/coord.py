"""Coordinate Attention (Hou, Zhou, Feng, CVPR 2021). Chapter: ``chapters/hybrid/coord.md``."""

from __future__ import annotations

import torch
from einops import rearrange, reduce
from torch import nn

from .._checks import check_channels, check_input, check_positive_int
from .._registry import register
from ..layers import Gate

__all__ = ["CoordAttention"]


@register("coord")
class CoordAttention(nn.Module):
    r"""Coordinate Attention: gate each channel by one weight per row times one weight per column.

    Paper: Q. Hou, D. Zhou, J. Feng, "Coordinate Attention for Efficient Mobile Network Design",
    CVPR 2021, arXiv:2103.02907. Official code: github.com/houqb/CoordAttention (``coordatt.py``).

    Equations, for input x of shape C × H × W. The numbers (4)-(9) are meant as the CVPR 2021
    paper's (arXiv:2103.02907, whose section 3.1 first recalls SE) but could not be checked
    against its text::

        (4) z^h_c(h) = 1/W Σ_{0≤i<W} x_c(h, i)          pool each row     -> C × H
        (5) z^w_c(w) = 1/H Σ_{0≤j<H} x_c(j, w)          pool each column  -> C × W
        (6) f = δ(F1([z^h, z^w]))                        shared 1×1 conv C -> m on the H + W strip
            f^h, f^w = split(f, [H, W])                  m × H and m × W
        (7) g^h = σ(F_h(f^h))                            1×1 conv m -> C, one weight per row
        (8) g^w = σ(F_w(f^w))                            1×1 conv m -> C, one weight per column
        (9) y_c(i, j) = x_c(i, j) · g^h_c(i) · g^w_c(j)

    As in the official code, δ is batch norm followed by h-swish, x · ReLU6(x + 3) / 6
    (``nn.Hardswish`` computes exactly this), and F1, F_h, F_w are 1×1 convolutions with biases.

    Args:
        channels: C, the number of input (and output) channels.
        reduction: r, the reduction ratio of the shared transform F1. Official code and paper: 32.
        min_hidden: the smallest hidden width; the hidden width is
            ``m = max(min_hidden, channels // reduction)``. Official code: 8.

    Shapes:
        input ``(B, C, H, W)`` → output ``(B, C, H, W)``; any H, W ≥ 1, square or not.

    Parameters: ``C·m + m`` (F1) ``+ 2m`` (batch norm) ``+ 2(m·C + C)`` (F_h, F_w), that is
    ``3Cm + 3m + 2C``; 1,688 at C = 64 with the defaults (m = 8).

    Differences from the paper: two details follow the official code, which the equations leave
    open. The paper writes the hidden width as C/r; the code uses ``max(8, C // r)``, so small
    layers keep at least 8 hidden units (for C ≤ 255 at r = 32, m = 8 is wider than C/r). The
    paper calls δ "a non-linear activation function"; the code's is BN + h-swish (its README
    calls it SiLU). Otherwise the computation is the official code's. timm's ``CoordAttn`` has
    other defaults (no biases, a different hidden width).

    Batch norm sees the pooled strip of shape ``(B, m, H + W, 1)``: in training mode it averages
    over B·(H + W) ≥ 2 numbers per channel, so batch size 1 works, even on a 1×1 input.

    The gates ``self.gate_h`` (``kind="height"``, output ``(B, C, H, 1)``) and ``self.gate_w``
    (``kind="width"``, output ``(B, C, 1, W)``) output g^h and g^w; hook them to see the weights.
    """

    def __init__(self, channels: int, *, reduction: int = 32, min_hidden: int = 8) -> None:
        super().__init__()
        self.channels = check_channels(self, channels)
        self.reduction = check_positive_int(self, "reduction", reduction)
        self.min_hidden = check_positive_int(self, "min_hidden", min_hidden)
        self.hidden = max(self.min_hidden, channels // reduction)  # m
        m = self.hidden
        self.conv1 = nn.Conv2d(channels, m, kernel_size=1)  # F1, shared by both directions
        self.bn = nn.BatchNorm2d(m)  # part of δ in the official code
        self.act = nn.Hardswish()  # δ: h-swish, x · ReLU6(x + 3) / 6
        self.conv_h = nn.Conv2d(m, channels, kernel_size=1)  # F_h
        self.conv_w = nn.Conv2d(m, channels, kernel_size=1)  # F_w
        self.gate_h = Gate(nn.Sigmoid(), kind="height")  # σ of (7)
        self.gate_w = Gate(nn.Sigmoid(), kind="width")  # σ of (8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(self, x, self.channels)
        h, w = x.shape[2], x.shape[3]
        # Means written as sum / count: the same numbers, and a backward pass that does not
        # divide a full-size gradient. Both strips are laid along axis 2, so F1 can read them as one.
        z_h = reduce(x, "b c h w -> b c h 1", "sum") / w  # (4): H row means, (B, C, H, 1)
        z_w = reduce(x, "b c h w -> b c w 1", "sum") / h  # (5): W column means, (B, C, W, 1)
        z = torch.cat([z_h, z_w], dim=2)  # [z^h, z^w]: (B, C, H + W, 1)
        f = self.act(self.bn(self.conv1(z)))  # (6): (B, m, H + W, 1)
        f_h, f_w = torch.split(f, [h, w], dim=2)  # (B, m, H, 1), (B, m, W, 1)
        g_h = self.gate_h(self.conv_h(f_h))  # (7): (B, C, H, 1)
        g_w = self.gate_w(self.conv_w(rearrange(f_w, "b m w 1 -> b m 1 w")))  # (8): (B, C, 1, W)
        return x * (g_h * g_w)  # (9): the outer product g^h_c(i) g^w_c(j) scales x_c(i, j)

    def extra_repr(self) -> str:
        return (
            f"channels={self.channels}, reduction={self.reduction}, "
            f"min_hidden={self.min_hidden}, hidden={self.hidden}"
        )
