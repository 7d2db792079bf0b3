"""Efficient Channel Attention (Wang et al., CVPR 2020). Chapter: ``chapters/channel/eca.md``."""

from __future__ import annotations

import math
import numbers

import torch
from einops import rearrange
from einops.layers.torch import Reduce
from torch import nn

from .._checks import check_channels, check_input, check_positive_int
from .._registry import register
from ..layers import Gate

__all__ = ["ECA", "eca_kernel_size"]


def _check_real(owner: str, arg: str, value: object, *, positive: bool) -> float:
    """A finite real number (bools refused), strictly positive if ``positive``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        kind = "a finite positive number" if positive else "a finite number"
        raise ValueError(f"{owner} expected {arg} to be {kind}, got {value!r}")
    if positive and value <= 0:
        raise ValueError(f"{owner} expected {arg} to be a finite positive number, got {value!r}")
    return float(value)


def eca_kernel_size(channels: int, gamma: float = 2, beta: float = 1) -> int:
    r"""The paper's adaptive kernel size, eq. (12): ``k = ψ(C) = |log2(C)/γ + b/γ|_odd``.

    Equation numbers as in the CVPR 2020 version (= arXiv 1910.03151 v4); arXiv v1 numbers this
    equation (9).

    Computed as the paper's PyTorch snippet does: ``t = int(abs((log2(C) + b) / γ))``, then
    ``k = t`` if t is odd, else ``t + 1``. This is "the nearest odd number, ties rounded up".
    With γ = 2, b = 1: C = 64 → 3; 128, 256, 512, 1024 → 5; 2048 → 7; and C < 8 → 1.

    Args:
        channels: C, the number of channels.
        gamma: γ of the mapping (paper: 2).
        beta: b of the mapping (paper: 1).

    >>> [eca_kernel_size(c) for c in (64, 256, 512, 2048)]
    [3, 5, 5, 7]
    """
    check_positive_int("eca_kernel_size", "channels", channels)
    gamma = _check_real("eca_kernel_size", "gamma", gamma, positive=True)
    beta = _check_real("eca_kernel_size", "beta", beta, positive=False)
    # log2, not log(C, 2): exact on powers of two, where (log2 C + b)/γ often lands on an integer
    t = int(abs((math.log2(channels) + beta) / gamma))
    return t if t % 2 else t + 1


@register("eca")
class ECA(nn.Module):
    r"""Efficient Channel Attention: gate each channel by a 1-D convolution over its pooled neighbours.

    Paper: Q. Wang, B. Wu, P. Zhu, P. Li, W. Zuo, Q. Hu, "ECA-Net: Efficient Channel Attention
    for Deep Convolutional Neural Networks", CVPR 2020, arXiv:1910.03151.

    Equations::

        y = GAP(X)                         y_c = 1/(H W) Σ_i Σ_j X_c(i, j)
        ω = σ(C1D_k(y))                    ω_i = σ(Σ_{j=1..k} w^j y_{i+j-1-(k-1)/2}),  y_{<1} = y_{>C} = 0
        X̃ = ω ⊙ X                          X̃_c = ω_c · X_c
        k = ψ(C) = |log2(C)/γ + b/γ|_odd   eq. (12), see :func:`eca_kernel_size`

    Equation numbers as in the CVPR 2020 version (= arXiv 1910.03151 v4), where ω = σ(C1D_k(y))
    is eq. (9); arXiv v1 numbers ψ as eq. (9) instead.

    C1D_k is a 1-D convolution along the channel axis with one kernel w ∈ R^k shared by all
    channels, zero padding (k-1)/2 and no bias: channel i interacts with its k-1 nearest
    neighbours, without dimensionality reduction. σ is the sigmoid.

    Args:
        channels: C, the number of input (and output) channels.
        gamma: γ of the kernel-size mapping ψ (paper: 2).
        beta: b of the kernel-size mapping ψ (paper: 1).
        kernel_size: k, to override ψ(C); must be odd and positive. ``None`` (default) uses
            ``eca_kernel_size(channels, gamma, beta)``.

    Shapes:
        input ``(B, C, H, W)`` → output ``(B, C, H, W)``; any H, W ≥ 1. Parameters: k.

    Differences from the paper and the official code:
        - The paper computes k from C with the snippet above; the official repository
          (BangguWu/ECANet) never computes it, it takes k per stage as an argument, and the
          released ECA-ResNet-50 uses k = (3, 5, 5, 7) for its stages (80 parameters in all, the
          paper's figure). ψ on those stages' widths 256, 512, 1024, 2048 gives (5, 5, 5, 7),
          86 parameters. Our default is ψ(C), the paper's formula; pass ``kernel_size`` to
          reproduce a released model.
        - timm's ``EcaModule`` additionally takes max(k, 3); we do not, so C < 8 gives k = 1
          (a single weight shared by all channels, no cross-channel interaction).
        - We use ``math.log2`` where the paper's snippet uses ``math.log(C, 2)``: log2 is exact on
          powers of two, and the two give the same k for every C below 2^20 (checked).

    The gate ``self.gate`` outputs ω of shape ``(B, C)``; hook it to see the channel weights.
    """

    def __init__(
        self,
        channels: int,
        *,
        gamma: float = 2,
        beta: float = 1,
        kernel_size: int | None = None,
    ) -> None:
        super().__init__()
        name = type(self).__name__
        self.channels = check_channels(self, channels)
        self.gamma = _check_real(name, "gamma", gamma, positive=True)
        self.beta = _check_real(name, "beta", beta, positive=False)
        if kernel_size is None:
            k = eca_kernel_size(channels, self.gamma, self.beta)
        else:
            k = check_positive_int(self, "kernel_size", kernel_size)
            if k % 2 == 0:
                raise ValueError(f"{name} expected kernel_size to be odd (so that padding (k-1)/2 keeps C outputs), got {k}")
        self.kernel_size = k
        self.squeeze = Reduce("b c h w -> b c", "sum")  # Σ_i Σ_j X_c(i, j); forward divides by H W
        self.conv = nn.Conv1d(1, 1, k, padding=(k - 1) // 2, bias=False)  # C1D_k: w ∈ R^k, zero padding
        self.gate = Gate(nn.Sigmoid(), kind="channel")  # σ

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(self, x, self.channels)
        # GAP as a sum / (H W): the same mean, and a backward pass that does not divide a
        # full-size gradient (faster; `make bench` times it against a plain-PyTorch reference)
        y = self.squeeze(x) / (x.shape[2] * x.shape[3])  # y = GAP(X): (B, C)
        z = self.conv(rearrange(y, "b c -> b 1 c"))  # C1D_k(y): channels are the 1-D "length" axis
        w = self.gate(rearrange(z, "b 1 c -> b c"))  # ω = σ(C1D_k(y)): (B, C)
        return x * rearrange(w, "b c -> b c 1 1")  # X̃ = ω ⊙ X

    def extra_repr(self) -> str:
        return f"channels={self.channels}, kernel_size={self.kernel_size}, gamma={self.gamma:g}, beta={self.beta:g}"
