"""GAM, the Global Attention Mechanism (Liu et al., arXiv 2112.05561). Chapter: ``chapters/hybrid/gam.md``."""

from __future__ import annotations

import torch
from einops import rearrange
from torch import nn

from .._checks import check_channels, check_choice, check_input, check_norm_batch, check_positive_int
from .._registry import register
from ..layers import Gate

__all__ = ["GAM", "gam_parameters"]


def gam_parameters(channels: int, reduction: int = 4, kernel_size: int = 7) -> int:
    """GAM's parameter count, as the chapter derives it (hidden width h = C // r).

    MLP ``C → h → C`` with biases: ``2Ch + h + C``; conv ``k×k, C → h`` with bias, then BN (γ, β):
    ``k²Ch + h + 2h``; conv ``k×k, h → C`` with bias, then BN: ``k²hC + C + 2C``. In all
    ``(2 + 2k²)·C·h + 4h + 4C``: at k = 7, ``100·C·h + 4h + 4C`` ≈ 25 C² at r = 4.
    """
    c, h, k = channels, channels // reduction, kernel_size
    return (2 + 2 * k * k) * c * h + 4 * h + 4 * c


@register("gam")
class GAM(nn.Module):
    r"""GAM: a channel map from an MLP at every position, then a spatial map from two k×k convolutions.

    Paper: Y. Liu, Z. Shao, N. Hoffmann, "Global Attention Mechanism: Retain Information to Enhance
    Channel-Spatial Interactions", arXiv:2112.05561 (2021). No official code was found; the
    widely copied ``GAM_Attention(in_channels, out_channels, rate=4)`` circulates in blogs and
    repositories (see the chapter), in two forms: with and without a sigmoid on the channel branch.

    Equations (F1 ∈ R^{C×H×W}; the paper numbers only the first two)::

        F2 = M_c(F1) ⊗ F1,        F3 = M_s(F2) ⊗ F2
        M_c(F) = σ(permute⁻¹(W1 δ(W0 permute(F))))        (the MLP over C at every position)
        M_s(F) = σ(BN(f1^{k×k}(δ(BN(f0^{k×k}(F))))))     (f0: C → C/r, f1: C/r → C)

    The permutation moves C last ((C, H, W) → (W, H, C) in the paper; (H, W, C) here: the MLP
    acts on the last axis only, so the order of H and W does not matter). W0 ∈ R^{C/r × C},
    W1 ∈ R^{C × C/r}, δ = ReLU. There is no pooling: both maps are ``(B, C, H, W)``.

    Args:
        channels: C.
        reduction: r, for both branches (hidden width ``channels // reduction``); 4 in the copied code.
        kernel_size: k of both convolutions (7 in the paper); odd, so padding k // 2 keeps H × W.
        channel_sigmoid: ``True`` (default): the paper's text, a sigmoid on the channel branch.
            ``False``: the copied ``GAM_Attention(in_channels, out_channels, rate=4)`` form, which
            multiplies F1 by the MLP's raw output (an unbounded, signed "map").

    Shapes: input ``(B, C, H, W)`` → output ``(B, C, H, W)``, any H, W ≥ 1. The gates
    ``channel_gate`` and ``spatial_gate`` output M_c and M_s, both ``(B, C, H, W)``.

    Parameters: ``(2 + 2k²)·C·h + 4h + 4C`` with h = C // r (:func:`gam_parameters`): 102,720 at
    C = 64, r = 4, k = 7, i.e. about 25 C²: the two k×k convolutions hold 98 of every 100 C·h.

    Choices where the paper is silent, taken from the copied code: biases on the MLP and on both
    convolutions (a bias right before a batch norm is redundant in training mode, but the copied
    code has it), PyTorch's default batch-norm settings and initialisation. The batch norms make
    the spatial map depend on the batch in training mode: a batch with B × H × W = 1 is refused.
    """

    def __init__(
        self, channels: int, *, reduction: int = 4, kernel_size: int = 7, channel_sigmoid: bool = True
    ) -> None:
        super().__init__()
        self.channels = check_channels(self, channels)
        self.reduction = check_positive_int(self, "reduction", reduction)
        self.hidden = channels // self.reduction
        if self.hidden < 1:
            raise ValueError(
                f"GAM expected reduction <= channels so that the hidden width C/r = channels // reduction "
                f"is at least 1, got channels={channels}, reduction={reduction}"
            )
        k = check_positive_int(self, "kernel_size", kernel_size)
        if k % 2 == 0:
            raise ValueError(f"GAM expected an odd kernel_size, so that padding kernel_size // 2 keeps H x W, got {k}")
        self.kernel_size = k
        check_choice(self, "channel_sigmoid", channel_sigmoid, (True, False))
        self.channel_sigmoid = bool(channel_sigmoid)
        c, h = self.channels, self.hidden
        # M_c: the MLP over the channel axis at every position
        self.fc0 = nn.Linear(c, h)  # W0: C -> C/r
        self.fc1 = nn.Linear(h, c)  # W1: C/r -> C
        self.channel_gate = Gate(nn.Sigmoid() if channel_sigmoid else nn.Identity(), kind="spatial-channel")
        # M_s: two k×k convolutions with batch norms, no pooling
        self.conv0 = nn.Conv2d(c, h, k, padding=k // 2)  # f0: C -> C/r
        self.bn0 = nn.BatchNorm2d(h)
        self.conv1 = nn.Conv2d(h, c, k, padding=k // 2)  # f1: C/r -> C
        self.bn1 = nn.BatchNorm2d(c)
        self.act = nn.ReLU()  # δ
        self.spatial_gate = Gate(nn.Sigmoid(), kind="spatial-channel")

    def channel_map(self, f: torch.Tensor) -> torch.Tensor:
        """M_c(F): ``(B, C, H, W)``."""
        z = rearrange(f, "b c h w -> b h w c")  # permute: C last
        z = self.fc1(self.act(self.fc0(z)))  # the MLP over C at every position
        return self.channel_gate(rearrange(z, "b h w c -> b c h w"))  # permute back, σ

    def spatial_map(self, f: torch.Tensor) -> torch.Tensor:
        """M_s(F): ``(B, C, H, W)``."""
        z = self.act(self.bn0(self.conv0(f)))  # k×k conv C -> C/r, BN, ReLU
        return self.spatial_gate(self.bn1(self.conv1(z)))  # k×k conv C/r -> C, BN, σ

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(self, x, self.channels)
        if self.training:
            check_norm_batch(self, x, "its batch norms")
        # x first: the product takes x's memory layout. M_c comes back from channels-last (a
        # permuted view), and M_c ⊗ x would hand channels-last F2 to the convolutions (10 % slower).
        f2 = x * self.channel_map(x)  # F2 = M_c(F1) ⊗ F1
        return self.spatial_map(f2) * f2  # F3 = M_s(F2) ⊗ F2

    def extra_repr(self) -> str:
        return (
            f"channels={self.channels}, reduction={self.reduction}, hidden={self.hidden}, "
            f"kernel_size={self.kernel_size}, channel_sigmoid={self.channel_sigmoid}"
        )
