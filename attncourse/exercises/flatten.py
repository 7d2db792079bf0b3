"""Checkers for the exercises of the chapter on focused linear attention (FLatten, Part IV).

Above each checker, a comment lists the mistakes a learner typically makes on that exercise;
each one gets its own message (``tests/test_checkers_flatten.py`` tries every one of them).
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from ..linear.flatten import focusing_function
from . import Feedback, check_number, failed, judge_tensor, passed, run_answer

__all__ = ["check_focusing", "check_rank_bound", "check_flatten_swin_parameters"]


# Exercise 1: focusing(x, p) = f_p(x) = ‖x‖ / ‖x^p‖ · x^p along the last axis, for x ≥ 0 (ReLU
# features), with an all-zero row mapped to 0 (not 0/0).
# Typical mistakes:
#   - x^p / ‖x^p‖: the unit vector, ‖x‖ forgotten (the norm is not kept)
#   - x^p alone: the power without the renormalisation
#   - ‖x‖^p in the denominator instead of ‖x^p‖
#   - the norms over the wrong axis (over the rows, dim 0) or over the whole tensor
#   - p · x instead of x ** p (which, renormalised, gives x back)
#   - NaN in the all-zero row (0/0 not guarded)
def check_focusing(fn: Callable[..., Any]) -> Feedback:
    """Exercise 1: ``fn(x, p)`` equals f_p along the last axis, 0 for an all-zero row."""
    what = "Your focusing"
    g = torch.Generator().manual_seed(5)
    for rows, d, p in [(6, 4, 3), (5, 8, 2)]:
        x = torch.rand(rows, d, generator=g, dtype=torch.float64) * 2
        x[1] = 0  # an all-zero ReLU feature
        x[2, 0] = 0
        expected = focusing_function(x, p)
        got, fb = run_answer(fn, x.clone(), p, what=what)
        if fb is not None:
            return fb
        if isinstance(got, torch.Tensor) and got.shape == x.shape:
            g64 = got.detach().to(torch.float64)
            nz = torch.ones(rows, dtype=torch.bool)
            nz[1] = False
            if torch.isnan(g64[1]).any() and torch.allclose(g64[nz], expected[nz]):
                return failed(f"{what}: the all-zero row (a ReLU feature that is zero everywhere) gives NaN: "
                              "‖x‖ / ‖x^p‖ is 0/0 there; guard the denominator with an ε (clamp_min) so that it gives 0.")
        xp = x**p
        norm = x.norm(dim=-1, keepdim=True)
        safe = xp.norm(dim=-1, keepdim=True).clamp_min(1e-300)
        known = {
            "that is x^p / ‖x^p‖, a unit vector; f_p keeps the norm of x: multiply by ‖x‖": xp / safe,
            "that is x^p alone; f_p rescales it to the norm of x: ‖x‖ / ‖x^p‖ · x^p": xp,
            "the denominator is ‖x‖^p; it is ‖x^p‖, the norm of the element-wise power":
                norm / (norm**p).clamp_min(1e-300) * xp,
            "the norms run over the rows (dim 0); each feature vector is a row, take them along the last axis":
                x.norm(dim=0, keepdim=True) / xp.norm(dim=0, keepdim=True) * xp,
            "the norms are taken over the whole tensor; each feature vector (row) keeps its own norm":
                x.norm() / xp.norm() * xp,
            "that is x unchanged: x^{**p} is the element-wise power x ** p, not p · x": x,
        }
        fb = judge_tensor(got, expected, known, what=what, atol=1e-8, rtol=1e-6)
        if fb is not None:
            return fb
    return passed(f"{what} keeps each row's norm, raises it to the power p and maps an all-zero row to 0.")


# Exercise 2: the largest possible rank of the implicit N × N weight matrix of ONE head of linear
# attention (no DWC) in FLatten-Swin-T's first stage: a 56 × 56 window, C = 96, h = 3 heads.
RANK_SIDE, RANK_C, RANK_HEADS = 56, 96, 3


# Typical mistakes:
#   - N = 3,136 (softmax's bound: a full-rank N × N matrix)
#   - C = 96 (the heads split the channels: one head has d = C / h)
#   - d² = 1,024 (the size of the state φ(K)ᵀV, not a rank)
#   - d + 1 (the normaliser is a diagonal scaling: it adds no rank)
#   - 56 (the side of the window)
def check_rank_bound(answer: Any) -> Feedback:
    """Exercise 2: max rank of one head's implicit weights, 56×56 window, C = 96, 3 heads."""
    n, c, h = RANK_SIDE * RANK_SIDE, RANK_C, RANK_HEADS
    d = c // h
    return check_number(
        answer,
        d,
        what="The largest rank",
        hints={
            n: "N = 3,136 is the bound of an N × N matrix in general (softmax's weights can reach it); linear "
            "attention's weights are a product φ(Q) φ(K)ᵀ through d features.",
            c: "One head sees only its d = C / h channels: the product φ(Q) φ(K)ᵀ of one head goes through d = 32 "
            "features, not C = 96.",
            d * d: "d² = 1,024 is the size of the state φ(K)ᵀ V (d × d), not the rank of the N × N weights.",
            d + 1: "The normaliser divides each row by a number: a diagonal matrix times φ(Q) φ(K)ᵀ, which adds no rank.",
            RANK_SIDE: "56 is the side of the window; the rank is bounded by the width of the features.",
        },
    )


