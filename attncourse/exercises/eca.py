"""Checkers for the exercises of the Efficient Channel Attention (ECA) chapter."""

from __future__ import annotations

from typing import Any, Callable

import math

import torch

from ..channel.eca import ECA
from . import Feedback, check_number, compare_tensors, failed, is_unanswered, not_attempted, passed, run_answer

__all__ = ["check_kernel_growth", "check_eca_ns_parameters", "check_band_matrix", "check_kernel_size",
           "check_resnet101_eca_parameters"]


def _odd(t: float) -> int:
    """The paper's rounding to an odd number: truncate, then bump an even value up."""
    t = int(abs(t))
    return t if t % 2 else t + 1


# The former exercise 1 (its answer was the chapter's eca_kernel_size(64, gamma=1.5, beta=6)); kept
# for older copies. Typical mistakes: the even value 8 kept, the tie
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


# The former exercise 2 (the chapter's ResNet-50 count with 23 blocks in the third stage); kept for
# older copies. Typical mistakes: one module per stage, the
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


def _pair(answer: Any) -> tuple[float, float] | None:
    """``answer`` as a pair of floats, or None."""
    if not isinstance(answer, (tuple, list)) or len(answer) != 2:
        return None
    try:
        return float(answer[0]), float(answer[1])
    except (TypeError, ValueError):
        return None


def _close(a: tuple[float, float], b: tuple[float, float]) -> bool:
    """Equal to about four digits, so that 0.6667 for 2/3 counts."""
    return all(math.isclose(x, y, rel_tol=1e-3, abs_tol=1e-3) for x, y in zip(a, b))


# Exercise 1 (γ and b of eq. (12) such that t = (log2 C + b)/γ is exactly 3 at C = 32 and 9 at
# C = 512: γ = 2/3, b = −3), typical mistakes: the pair given as (b, γ); the sign of b flipped
# ((log2 C − b)/γ); t written as γ·log2 C + b (multiplying by γ); b not divided by γ
# (log2 C/γ + b); the natural logarithm; C itself instead of log2 C; the paper's (2, 1) kept.
def check_kernel_growth(answer: Any) -> Feedback:
    """Exercise 1: (γ, b) with (log2 32 + b)/γ = 3 and (log2 512 + b)/γ = 9."""
    what = "(γ, b) for t = 3 at C = 32 and t = 9 at C = 512"
    if is_unanswered(answer):
        return not_attempted(what)
    pair = _pair(answer)
    if pair is None:
        return failed(f"{what}: expected a pair of numbers (gamma, b), got {answer!r}")
    (x1, t1), (x2, t2) = (5.0, 3.0), (9.0, 9.0)                  # log2 32, log2 512 and the targets
    gamma = (x2 - x1) / (t2 - t1)                                # t is linear in log2 C, with slope 1/γ
    right = (gamma, t1 * gamma - x1)
    ln1, ln2 = math.log(32), math.log(512)
    g_ln = (ln2 - ln1) / (t2 - t1)
    g_mul = (t2 - t1) / (x2 - x1)
    g_c = (512 - 32) / (t2 - t1)
    hints = {
        (right[1], right[0]): "that is (b, γ); give the pair in the order (γ, b).",
        (gamma, x1 - t1 * gamma): "the sign of b is flipped: eq. (12) adds b, t = (log2 C + b)/γ.",
        (g_mul, t1 - g_mul * x1): "that solves t = γ·log2 C + b; eq. (12) divides by γ: t = (log2 C + b)/γ, so "
        "each doubling of C adds 1/γ to t.",
        (gamma, t1 - x1 / gamma): "that solves t = log2 C/γ + b; in eq. (12) b is divided by γ too: "
        "t = log2 C/γ + b/γ.",
        (g_ln, t1 * g_ln - ln1): "that uses the natural logarithm; eq. (12) uses log2 (log2 32 = 5, log2 512 = 9).",
        (g_c, t1 * g_c - 32): "that uses C itself; eq. (12) is linear in log2 C, not in C.",
        (2.0, 1.0): "those are the paper's γ = 2, b = 1: they give t = 3 at C = 32 but t = 5 at C = 512, not 9.",
    }
    if _close(pair, right):
        return passed(f"{what}: γ = 2/3, b = −3 is right: t grows by 1/γ = 1.5 per doubling of C, three times as "
                      "fast as the paper's 1/2.")
    for wrong, hint in hints.items():
        if _close(pair, wrong):
            return failed(f"{what}: {answer!r} is not right: {hint}")
    t_32, t_512 = (x1 + pair[1]) / pair[0] if pair[0] else math.inf, (x2 + pair[1]) / pair[0] if pair[0] else math.inf
    return failed(f"{what}: {answer!r} is not right: it gives t = {t_32:.3g} at C = 32 and t = {t_512:.3g} at "
                  "C = 512. Write the two conditions (5 + b)/γ = 3 and (9 + b)/γ = 9 and solve them.")


