"""Checkers for the exercises of the EMA chapter (Part II).

Above each checker, a comment lists the mistakes a learner typically makes on that exercise;
each one gets its own message (``tests/test_checkers_ema.py`` tries every one of them).
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from einops import rearrange

from . import Feedback, check_number, failed, judge_tensor, passed, run_answer

__all__ = ["check_ema_parameters", "check_cross_spatial", "check_input_dependent"]


def _depthwise(c: int, *, one_by_one: int | None = None, taps: int = 9, dw_bias: int = 1, filters: int | None = None,
               gn: int | None = None) -> int:
    """Parameters of EMA with a depthwise 3×3 convolution: 1×1 conv (c² + c), depthwise conv (taps weights per
    channel, or ``filters`` weights in all, plus ``dw_bias`` per channel), GroupNorm's γ, β (2c)."""
    one = c * c + c if one_by_one is None else one_by_one
    dw = (taps * c if filters is None else filters) + dw_bias * c
    return one + dw + (2 * c if gn is None else gn)


# Exercise 1, EMA(512) (G = 32, c = 16) with its 3×3 convolution made depthwise (groups=c, with a bias):
# (c² + c) + (9c + c) + 2c = 464.
# Typical mistakes:
#   - the module's own count, 10c² + 4c: the 3×3 convolution counted as dense (9c² weights)
#   - the 1×1 convolution made depthwise too (c weights instead of c²)
#   - the depthwise convolution's bias forgotten
#   - one 3×3 filter shared by all channels (9 weights) instead of one per channel (9c)
#   - the 3×3 taps forgotten (one weight per channel)
#   - C instead of c (as if the convolutions mixed all C channels)
#   - one set of weights per group (G times the count): the groups share the weights
#   - GroupNorm's γ and β forgotten, or counted over all C channels
def check_ema_parameters(answer: Any) -> Feedback:
    """Exercise 1: parameters of EMA(512), G = 32, with a depthwise 3×3 convolution."""
    C, G = 512, 32
    c = C // G
    right = _depthwise(c)
    return check_number(
        answer,
        right,
        what="Parameters of EMA(512) with a depthwise 3×3 convolution",
        hints={
            10 * c * c + 4 * c: "That is EMA(512) itself, with the dense 3×3 convolution (9c² weights). Depthwise, "
            "each channel has its own 3×3 filter over that channel alone: 9c weights.",
            _depthwise(c, one_by_one=2 * c): "Only the 3×3 convolution is depthwise; the 1×1 convolution still maps "
            "c channels to c: c² weights and c biases.",
            _depthwise(c, dw_bias=0): "The depthwise convolution has a bias too, one per channel (c).",
            _depthwise(c, filters=9): "Depthwise means one 3×3 filter per channel (9c weights), not one filter "
            "shared by all channels.",
            _depthwise(c, taps=1): "Each depthwise filter is 3×3: 9 weights per channel, not 1.",
            _depthwise(C): "That uses C = 512 channels in the convolutions; EMA folds the G groups into the batch, "
            "so its convolutions see c = C/G = 16 channels.",
            G * right: "That gives every group its own weights; the groups are folded into the batch axis and share "
            "one 1×1 conv, one 3×3 conv and one GroupNorm.",
            _depthwise(c, gn=0): "GroupNorm's γ and β (c each) are missing.",
            _depthwise(c, gn=2 * C): "GroupNorm acts on a group's c channels, not on all C: its γ and β add 2c.",
        },
    )


def _cross(x1: torch.Tensor, x2: torch.Tensor, groups: int, *, layout: str = "(g c)", pool="mean", norm="softmax",
           over: str = "group", swap: bool = True, sigmoid: bool = False) -> torch.Tensor:
    """The cross-spatial map of every group, (B, G, H, W), right or with one mistake."""
    a1 = rearrange(x1, f"b {layout} h w -> b g c h w", g=groups)
    a2 = rearrange(x2, f"b {layout} h w -> b g c h w", g=groups)
    b, g, c, h, w = a1.shape

    def weigh(t):
        if norm == "positions":  # a softmax over each channel's H × W positions
            return torch.softmax(t.reshape(b, g, c, h * w), -1).reshape(t.shape)
        p = {"mean": lambda: t.mean((3, 4)), "max": lambda: t.amax((3, 4)), "sum": lambda: t.sum((3, 4))}[pool]()
        if norm == "softmax":
            p = torch.softmax(p.reshape(b, g * c), -1).reshape(b, g, c) if over == "all" else torch.softmax(p, -1)
        elif norm == "sigmoid":
            p = torch.sigmoid(p)
        return p[..., None, None]

    u, v = (a2, a1) if swap else (a1, a2)
    m = (weigh(a1) * u).sum(2) + (weigh(a2) * v).sum(2)
    return torch.sigmoid(m) if sigmoid else m


