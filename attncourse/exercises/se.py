"""Checkers for the exercises of the Squeeze-and-Excitation chapter."""

from __future__ import annotations

from typing import Any, Callable

import torch

from ..channel.se import SqueezeExcite
from . import Feedback, check_number, compare_tensors, failed, passed, run_answer

__all__ = ["check_se_parameters", "check_resnet50_se_parameters", "check_se_function"]


def _se_params(c: int, r: int, bias: bool = True) -> int:
    h = c // r
    return 2 * c * h + ((h + c) if bias else 0)


def check_se_parameters(answer: Any) -> Feedback:
    """Exercise 1: parameters of SqueezeExcite(256) with r = 16 and biases."""
    c, r = 256, 16
    return check_number(
        answer,
        _se_params(c, r),
        what="Parameters of SE at C = 256, r = 16",
        hints={
            _se_params(c, r, bias=False): "That is W1 and W2 without their biases: add C/r + C.",
            c * c // r: "That counts only one of the two layers (and no biases).",
            2 * c * c: "That forgets the reduction: W1 is (C/r) x C, not C x C.",
            2 * c * c // r + c: "One bias is missing: W1 has C/r biases, W2 has C.",
            2 * c * c // r + c // r: "One bias is missing: W1 has C/r biases, W2 has C.",
        },
    )


def check_resnet50_se_parameters(answer: Any) -> Feedback:
    """Exercise 2: extra parameters of SE in all 16 bottlenecks of ResNet-50 (with biases)."""
    stages = [(256, 3), (512, 4), (1024, 6), (2048, 3)]
    right = sum(n * _se_params(c, 16) for c, n in stages)
    no_bias = sum(n * _se_params(c, 16, bias=False) for c, n in stages)
    inner = sum(n * _se_params(c // 4, 16) for c, n in stages)
    one_each = sum(_se_params(c, 16) for c, _ in stages)
    return check_number(
        answer,
        right,
        what="Extra parameters of SE-ResNet-50",
        hints={
            no_bias: "That is the paper's bias-free formula (2/r) Σ N_s C_s²; the released models keep the biases.",
            inner: "SE acts on the bottleneck's output (its expanded width 4 x 64, 4 x 128, ...), not on the inner 3 x 3 width.",
            one_each: "Every bottleneck has its own SE block: multiply by the number of blocks per stage (3, 4, 6, 3).",
        },
    )


def check_se_function(fn: Callable[..., Any]) -> Feedback:
    """Exercise 3: a functional SE ``fn(u, w1, b1, w2, b2)`` that equals ``SqueezeExcite``."""
    what = "Your se_function"
    g = torch.Generator().manual_seed(3)
    m = SqueezeExcite(12, reduction=3).double()
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64))
    for shape in [(2, 12, 5, 7), (1, 12, 3, 3)]:
        u = torch.randn(shape, generator=g, dtype=torch.float64)
        got, fb = run_answer(fn, u, m.fc1.weight, m.fc1.bias, m.fc2.weight, m.fc2.bias, what=what)
        if fb is not None:
            return fb
        expected = m(u)
        if isinstance(got, torch.Tensor) and got.shape == expected.shape:
            z_max = u.amax((2, 3))
            s_max = torch.sigmoid(torch.relu(z_max @ m.fc1.weight.T + m.fc1.bias) @ m.fc2.weight.T + m.fc2.bias)
            if torch.allclose(got, u * s_max[..., None, None]):
                return failed(f"{what}: you squeezed with a maximum; eq. (2) is the mean over H x W.")
            z = u.mean((2, 3))
            s_nosig = torch.relu(z @ m.fc1.weight.T + m.fc1.bias) @ m.fc2.weight.T + m.fc2.bias
            if torch.allclose(got, u * s_nosig[..., None, None]):
                return failed(f"{what}: the sigmoid σ of eq. (3) is missing, so the weights are not in (0, 1).")
            if torch.allclose(got, torch.sigmoid(torch.relu(z @ m.fc1.weight.T + m.fc1.bias) @ m.fc2.weight.T + m.fc2.bias)[..., None, None].expand_as(u)):
                return failed(f"{what}: you returned the weights s broadcast to the input's shape; eq. (4) multiplies them with u.")
        bad = compare_tensors(got, expected, what=what)
        if bad is not None:
            return bad
    return passed(f"{what} equals SqueezeExcite on random weights and inputs.")