# Exercise 3: the parameters of the official FocusedLinearAttention in FLatten-Swin-T's first stage:
# C = 96, 3 heads, a 56 × 56 window, DWC k = 5 (with bias, shared across heads), qkv with bias, proj
# with bias, the learnable scale (C) and the positional encoding (window × C).
SWIN_C, SWIN_HEADS, SWIN_WINDOW, SWIN_K = 96, 3, 56, 5


def _swin_parts() -> dict[str, int]:
    c, d, n, k = SWIN_C, SWIN_C // SWIN_HEADS, SWIN_WINDOW * SWIN_WINDOW, SWIN_K
    return {"proj": 4 * c * c + 4 * c, "dwc": d * k * k + d, "scale": c, "pos": n * c}


# Typical mistakes:
#   - the positional encoding forgotten / the scale forgotten / the DWC forgotten
#   - the DWC per channel of C (or once per head): C·k² + C instead of d·k² + d
#   - the DWC without its bias
#   - no biases in the projections (4C² instead of 4C² + 4C)
#   - only the paper's module (no scale, no positional encoding)
def check_flatten_swin_parameters(answer: Any) -> Feedback:
    """Exercise 3: parameters of the official module in FLatten-Swin-T's stage 1."""
    p = _swin_parts()
    c, k = SWIN_C, SWIN_K
    right = sum(p.values())
    return check_number(
        answer,
        right,
        what="The parameter count",
        hints={
            right - p["pos"]: "The positional encoding is missing: one learnable C-vector per position of the "
            "56 × 56 window, 3,136 × 96 numbers.",
            right - p["scale"]: "The learnable scale is missing: one number per channel (C of them), through softplus.",
            right - p["dwc"]: "The depthwise convolution on V is missing (d·k² weights and d biases).",
            right - p["dwc"] + c * k * k + c: "The DWC has d = C / h channels, shared by the heads (Conv2d(d, d, k, "
            "groups=d) on the values of every head), not C channels.",
            right - SWIN_C // SWIN_HEADS: "The DWC's bias is missing: nn.Conv2d has one by default (d numbers).",
            right - 4 * c: "The projections have biases (qkv_bias=True, and W^O is an nn.Linear): 4C more.",
            right - p["pos"] - p["scale"]: "That is the paper's module; the official code adds the learnable scale "
            "(C) and the positional encoding (3,136 × C).",
        },
    )
