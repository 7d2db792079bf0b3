"""Shuffle Attention, SA-Net (Zhang & Yang, ICASSP 2021). Chapter: ``chapters/hybrid/shuffle.md``."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from .._checks import check_channels, check_choice, check_input, check_positive_int
from .._registry import register
from ..layers import Gate

__all__ = ["ShuffleAttention"]

#: The paper's number of groups G.
PAPER_GROUPS = 64


def default_groups(channels: int) -> int:
    """The G that ``groups=None`` picks: the paper's 64 where C is divisible by 128, else the
    largest G <= 64 with C divisible by 2G (C = 64 -> 32, C = 48 -> 24, C = 16 -> 8). Needs C even."""
    for g in range(PAPER_GROUPS, 0, -1):
        if channels % (2 * g) == 0:
            return g
    raise ValueError(
        f"ShuffleAttention expected an even number of channels (each group splits into two halves), "
        f"got channels={channels}"
    )


@register("sa")
class ShuffleAttention(nn.Module):
    r"""Shuffle Attention: per group, a channel gate on one half and a spatial gate on the other, then a shuffle.

    Paper: Q.-L. Zhang, Y.-B. Yang, "SA-Net: Shuffle Attention for Deep Convolutional Neural
    Networks", ICASSP 2021, arXiv:2102.00240. Official code: github.com/wofmanaf/SA-Net
    (``models/sa_resnet.py``, class ``sa_layer``).

    The input X ∈ R^{C×H×W} is split into G groups of C/G channels; group k splits into
    X_k1 (its first C/2G channels) and X_k2 (its last C/2G). With s = F_gp(X_k1), the mean over
    H × W, and W1, b1, W2, b2 ∈ R^{C/2G×1×1} shared by all groups::

        (channel) X'_k1 = σ(W1 · s + b1) · X_k1
        (spatial) X'_k2 = σ(W2 · GN(X_k2) + b2) · X_k2

    GN is group norm with one channel per group (mean and variance over H × W of each channel).
    X'_k = [X'_k1; X'_k2]; the G groups are concatenated back to C channels in their order, then
    a channel shuffle with 2 groups interleaves the two halves of the channel axis:
    output channel 2j + i is channel i·C/2 + j before the shuffle.

    Args:
        channels: C; must be divisible by 2G.
        groups: G. ``None`` (default): the paper's 64 where C is divisible by 128, else the
            largest G <= 64 with C divisible by 2G (so ``ShuffleAttention(64)`` has G = 32, one
            channel per half; see ``default_groups``). An explicit G that does not give C
            divisible by 2G raises ``ValueError`` (``groups=64`` at C = 64, say): no silent change.
        norm_affine: GN's own affine weight and bias (C/2G each, initialised to 1 and 0), as the
            official ``nn.GroupNorm(C/2G, C/2G)`` has (default ``True``). They are redundant with
            W2, b2 (W2·(γ·x̂ + β) + b2 is again an affine map of x̂); ``False`` drops them.

    Initialisation as the official code: W1 = W2 = 0, b1 = b2 = 1, so both gates start at σ(1)
    everywhere. GN's ε is PyTorch's default 1e-5, as in the official code.

    Shapes: input ``(B, C, H, W)`` → output ``(B, C, H, W)``, any H, W ≥ 1. The gates
    ``channel_gate`` and ``spatial_gate`` output ``(B, C/2)`` and ``(B, C/2, H, W)``: the weights
    of the channel halves and of the spatial halves, in the order (group, channel in the half).

    Parameters: ``4·C/2G = 2C/G`` (W1, b1, W2, b2) plus ``2·C/2G = C/G`` for GN's affine: ``3C/G``
    (6 at C = 64, G = 32; 12 at C = 256, G = 64). Summed over ResNet-50's 16 bottlenecks
    (widths 256, 512, 1024, 2048 in 3, 4, 6, 3 blocks; G = 64) that is 708 with the GN affine,
    472 without; the paper's abstract says 300, which neither count gives.

    Differences from the official code: none in the computation (the layout of the groups, the
    halves and the shuffle are the official reshapes). The official module checks nothing, and
    where a C not divisible by 2G fails depends on C: for C < 2G it fails when built (C // 2G = 0,
    and ``nn.GroupNorm(0, 0)`` raises ``ZeroDivisionError``; C = 64 with its default G = 64, say);
    for C >= 2G with C not divisible by G, in the forward's first reshape to (B·G, C/G, H, W); for
    C/G odd, ``chunk`` gives the channel half one more channel than the C // 2G values of W1, b1,
    so at C/G = 3 one value broadcasts over the half's two channels and the module runs, and from
    C/G = 5 the product fails (each case tested on the official steps, re-typed). Here the
    constructor checks. The official ``groups`` default is 64 at every C; ours is 64 only where C
    allows it.
    """

    def __init__(self, channels: int, *, groups: int | None = None, norm_affine: bool = True) -> None:
        super().__init__()
        self.channels = check_channels(self, channels)
        if groups is None:
            self.groups = default_groups(self.channels)
        else:
            self.groups = check_positive_int(self, "groups", groups)
            if self.channels % (2 * self.groups):
                raise ValueError(
                    f"ShuffleAttention expected channels={self.channels} to be divisible by 2 * groups = "
                    f"{2 * self.groups} (each of the G groups splits into two halves), got groups={self.groups}"
                    f"; use groups=None for the largest valid G <= 64"
                )
        check_choice(self, "norm_affine", norm_affine, (True, False))
        self.norm_affine = bool(norm_affine)
        k = self.half = self.channels // (2 * self.groups)  # C/2G channels in each half of a group
        self.cweight = nn.Parameter(torch.zeros(k, 1, 1))  # W1 ∈ R^{C/2G×1×1}, 0 at init
        self.cbias = nn.Parameter(torch.ones(k, 1, 1))  # b1, 1 at init
        self.sweight = nn.Parameter(torch.zeros(k, 1, 1))  # W2, 0 at init
        self.sbias = nn.Parameter(torch.ones(k, 1, 1))  # b2, 1 at init
        self.gn = nn.GroupNorm(k, k, eps=1e-5, affine=self.norm_affine)  # GN: one channel per group
        self.channel_gate = Gate(nn.Sigmoid(), kind="channel")  # σ of the channel half
        self.spatial_gate = Gate(nn.Sigmoid(), kind="spatial")  # σ of the spatial half

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(self, x, self.channels)
        b = x.shape[0]
        # G groups of C/G channels, each split by chunk into its halves X_k1 and X_k2 (C/2G channels
        # each): chunk's backward is one cat, where selecting from a (B·G, 2, C/2G, H, W) view
        # costs two zero-filled full-size tensors.
        xg = rearrange(x, "b (g c) h w -> (b g) c h w", g=self.groups)
        x1, x2 = xg.chunk(2, dim=1)  # X_k1, X_k2: (B·G, C/2G, H, W)
        s = F.adaptive_avg_pool2d(x1, 1)  # s = F_gp(X_k1): (B·G, C/2G, 1, 1)
        a1 = self.channel_gate(rearrange(self.cweight * s + self.cbias, "(b g) k 1 1 -> b (g k)", b=b))  # σ(W1 s + b1)
        a2 = self.spatial_gate(rearrange(self.sweight * self.gn(x2) + self.sbias, "(b g) k h w -> b (g k) h w", b=b))
        y1 = x1 * rearrange(a1, "b (g k) -> (b g) k 1 1", g=self.groups)  # X'_k1
        y2 = x2 * rearrange(a2, "b (g k) h w -> (b g) k h w", g=self.groups)  # X'_k2 = σ(W2 GN(X_k2) + b2) X_k2
        # Concatenation and the channel shuffle in one copy. Before the shuffle, channel
        # (g, t, k) (group g, half t, channel k of the half) sits at g·2K + t·K + k, K = C/2G; the
        # shuffle reads the channel axis as (i j), i the half of the G groups (g = i·G/2 + g'), and
        # writes (j i): (g, t, k) lands at 2(g'·2K + t·K + k) + i = ((g'·2 + t)·K + k)·2 + i.
        # So, for even G, stacking the halves t as axis 2 of "b g' k i" views writes the final order
        # directly (the official code copies twice: cat, then the shuffle's permute). For odd G the
        # two halves of the channel axis split a group, and we copy twice as the official code.
        if self.groups % 2:
            y = rearrange(torch.cat([y1, y2], dim=1), "(b g) c h w -> b (g c) h w", b=b)  # concatenate
            return rearrange(y, "b (i j) h w -> b (j i) h w", i=2)  # channel shuffle with 2 groups
        y = torch.stack([rearrange(t, "(b i g) k h w -> b g k i h w", b=b, i=2) for t in (y1, y2)], dim=2)
        return rearrange(y, "b g t k i h w -> b (g t k i) h w")  # channel shuffle with 2 groups: a view

    def extra_repr(self) -> str:
        return f"channels={self.channels}, groups={self.groups}, half={self.half}, norm_affine={self.norm_affine}"
