"""SimAM, a parameter-free 3-D attention (Yang et al., ICML 2021). Chapter: ``chapters/channel/simam.md``."""

from __future__ import annotations

import math
import numbers

import torch
from einops import reduce
from torch import nn

from .._checks import check_channels, check_input
from .._registry import register
from ..layers import Gate

__all__ = ["SimAM"]


@register("simam")
class SimAM(nn.Module):
    r"""SimAM: weight every neuron by how much it stands out from the rest of its channel.

    Paper: L. Yang, R.-Y. Zhang, L. Li, X. Xie, "SimAM: A Simple, Parameter-Free Attention
    Module for Convolutional Neural Networks", ICML 2021 (PMLR 139, pp. 11863-11874).
    Official code: github.com/ZjjConan/SimAM (``simam_module``).

    Equations. For a target neuron t of a channel and the M − 1 other neurons x_i of the same
    channel (M = H·W), with binary labels (t → 1, others → −1)::

        (2) e_t(w_t, b_t) = 1/(M−1) Σ_i (−1 − (w_t x_i + b_t))² + (1 − (w_t t + b_t))² + λ w_t²
        (5) e_t* = 4(σ̂² + λ) / ((t − μ̂)² + 2σ̂² + 2λ)            the minimum over (w_t, b_t)
        (6) X̃ = sigmoid(1/E) ⊙ X,   1/e_t* = (t − μ̂)² / (4(σ̂² + λ)) + 1/2

    Equation numbers as the official README gives them ("λ in Eqn (5)" of the minimal energy),
    not checked against the ICML text itself; (3) and (4) are then the closed forms of w_t, b_t.

    The minimum of (2) uses the mean and variance of the M − 1 *other* neurons; eq. (5) and
    the official code replace them by statistics of the whole channel, which are the same for
    every neuron. As in the official code, μ̂ is the mean over all M neurons and
    σ̂² = Σ_all (x − μ̂)² / n with n = M − 1 (the unbiased variance over the channel). The
    chapter derives how far this is from the exact minimum of (2): a relative difference of
    order 1/M.

    Args:
        channels: C, the number of input (and output) channels. SimAM has no parameters;
            the count is used to check the input, like every module of the package.
        e_lambda: λ, the regulariser λ w_t² of the energy (2). Official module default
            ``1e-4`` (also used for the released CIFAR checkpoint); the README's ImageNet commands
            pass ``0.1``, and the released ImageNet logs sit in folders named
            ``imagenet-<net>-simam-param0.1``. Must be a finite number > 0 (see below).

    Shapes:
        input ``(B, C, H, W)`` → output ``(B, C, H, W)``; any H, W ≥ 1.

    Differences from the official code:

    - H·W = 1: the official code divides by n = H·W − 1 = 0 and returns NaN. Here n is
      ``max(H·W − 1, 1)``. With one neuron the deviation t − μ̂ and the sum of squares are
      exactly 0, so 1/e_t* = 1/2, the value every neuron gets that equals its channel mean
      (as in a constant channel of any size): the output is sigmoid(1/2)·x.
    - λ ≤ 0 is refused. With λ = 0 a constant channel (a dead ReLU channel, a 1×1 map) makes
      the formula 0/0, and the energy (2) no longer has a unique minimiser there.

    Placement: the official ResNets put SimAM right after the 3×3 convolution ``conv2`` and
    before ``bn2`` (both BasicBlock and Bottleneck), not after the last batch norm as SE.

    The gate ``self.gate`` outputs sigmoid(1/E) of shape ``(B, C, H, W)`` (``kind="neuron"``);
    its values lie in [sigmoid(1/2), 1) ≈ [0.62, 1).
    """

    def __init__(self, channels: int, *, e_lambda: float = 1e-4) -> None:
        super().__init__()
        self.channels = check_channels(self, channels)
        if (
            isinstance(e_lambda, bool)
            or not isinstance(e_lambda, numbers.Real)
            or not math.isfinite(e_lambda)
            or e_lambda <= 0
        ):
            raise ValueError(f"SimAM expected e_lambda (λ) to be a finite number > 0, got {e_lambda!r}")
        self.e_lambda = float(e_lambda)
        self.gate = Gate(nn.Sigmoid(), kind="neuron")  # sigmoid of eq. (6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(self, x, self.channels)
        n = max(x.shape[2] * x.shape[3] - 1, 1)  # M − 1 (1 when M = 1, where the sum below is 0)
        # μ̂ as a sum / M and 1/e* with one division per channel (times 1/(4(σ̂² + λ))): the same
        # numbers as the mean and d / (4(σ̂² + λ)), without full-size divisions forward or backward
        mu = reduce(x, "b c h w -> b c 1 1", "sum") / (x.shape[2] * x.shape[3])  # μ̂: channel mean over all M neurons
        d = (x - mu).square()  # (t − μ̂)² for every neuron t
        var = reduce(d, "b c h w -> b c 1 1", "sum") / n  # σ̂² = Σ (x − μ̂)² / (M − 1)
        inv_energy = d * (0.25 / (var + self.e_lambda)) + 0.5  # 1/e_t* of eq. (5)
        return x * self.gate(inv_energy)  # (6): X̃ = sigmoid(1/E) ⊙ X

    def extra_repr(self) -> str:
        return f"channels={self.channels}, e_lambda={self.e_lambda:g}"