# Exercise 2, cross_spatial_grouped(x1, x2, groups): the branches as (B, C, H, W), groups not folded; return
# m = softmax_c(GAP(x1))ᵀ x2 + softmax_c(GAP(x2))ᵀ x1 for every group, shape (B, G, H, W).
# Typical mistakes:
#   - the softmax over all C channels of an image instead of over each group's c channels
#   - the groups taken as every G-th channel, "b (c g)", instead of consecutive channels, "b (g c)"
#   - the groups left folded in the batch axis: (B·G, H, W)
#   - one map per image (no groups at all, G = 1): (B, H, W)
#   - each branch weighted by its own descriptor (s1·x1 + s2·x2): no cross
#   - no softmax (the raw means as weights) / a sigmoid instead of the softmax
#   - the softmax over the positions of each map instead of over the channels of the pooled vector
#   - max pooling (or sums) instead of the global average
#   - σ(m) returned (the gate, not the map)
def check_cross_spatial(fn: Callable[..., Any]) -> Feedback:
    """Exercise 2: ``fn(x1, x2, groups)`` maps two (B, C, H, W) tensors to the maps m of every group, (B, G, H, W)."""
    what = "Your cross_spatial_grouped"
    g = torch.Generator().manual_seed(14)
    # (B, C, H, W, G): no two of B, C, H, W, G and c = C/G equal
    for B, C, H, W, G in [(5, 12, 6, 7, 4), (3, 10, 4, 7, 2)]:
        x1 = torch.randn(B, C, H, W, generator=g, dtype=torch.float64)
        x2 = torch.randn(B, C, H, W, generator=g, dtype=torch.float64) + torch.arange(C, dtype=torch.float64)[:, None, None] / 2
        got, fb = run_answer(fn, x1.clone(), x2.clone(), G, what=what)
        if fb is not None:
            return fb
        expected = _cross(x1, x2, G)
        if isinstance(got, torch.Tensor) and tuple(got.shape) == (B * G, H, W) and torch.allclose(
                got.detach().to(x1.dtype), rearrange(expected, "b g h w -> (b g) h w")):
            return failed(f"{what}: right numbers, but the groups are still folded into the batch axis, "
                          f"({B * G}, H, W); unfold them: rearrange(m, '(b g) h w -> b g h w', g=groups).")
        known = {
            "one map per image: the softmax and the sums run over all C channels (as if G = 1); EMA computes one "
            "map per group, from that group's c channels": _cross(x1, x2, 1)[:, 0],
            "the softmax runs over all C channels of the image; EMA's softmax runs over each group's c = C/G "
            "channels, so each group's weights sum to 1": _cross(x1, x2, G, over="all"),
            "the groups are every G-th channel ('b (c g)'); EMA's groups are consecutive channels, 'b (g c) h w' "
            "(the official reshape(b * G, -1, h, w))": _cross(x1, x2, G, layout="(c g)"),
            "each branch is weighted by its own descriptor (s1·x1 + s2·x2). The cross is the point: x1's descriptor "
            "weighs x2's channels and x2's weighs x1's": _cross(x1, x2, G, swap=False),
            "the descriptors are used without the softmax; a softmax over the c pooled values turns them into "
            "weights that sum to 1": _cross(x1, x2, G, norm="none"),
            "a sigmoid replaces the softmax; EMA's channel weights are a softmax over the c pooled values":
                _cross(x1, x2, G, norm="sigmoid"),
            "the softmax runs over the positions of each map; EMA first averages each channel over H × W (GAP), "
            "then takes the softmax over the c channels": _cross(x1, x2, G, norm="positions"),
            "the descriptors are maxima; EMA pools with the global average": _cross(x1, x2, G, pool="max"),
            "the descriptors are sums over H × W, not means (the softmax is not scale-free)":
                _cross(x1, x2, G, pool="sum"),
            "that is σ(m), the gate; return the map m itself (before the sigmoid)": _cross(x1, x2, G, sigmoid=True),
        }
        bad = judge_tensor(got, expected, known, what=what)
        if bad is not None:
            return bad
    return passed(f"{what} computes softmax(GAP(x1))ᵀ x2 + softmax(GAP(x2))ᵀ x1 within each group: one H × W map "
                  "per group.")


# Exercise 3, for EMA(48, factor=4) on a batch (5, 48, 7, 6): how many numbers of s1 and s2 together change with
# the input. s1 = softmax(β) is the same for every image and group (GroupNorm(c, c) fixes each channel's mean of
# x1 at β_k); s2 depends on the image: B·G·c = 240.
# Typical mistakes:
#   - s1 counted too (2·B·G·c): s1 = softmax(β), a learned constant
#   - none: s2 comes from the 3×3 branch, whose means depend on the image
#   - one image's count (G·c = C) / one image's count of both descriptors
#   - one number per group (B·G) or two (2·B·G), as if each descriptor were one number
#   - one group's descriptor only (c)
#   - the size of the gate σ(m), B·G·H·W, or of the output, B·C·H·W
def check_input_dependent(answer: Any) -> Feedback:
    """Exercise 3: numbers of s1 and s2 that depend on the input, EMA(48, factor=4), batch (5, 48, 7, 6)."""
    B, C, H, W, G = 5, 48, 7, 6, 4
    c = C // G
    return check_number(
        answer,
        B * G * c,
        what="Input-dependent numbers in s1 and s2",
        hints={
            2 * B * G * c: "That counts s1 too. GroupNorm(c, c) makes every channel of x1 average exactly β_k over "
            "its H × W values, so s1 = softmax(β) is the same learned vector for every image and group.",
            0: "s1 is fixed (softmax(β)), but s2 is the softmax of the 3×3 branch's channel means, which change "
            "with the image.",
            G * c: "That is one image (G · c = C numbers of s2); the batch has 5.",
            2 * G * c: "That is one image's s1 and s2; s1 does not depend on the input, and the batch has 5 images.",
            B * G: "That is one number per image and group; s2 holds c = C/G numbers for each.",
            2 * B * G: "That is one number per descriptor, image and group; each descriptor holds c = C/G numbers.",
            c: "That is one group's s2 in one image; count every image and group.",
            B * G * H * W: "That is the size of the gate σ(m), one H × W map per image and group; the question is "
            "about the descriptors s1 and s2.",
            B * C * H * W: "That is the size of the output; the question is about the descriptors s1 and s2.",
        },
    )
