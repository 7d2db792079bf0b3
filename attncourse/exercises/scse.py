"""Checkers for the exercises of the scSE chapter (concurrent spatial and channel SE).

Above each checker, a comment lists the mistakes a learner typically makes on that exercise;
each one gets its own message (``tests/test_checkers_hybrid.py`` tries every one of them).
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from einops import einsum, rearrange

from . import Feedback, check_number, compare_tensors, failed, match_mistake, passed, run_answer

__all__ = ["check_concat_parameters", "check_grouped_sse", "check_max_out_value"]


def _scse_params(c: int, r: int, *, mlp_bias: bool = True, sse: bool = True, sse_bias: bool = True) -> int:
    h = c // r
    return 2 * c * h + ((h + c) if mlp_bias else 0) + ((c + (1 if sse_bias else 0)) if sse else 0)


# Exercise 1, scSE at C = 256, r = 2, with the journal's concatenation aggregation followed by a
# 1×1 convolution from 2C back to C channels (with a bias), so that the block keeps C channels.
# The chapter's scse_parameters counts the sum/max/product module, which has no projection.
# Typical mistakes:
#   - no projection: the sum/max/product count (scse_parameters(256))
#   - the projection's bias forgotten / the projection read from C channels instead of 2C /
#     mapped to 2C channels instead of C / counted as one weight per input channel (2C)
#   - cSE and the projection only (the sSE branch forgotten) / the sSE convolution's bias forgotten
#   - SE's usual r = 16 instead of scSE's r = 2 / no reduction at all
#   - the biases forgotten everywhere / only the biases of W1 and W2 forgotten
def check_concat_parameters(answer: Any) -> Feedback:
    """Exercise 1: parameters of scSE at C = 256, r = 2, with concatenation and a 2C → C 1×1 projection."""
    c, r = 256, 2
    base = _scse_params(c, r)
    proj = 2 * c * c + c
    right = base + proj
    return check_number(
        answer,
        right,
        what="Parameters of scSE at C = 256, r = 2, concatenation + a 2C → C projection",
        hints={
            base: "That is scSE with the sum, the maximum or the product (the chapter's scse_parameters(256)), which "
            "add no parameters; the concatenation has 2C channels, and the 1×1 convolution back to C adds "
            "2C·C weights and C biases.",
            base + 2 * c * c: "The projection's bias is missing: one per output channel, C = 256.",
            base + c * c + c: "The projection reads the concatenation, 2C = 512 channels, not C: 2C·C weights.",
            base + 4 * c * c + 2 * c: "The projection maps back to C channels, not 2C: 2C·C weights and C biases.",
            base + 2 * c + c: "A 1×1 convolution from 2C to C channels has a weight for every pair of input and output "
            "channels: 2C·C, not one per input channel.",
            _scse_params(c, r, sse=False) + proj: "The sSE branch is missing: its 1×1 convolution C → 1 has C weights "
            "and 1 bias.",
            _scse_params(c, r, sse_bias=False) + proj: "The sSE 1×1 convolution has a bias too (+1).",
            _scse_params(c, 16) + proj: "scSE's cSE uses r = 2, not SE's 16.",
            _scse_params(c, 1) + proj: "W1 is (C/r) × C: the reduction divides the hidden width by r = 2.",
            _scse_params(c, r, mlp_bias=False, sse_bias=False) + 2 * c * c: "No biases at all: W1 has C/r, W2 has C, "
            "the sSE convolution 1 and the projection C.",
            _scse_params(c, r, mlp_bias=False) + proj: "The biases of W1 and W2 are missing: C/r + C.",
        },
    )


def _grouped(u: torch.Tensor, w: torch.Tensor, b: torch.Tensor, groups: int, how: str = "right") -> torch.Tensor:
    """Grouped sSE with one mistake: each block of C/G consecutive channels gets its own spatial gate."""
    split = "b (k g) h w -> b g k h w" if how == "interleaved" else "b (g k) h w -> b g k h w"
    uu = rearrange(u, split, g=groups)
    ww = rearrange(w, "(k g) -> g k" if how == "interleaved" else "(g k) -> g k", g=groups)
    bb = rearrange(b, "g -> 1 g 1 1")
    if how == "all channels":                                 # the sum runs over all C channels
        q = einsum(u, w, "b c h w, c -> b h w")[:, None] + bb
    elif how == "mean":                                       # a mean per group instead of the weighted sum
        q = uu.mean(2) + bb
    else:
        q = einsum(uu, ww, "b g k h w, g k -> b g h w") + (0 if how == "no bias" else bb)
    if how == "per channel":                                  # the weighted channels not summed
        gate = torch.sigmoid(uu * ww[None, :, :, None, None] + bb[:, :, None])
    elif how == "bias after":
        gate = (torch.sigmoid(q) + bb)[:, :, None]
    elif how == "no sigmoid":
        gate = q[:, :, None]
    elif how == "softmax":
        gate = torch.softmax(q.flatten(2), -1).view_as(q)[:, :, None]
    else:
        gate = torch.sigmoid(q)[:, :, None]
    if how == "gate":
        return rearrange(gate.expand_as(uu), "b g k h w -> b (g k) h w")
    back = "b g k h w -> b (k g) h w" if how == "interleaved" else "b g k h w -> b (g k) h w"
    return rearrange(uu * gate, back)


# Exercise 2, grouped_sse(u, w, b, groups): sSE with G groups of C/G consecutive channels, each with
# its own spatial gate σ(q_g), q_g(i, j) = Σ_{k in group g} w_k u_k(i, j) + b_g. With G = 1 it is
# SpatialSE. No cell of the chapter computes it. The tests use sizes that cannot stand for one
# another (B, C, G, C/G, H, W all different).
# Typical mistakes:
#   - the groups interleaved ("(k g)": channels g, g + G, ...) instead of consecutive blocks
#   - the sum over all C channels (plain sSE's q) with the groups' biases
#   - a mean per group instead of the learned weighted sum
#   - the weighted channels not summed (a gate per channel)
#   - the bias b_g forgotten / added after the sigmoid
#   - the sigmoid forgotten / a softmax over positions instead of the sigmoid
#   - the gates returned (B, G, H, W), or broadcast to u's shape, instead of u rescaled by them
#   - the group axis not merged back: (B, G, C/G, H, W)
def check_grouped_sse(fn: Callable[..., Any]) -> Feedback:
    """Exercise 2: ``fn(u, w, b, groups)``, u (B, C, H, W), w (C,), b (G,), returns u rescaled per group."""
    what = "Your grouped_sse"
    gen = torch.Generator().manual_seed(5)
    for shape, groups in [((5, 12, 6, 7), 3), ((3, 10, 7, 4), 5)]:
        B, C, H, W = shape
        u = torch.randn(shape, generator=gen, dtype=torch.float64)
        w = torch.randn(C, generator=gen, dtype=torch.float64)
        b = torch.randn(groups, generator=gen, dtype=torch.float64)
        got, fb = run_answer(fn, u.clone(), w.clone(), b.clone(), groups, what=what)
        if fb is not None:
            return fb
        expected = _grouped(u, w, b, groups)
        if isinstance(got, torch.Tensor):
            got = got.detach().to(torch.float64)
            if tuple(got.shape) in {(B, groups, H, W), (B, groups, 1, H, W)}:
                return failed(f"{what}: the shape is {tuple(got.shape)}, one gate per group; return u rescaled by "
                              f"its group's gate, of u's shape {tuple(u.shape)}.")
            if tuple(got.shape) == (B, groups, C // groups, H, W):
                return failed(f"{what}: the shape is (B, G, C/G, H, W) = {tuple(got.shape)}: merge the group axis "
                              "back into the channels, 'b g k h w -> b (g k) h w'.")
            if got.shape == expected.shape:
                known = {
                    "the groups are interleaved (channels g, g + G, g + 2G, ...); a group is a block of C/G "
                    "consecutive channels: split the channels as '(g k)', not '(k g)'":
                        _grouped(u, w, b, groups, "interleaved"),
                    "each gate sums over all C channels (plain sSE's q) and differs only by its bias; group g sums "
                    "only its own C/G channels": _grouped(u, w, b, groups, "all channels"),
                    "you averaged the channels of each group; the squeeze is the learned weighted sum Σ_k w_k u_k "
                    "over the group": _grouped(u, w, b, groups, "mean"),
                    "the weighted channels are not summed: q_g(i, j) is one number per group and position, shared "
                    "by the group's channels": _grouped(u, w, b, groups, "per channel"),
                    "the bias b_g is missing: q_g = Σ_k w_k u_k + b_g": _grouped(u, w, b, groups, "no bias"),
                    "the bias b_g is added after the sigmoid; it belongs inside, q_g = Σ_k w_k u_k + b_g":
                        _grouped(u, w, b, groups, "bias after"),
                    "the sigmoid σ is missing, so the gates are not in (0, 1)": _grouped(u, w, b, groups, "no sigmoid"),
                    "the gates are a softmax over the positions; sSE gates each position independently with a "
                    "sigmoid": _grouped(u, w, b, groups, "softmax"),
                    "you returned the gates broadcast to u's shape; multiply them with u":
                        _grouped(u, w, b, groups, "gate"),
                }
                fb = match_mistake(got, known, what=what, expected=expected, end=".")
                if fb is not None:
                    return fb
        bad = compare_tensors(got, expected, what=what)
        if bad is not None:
            return bad
    return passed(f"{what} gives each block of C/G channels its own spatial gate σ(Σ_k w_k u_k + b_g).")


# Exercise 3, the max-out output at one element with u = -2, σ(ẑ_k) = 0.2, σ(q) = 0.9.
# Typical mistakes:
#   - the larger gate times u (-1.8): comparing the gates instead of the features (or the minimum of
#     the two features)
#   - a gate returned instead of a feature (0.9 or 0.2) / the two gates multiplied (0.18)
#   - the MICCAI sum (-2.2) or the multiplication aggregation (0.72)
#   - both gates applied one after the other, (0.2 · 0.9) · u (-0.36)
#   - the sign lost (0.4)
#   - the input itself (-2), as if the gates were 1
def check_max_out_value(answer: Any) -> Feedback:
    """Exercise 3: the max-out output at one element with u = -2, σ(ẑ_k) = 0.2, σ(q) = 0.9."""
    u, s_c, s_s = -2.0, 0.2, 0.9
    return check_number(
        answer,
        max(s_c * u, s_s * u),
        what="Max-out scSE output for u = -2, σ(ẑ_k) = 0.2, σ(q) = 0.9",
        rel=1e-6,
        hints={
            s_s * u: "That takes the larger gate, 0.9 (or the smaller of the two features). Max-out compares the "
            "recalibrated features Û_cSE and Û_sSE (each a gate times u) and keeps the larger feature.",
            s_s: "That is the larger gate itself; the block outputs a feature: the gate times u, then the maximum.",
            s_c: "That is a gate, not a feature: multiply it with u first.",
            s_c * s_s: "That multiplies the two gates; the block outputs a feature: each gate times u, then the "
            "maximum of the two.",
            s_c * u + s_s * u: "That is the MICCAI sum; the question is about max-out.",
            s_c * u * s_s * u: "That is the multiplication aggregation; the question is about max-out.",
            s_c * s_s * u: "That applies both gates to u one after the other (as CBAM does); scSE recalibrates u "
            "twice in parallel and then takes the maximum of the two results.",
            -s_c * u: "The sign is lost: a gate in (0, 1) times a negative u stays negative.",
            u: "That is u unchanged; each branch multiplies u by its gate before the maximum.",
        },
    )
