"""Checkers for the exercises of the Efficient Channel Attention (ECA) chapter."""

from __future__ import annotations

from typing import Any, Callable

import torch

from ..channel.eca import ECA
from . import Feedback, check_number, compare_tensors, failed, passed, run_answer

__all__ = ["check_kernel_size_128", "check_resnet50_eca_parameters", "check_band_matrix"]


def check_kernel_size_128(answer: Any) -> Feedback:
    """Exercise 1: k = ψ(128) with γ = 2, b = 1."""
    return check_number(
        answer,
        5,
        what="k = ψ(128)",
        hints={
            4: "(log2(128) + 1) / 2 = 4 is even: ψ rounds to an odd number, and the paper's code takes t + 1.",
            3: "4 lies halfway between the odd numbers 3 and 5; the paper's code breaks the tie upwards (t + 1).",
            3.5: "That is log2(C)/γ alone: add b/γ = 1/2 before rounding to an odd number.",
            7: "That is log2(128) = 7 without dividing by γ = 2 (and without adding b).",
            8: "That is log2(128) + b without dividing by γ = 2.",
        },
    )


def check_resnet50_eca_parameters(answer: Any) -> Feedback:
    """Exercise 2: parameters of all ECA modules of the released ECA-ResNet-50, k = (3, 5, 5, 7)."""
    blocks, kernels = (3, 4, 6, 3), (3, 5, 5, 7)
    return check_number(
        answer,
        sum(n * k for n, k in zip(blocks, kernels)),
        what="Parameters of the ECA modules of ECA-ResNet-50",
        hints={
            sum(kernels): "That counts one ECA module per stage; every bottleneck has its own (3, 4, 6, 3 per stage).",
            86: "That uses k = ψ(C) on the widths 256 ... 2048, i.e. (5, 5, 5, 7); the released model uses (3, 5, 5, 7).",
            16 * 3: "That is k = 3 everywhere (the repository's default); the released model uses (3, 5, 5, 7).",
            sum(n * (k + 1) for n, k in zip(blocks, kernels)): "The 1-D convolution of ECA has no bias.",
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
        bad = compare_tensors(got, expected, what=what)
        if bad is not None:
            return bad
        y = torch.randn(3, channels, generator=g, dtype=torch.float64)
        x = y[..., None, None].expand(3, channels, 2, 3).contiguous()
        torch.testing.assert_close(m(x)[..., 0, 0], y * torch.sigmoid(y @ expected.T))
    return passed(f"{what} is the banded matrix W_k: σ(W_k y) equals ECA's σ(C1D_k(y)).")