_RESNET50_BLOCKS = (3, 4, 6, 3)
_WIDTHS = (256, 512, 1024, 2048)


# Exercise 2 (ECA-NS, k weights per channel, with the released kernels (3, 5, 5, 7) in ResNet-50),
# typical mistakes: ECA's shared count (the paper's 80), the formula's kernels (5, 5, 5, 7), one
# module per stage, a bias per channel, the inner 3x3 widths, a 2-D k x k kernel per channel, a
# full C x C matrix (SE-Var3) instead of a band.
def check_eca_ns_parameters(answer: Any) -> Feedback:
    """Exercise 2: parameters of ECA-NS (k weights per channel, not shared) in ResNet-50 with k = (3, 5, 5, 7)."""
    blocks, kernels, widths = _RESNET50_BLOCKS, _RELEASED_K, _WIDTHS
    right = sum(n * k * c for n, k, c in zip(blocks, kernels, widths))
    return check_number(
        answer,
        right,
        what="Parameters of ECA-NS in ResNet-50 with k = (3, 5, 5, 7)",
        hints={
            sum(n * k for n, k in zip(blocks, kernels)): "That is ECA's 80, one kernel shared by all channels; ECA-NS "
            "gives every channel its own k weights: k·C per module.",
            sum(n * k * c for n, k, c in zip(blocks, (5, 5, 5, 7), widths)): "Those are the formula's kernels ψ(C) = "
            "(5, 5, 5, 7); the exercise uses the released (3, 5, 5, 7).",
            sum(k * c for k, c in zip(kernels, widths)): "That counts one module per stage; every bottleneck has its "
            "own (3, 4, 6, 3 per stage).",
            sum(n * (k + 1) * c for n, k, c in zip(blocks, kernels, widths)): "ECA-NS, like ECA, has no bias: k·C, "
            "not (k + 1)·C.",
            sum(n * k * c // 4 for n, k, c in zip(blocks, kernels, widths)): "Those are the inner 3x3 widths "
            "(64 ... 512); ECA sits on the bottleneck's output, 256 ... 2048 channels.",
            sum(n * k * k * c for n, k, c in zip(blocks, kernels, widths)): "The kernel is 1-D over the channels: "
            "k weights per channel, not k x k.",
            sum(n * c * c for n, c in zip(blocks, widths)): "That is a full C x C matrix per module (SE-Var3); ECA-NS "
            "is a band with k entries per row.",
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
# is a convolution without padding shifted by p), the padding taken as 1 for every k (right for
# k = 3 only), a diagonal matrix (SE-Var2's shape). C and k differ in every case.
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
            one = torch.zeros_like(expected)
            for i in range(channels):
                for j in range(k):
                    if 0 <= i + j - 1 < channels:
                        one[i, i + j - 1] = w[j]
            if p != 1 and torch.allclose(got, one):
                return failed(f"{what}: the band is offset by 1 for k = {k}: the padding is p = (k − 1)/2 = {p}, so row i "
                              "covers i − p ... i + p: W[i, i − p + j] = w[j]. (With k = 3, p = 1 happens to be right.)")
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
