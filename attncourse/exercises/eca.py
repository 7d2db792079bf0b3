"""Checkers for the exercises of the Efficient Channel Attention (ECA) chapter."""

from __future__ import annotations

from typing import Any, Callable

import torch

from ..channel.eca import ECA
from . import Feedback, check_number, compare_tensors, failed, passed, run_answer

__all__ = ["check_kernel_size", "check_resnet101_eca_parameters", "check_band_matrix"]


def _odd(t: float) -> int:
    """The paper's rounding to an odd number: truncate, then bump an even value up."""
    t = int(abs(t))
    return t if t % 2 else t + 1


# Exercise 1 (k = ψ(64) with γ = 1.5, b = 6), typical mistakes: the even value 8 kept, the tie
# broken downwards, b forgotten, γ not divided, b added without dividing it by γ, the paper's
# γ = 2, b = 1 used instead of the exercise's. Each gives a different number here.
def check_kernel_size(answer: Any) -> Feedback:
    """Exercise 1: k = ψ(64) with γ = 1.5 and b = 6 (not the paper's defaults)."""
    log2c, gamma, b = 6.0, 1.5, 6.0
    t = (log2c + b) / gamma                                      # 8, an even integer: a tie
    return check_number(
        answer,
        _odd(t),
        what="k = ψ(64) with γ = 1.5, b = 6",
        hints={
            8: "(log2(64) + 6) / 1.5 = 8 is even: ψ rounds to an odd number, and the paper's code takes t + 1.",
            7: "8 lies halfway between the odd numbers 7 and 9; the paper's code breaks the tie upwards (t + 1).",
            _odd(log2c / gamma): "That forgets b: ψ(C) = log2(C)/γ + b/γ before rounding.",
            _odd(log2c + b): "That is log2(C) + b without dividing by γ.",
            _odd(log2c / gamma + b): "b is divided by γ too: ψ(C) = log2(C)/γ + b/γ, not log2(C)/γ + b.",
            _odd((log2c + 1) / 2): "That uses the paper's γ = 2, b = 1; the exercise sets γ = 1.5 and b = 6.",
        },
    )


_RESNET101_BLOCKS = (3, 4, 23, 3)
_RELEASED_K = (3, 5, 5, 7)


# Exercise 2 (k = (3, 5, 5, 7) in a ResNet-101), typical mistakes: one module per stage, the
# formula's kernels (5, 5, 5, 7), k = 3 everywhere (the repository's default), a bias counted,
# ResNet-50's block counts (the paper's 80), a 2-D k x k kernel, one kernel per channel (ECA-NS).
def check_resnet101_eca_parameters(answer: Any) -> Feedback:
    """Exercise 2: parameters of all ECA modules of a ResNet-101 with k = (3, 5, 5, 7) per stage."""
    blocks, kernels = _RESNET101_BLOCKS, _RELEASED_K
    widths = (256, 512, 1024, 2048)
    return check_number(
        answer,
        sum(n * k for n, k in zip(blocks, kernels)),
        what="Parameters of the ECA modules of a ResNet-101 with k = (3, 5, 5, 7)",
        hints={
            sum(kernels): "That counts one ECA module per stage; every bottleneck has its own (3, 4, 23, 3 per stage).",
            sum(n * k for n, k in zip(blocks, (5, 5, 5, 7))): "That uses k = ψ(C) on the widths 256 ... 2048, "
            "i.e. (5, 5, 5, 7); the exercise sets (3, 5, 5, 7).",
            3 * sum(blocks): "That is k = 3 everywhere (the repository's default); the exercise sets (3, 5, 5, 7).",
            sum(n * (k + 1) for n, k in zip(blocks, kernels)): "The 1-D convolution of ECA has no bias.",
            sum(n * k for n, k in zip((3, 4, 6, 3), kernels)): "That is ResNet-50's count (the paper's 80); "
            "ResNet-101 has 23 blocks in its third stage.",
            sum(n * k * k for n, k in zip(blocks, kernels)): "ECA's kernel is 1-D: k weights, not k x k.",
            sum(n * k * c for n, k, c in zip(blocks, kernels, widths)): "That is k·C per module, a kernel per channel "
            "(the paper's ECA-NS); ECA shares one kernel of k weights across all channels.",
        },
    )


