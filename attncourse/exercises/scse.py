"""Checkers for the exercises of the scSE chapter (concurrent spatial and channel SE)."""

from __future__ import annotations

from typing import Any, Callable

import torch

from ..hybrid.scse import SpatialSE
from . import Feedback, check_number, compare_tensors, failed, passed, run_answer

__all__ = ["check_scse_parameters", "check_sse_function", "check_max_out_value"]


def _scse_params(c: int, r: int) -> int:
    h = c // r
    return 2 * c * h + h + c + c + 1


def check_scse_parameters(answer: Any) -> Feedback:
    """Exercise 1: parameters of scSE at C = 256 with the paper's r = 2."""
    c, r = 256, 2
    h = c // r
    return check_number(
        answer,
        _scse_params(c, r),
        what="Parameters of scSE at C = 256, r = 2",
        hints={
            2 * c * h + h + c: "That is cSE alone: add the sSE branch, a 1×1 conv with C weights and 1 bias.",
            2 * c * h + h + c + c: "The sSE 1×1 convolution has a bias too (+1).",
            2 * c * h + c: "Both W1 and W2 have biases in the paper's code: C/r + C of them, then C + 1 for sSE.",
            2 * c * h + c + 1: "You counted sSE but not the biases of W1 and W2 (C/r + C).",
            2 * c * (c // 16) + c // 16 + c + c + 1: "scSE uses r = 2, not SE's 16.",
            2 * c * c + c + c + c + 1: "W1 is (C/r) x C: the reduction divides the hidden width by r = 2.",
            _scse_params(c, r) + c + 1: "The max-out or sum adds no parameters, and sSE has one 1×1 conv, not two.",
        },
    )


def check_sse_function(fn: Callable[..., Any]) -> Feedback:
    """Exercise 2: a functional sSE ``fn(u, w_sq, b_sq)`` that equals :class:`SpatialSE`.

    ``u`` is ``(B, C, H, W)``, ``w_sq`` is ``(C,)`` and ``b_sq`` is a 0-d tensor.
    """
    what = "Your sse_function"
    g = torch.Generator().manual_seed(5)
    m = SpatialSE(6).double()
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64))
    w, b = m.squeeze.weight[0, :, 0, 0].detach(), m.squeeze.bias[0].detach()
    for shape in [(2, 6, 5, 7), (1, 6, 3, 2)]:
        u = torch.randn(shape, generator=g, dtype=torch.float64)
        got, fb = run_answer(fn, u, w, b, what=what)
        if fb is not None:
            return fb
        with torch.no_grad():
            expected = m(u)
        if isinstance(got, torch.Tensor) and got.shape == expected.shape:
            q = torch.einsum("bchw,c->bhw", u, w)[:, None]
            if torch.allclose(got, u * torch.sigmoid(q)):
                return failed(f"{what}: the bias b_sq of the 1×1 convolution is missing: q = W_sq ⋆ U + b.")
            if torch.allclose(got, u * torch.sigmoid(u.mean(1, keepdim=True))):
                return failed(f"{what}: you averaged over channels; sSE's squeeze is a learned 1×1 conv (weights w_sq), not a mean.")
            if torch.allclose(got, torch.sigmoid(q + b).expand_as(u)):
                return failed(f"{what}: you returned the gate σ(q) broadcast to u's shape; multiply it with u.")
            if torch.allclose(got, u * (q + b)):
                return failed(f"{what}: the sigmoid σ is missing, so the weights are not in (0, 1).")
            soft = torch.softmax((q + b).flatten(2), -1).view_as(q)
            if torch.allclose(got, u * soft):
                return failed(f"{what}: sSE gates each position independently with a sigmoid, not a softmax over positions.")
        if isinstance(got, torch.Tensor) and got.shape == (shape[0], 1, shape[2], shape[3]):
            return failed(f"{what}: the shape is {tuple(got.shape)}, the gate's shape; return u rescaled by it, {tuple(expected.shape)}.")
        bad = compare_tensors(got, expected, what=what)
        if bad is not None:
            return bad
    return passed(f"{what} equals SpatialSE on random weights and inputs.")


def check_max_out_value(answer: Any) -> Feedback:
    """Exercise 3: the max-out output at one element with u = -2, σ(ẑ_c) = 0.2, σ(q) = 0.9."""
    u, s_c, s_s = -2.0, 0.2, 0.9
    return check_number(
        answer,
        max(s_c * u, s_s * u),
        what="Max-out scSE output for u = -2, σ(ẑ_c) = 0.2, σ(q) = 0.9",
        rel=1e-6,
        hints={
            s_s * u: "That takes the larger gate, 0.9. Max-out compares the recalibrated features Û_cSE = -0.4 and Û_sSE = -1.8, not the gates.",
            s_s: "That is the larger gate itself; the block outputs a feature: the gate times u, then the maximum.",
            s_c: "That is a gate, not a feature: multiply it with u first.",
            s_c * u + s_s * u: "That is the MICCAI sum; the question is about max-out.",
            s_c * u * s_s * u: "That is the multiplication aggregation; the question is about max-out.",
        },
    )
