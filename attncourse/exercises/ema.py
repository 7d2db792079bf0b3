"""Checkers for the exercises of the EMA chapter (Part II).

Above each checker, a comment lists the mistakes a learner typically makes on that exercise;
each one gets its own message (``tests/test_checkers_ema.py`` tries every one of them).
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from . import Feedback, check_number, failed, judge_tensor, passed, run_answer

__all__ = ["check_ema_parameters", "check_cross_spatial", "check_map_size"]


def _params(c: int) -> int:
    return 10 * c * c + 4 * c


# Exercise 1, EMA(512) with the default factor G = 32 (c = 16 channels per group).
# Typical mistakes:
#   - the formula with C instead of c (as if the convolutions mixed all C channels)
#   - one set of weights per group (G times the count): the groups share the weights
#   - the 3×3 conv counted as c² (one weight per channel pair, its 9 taps forgotten)
#   - 2c missing: GroupNorm's γ and β, or the two convolutions' biases
#   - both missing (10c²)
#   - GroupNorm counted over C channels (2C instead of 2c)
def check_ema_parameters(answer: Any) -> Feedback:
    """Exercise 1: parameters of EMA(512) with the default factor G = 32."""
    C, G = 512, 32
    c = C // G
    right = _params(c)
    return check_number(
        answer,
        right,
        what="Parameters of EMA(512)",
        hints={
            _params(C): "That uses C = 512 channels in the convolutions; EMA folds the G groups into the batch, "
            "so its convolutions map c = C/G = 16 channels to 16.",
            G * right: "That gives every group its own weights; the groups are folded into the batch axis and share "
            "one 1×1 conv, one 3×3 conv and one GroupNorm.",
            2 * c * c + 4 * c: "The 3×3 convolution has 9 taps per pair of channels: 9c² weights, not c².",
            10 * c * c + 2 * c: "2c are missing: GroupNorm's γ and β (c each) and the two convolutions' biases (c each) "
            "all count.",
            10 * c * c: "Only the weights are counted: add the two convolutions' biases and GroupNorm's γ and β (4c).",
            10 * c * c + 2 * c + 2 * C: "GroupNorm acts on a group's c channels, not on all C: its γ and β add 2c.",
        },
    )


def _gap(t: torch.Tensor) -> torch.Tensor:
    return t.mean(dim=(2, 3))  # (n, c)


def _cross(x1: torch.Tensor, x2: torch.Tensor, *, pool=_gap, norm="softmax", swap=True, sigmoid=False,
           keep=False) -> torch.Tensor:
    def weigh(t):
        p = pool(t)
        return {"softmax": torch.softmax(p, dim=1), "none": p, "sigmoid": torch.sigmoid(p)}[norm]

    a, b = (x2, x1) if swap else (x1, x2)
    m = torch.einsum("nc,nchw->nhw", weigh(x1), a) + torch.einsum("nc,nchw->nhw", weigh(x2), b)
    if sigmoid:
        m = torch.sigmoid(m)
    return m[:, None] if keep else m


def _softmax_positions(x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
    n, c, h, w = x1.shape
    s1 = torch.softmax(x1.reshape(n, c, h * w), dim=2).reshape(n, c, h, w)
    s2 = torch.softmax(x2.reshape(n, c, h * w), dim=2).reshape(n, c, h, w)
    return (s1 * x2).sum(1) + (s2 * x1).sum(1)


# Exercise 2, cross_spatial(x1, x2) = softmax_c(GAP(x1))ᵀ x2 + softmax_c(GAP(x2))ᵀ x1, shape (n, H, W).
# Typical mistakes:
#   - each branch weighted by its own descriptor (s1·x1 + s2·x2): no cross
#   - no softmax (the raw means as weights) / a sigmoid instead of the softmax
#   - the softmax over the positions of each map instead of over the channels of the pooled vector
#   - max pooling (or sums) instead of the global average
#   - σ(m) returned (the gate, not the map) / the channel axis kept, (n, 1, H, W)
def check_cross_spatial(fn: Callable[..., Any]) -> Feedback:
    """Exercise 2: ``fn(x1, x2)`` maps two (n, c, H, W) tensors to the cross-spatial map m of shape (n, H, W)."""
    what = "Your cross_spatial"
    g = torch.Generator().manual_seed(14)
    for shape in [(3, 4, 5, 6), (2, 3, 4, 4)]:
        x1 = torch.randn(shape, generator=g, dtype=torch.float64)
        x2 = torch.randn(shape, generator=g, dtype=torch.float64) + torch.arange(shape[1], dtype=torch.float64)[:, None, None]
        got, fb = run_answer(fn, x1, x2, what=what)
        if fb is not None:
            return fb
        expected = _cross(x1, x2)
        if isinstance(got, torch.Tensor) and tuple(got.shape) == tuple(expected.shape[:1]) + (1,) + tuple(expected.shape[1:]):
            if torch.allclose(got.detach().to(x1.dtype)[:, 0], expected):
                return failed(f"{what}: right numbers, but the shape is (n, 1, H, W); the exercise asks for the map "
                              "as (n, H, W).")
        known = {
            "each branch is weighted by its own descriptor (s1·x1 + s2·x2). The cross is the point: x1's descriptor "
            "weighs x2's channels and x2's weighs x1's": _cross(x1, x2, swap=False),
            "the descriptors are used without the softmax; softmax over the c pooled values turns them into weights "
            "that sum to 1": _cross(x1, x2, norm="none"),
            "a sigmoid replaces the softmax; EMA's channel weights are a softmax over the c pooled values": _cross(
                x1, x2, norm="sigmoid"),
            "the softmax runs over the positions of each map; EMA first averages each channel over H × W (GAP), "
            "then takes the softmax over the c channels": _softmax_positions(x1, x2),
            "the descriptors are maxima; EMA pools with the global average": _cross(x1, x2, pool=lambda t: t.amax(dim=(2, 3))),
            "the descriptors are sums over H × W, not means (the softmax is not scale-free)": _cross(
                x1, x2, pool=lambda t: t.sum(dim=(2, 3))),
            "that is σ(m), the gate; return the map m itself (before the sigmoid)": _cross(x1, x2, sigmoid=True),
        }
        bad = judge_tensor(got, expected, known, what=what)
        if bad is not None:
            return bad
    return passed(f"{what} computes softmax(GAP(x1))ᵀ x2 + softmax(GAP(x2))ᵀ x1, one H × W map per group.")


# Exercise 3, how many numbers the gate σ(m) holds for input (4, 64, 7, 5) with factor G = 8.
# Typical mistakes:
#   - one weight per channel and position, B·C·H·W (as the output): the map is shared by a group's channels
#   - one map per sample, B·H·W: there is one per group
#   - the row and column gates' size, B·C·(H + W)
#   - one weight per group (B·G) or per channel (B·C), as a channel gate
#   - the batch forgotten, G·H·W
def check_map_size(answer: Any) -> Feedback:
    """Exercise 3: numbers in σ(m) for input (4, 64, 7, 5) and EMA(64, factor=8)."""
    B, C, H, W, G = 4, 64, 7, 5, 8
    return check_number(
        answer,
        B * G * H * W,
        what="Numbers in the cross-spatial gate",
        hints={
            B * C * H * W: "That is one weight per channel and position, the output's size; σ(m) is one H × W map per "
            "group, shared by the group's c channels.",
            B * H * W: "That is one map per image; EMA computes one per group, G of them per image.",
            B * C * (H + W): "That is the size of the 1×1 branch's row and column gates σ(a^h) and σ(a^w); the "
            "question asks for the cross-spatial map.",
            B * G: "That is one weight per group; σ(m) is a spatial map, H × W weights per group.",
            B * C: "That is one weight per channel, a channel gate; σ(m) has H × W weights per group.",
            G * H * W: "That is one image; multiply by the batch size.",
        },
    )