def _band(weight: torch.Tensor, channels: int) -> torch.Tensor:
    k = len(weight)
    p = (k - 1) // 2
    band = torch.zeros(channels, channels, dtype=weight.dtype)
    for i in range(channels):
        for j in range(k):
            if 0 <= i + j - p < channels:
                band[i, i + j - p] = weight[j]
    return band


# Exercise 3, typical mistakes: the kernel flipped (or the matrix transposed), circular padding
# (timm's CECA), the band not centred (W[i, i + j] = w[j], as the paper's eq. (6) in the CVPR 2020 text draws it, which
# is a convolution without padding shifted by p), a diagonal matrix (SE-Var2's shape).
def check_band_matrix(fn: Callable[..., Any]) -> Feedback:
    """Exercise 3: ``fn(w, C)`` returns the C×C matrix W_k with σ(W_k y) = σ(C1D_k(y))."""
    what = "Your band_matrix"
    g = torch.Generator().manual_seed(5)
    for channels, k in [(7, 3), (6, 5), (4, 1)]:
        m = ECA(channels, kernel_size=k).double()
        with torch.no_grad():
            m.conv.weight.copy_(torch.randn(m.conv.weight.shape, generator=g, dtype=torch.float64))
        w = m.conv.weight.detach().view(-1).clone()
        got, fb = run_answer(fn, w.clone(), channels, what=what)
        if fb is not None:
            return fb
        if not isinstance(got, torch.Tensor):
            return failed(f"{what}: expected a torch.Tensor, got {type(got).__name__}")
        expected = _band(w, channels)
        if tuple(got.shape) == (channels, channels) and k > 1:
            got = got.to(torch.float64)
            if torch.allclose(got, expected.T):  # for a band matrix, transposing = flipping the kernel
                return failed(f"{what}: the kernel runs the wrong way (flipped, or the matrix transposed). PyTorch's conv1d "
                              "is a cross-correlation: row i makes ω_i from w[j] · y[i - p + j], so W[i, i - p + j] = w[j].")
            circ = expected.clone()
            p = (k - 1) // 2
            for i in range(channels):
                for j in range(k):
                    c = i + j - p
                    if not 0 <= c < channels:
                        circ[i, c % channels] += w[j]
            if torch.allclose(got, circ):
                return failed(f"{what}: the band wraps around (circular padding, as timm's CECA does); ECA pads with zeros, "
                              "so the first and last rows have fewer than k entries.")
            shifted = torch.zeros_like(expected)
            for i in range(channels):
                for j in range(k):
                    if i + j < channels:
                        shifted[i, i + j] = w[j]
            if torch.allclose(got, shifted):
                return failed(f"{what}: the band is not centred: row i holds w at columns i ... i + k - 1 (as the paper's "
                              "eq. (6), CVPR 2020 numbering, draws W_k). ECA pads with (k - 1)/2 zeros, so row i covers i - p ... i + p: "
                              "W[i, i - p + j] = w[j].")
            if got.abs().sum() > 0 and torch.allclose(got, torch.diag(torch.diagonal(got))):
                return failed(f"{what}: that is a diagonal matrix (SE-Var2's shape, one weight per channel); ECA's band "
                              "has k entries per row, the neighbours i - p ... i + p.")
        bad = compare_tensors(got, expected, what=what)
        if bad is not None:
            return bad
        y = torch.randn(3, channels, generator=g, dtype=torch.float64)
        x = y[..., None, None].expand(3, channels, 2, 3).contiguous()
        torch.testing.assert_close(m(x)[..., 0, 0], y * torch.sigmoid(y @ expected.T))
    return passed(f"{what} is the banded matrix W_k: σ(W_k y) equals ECA's σ(C1D_k(y)).")
