"""Checkers for the exercises of the chapter on focused linear attention (FLatten, Part IV).

Above each checker, a comment lists the mistakes a learner typically makes on that exercise;
each one gets its own message (``tests/test_checkers_flatten.py`` tries every one of them).
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from einops import rearrange

from ..linear.flatten import focusing_function
from . import Feedback, check_number, failed, judge_tensor, passed, run_answer

__all__ = ["check_focus_map", "check_rank_bound", "check_flatten_variant_parameters"]


def _per_head(x: torch.Tensor, heads: int, f: Callable[[torch.Tensor], torch.Tensor], *, order: str = "h d") -> torch.Tensor:
    """Apply ``f`` to every position's feature of every head of a (B, C, H, W) map, channels in ``order``."""
    t = rearrange(x, f"b ({order}) y w -> b y w h d", h=heads)
    return rearrange(f(t), f"b y w h d -> b ({order}) y w", h=heads)


def _norms(t: torch.Tensor, p: float, dim: Any) -> torch.Tensor:
    """‖x‖ / ‖x^p‖ · x^p with the norms over ``dim``, 0 where the norm of x^p is 0."""
    tp = t**p
    norm = torch.linalg.vector_norm
    return norm(t, dim=dim, keepdim=True) * tp / norm(tp, dim=dim, keepdim=True).clamp_min(1e-300)


# Exercise 1: focus_map(x, p, heads): x is a ReLU feature map (B, C, H, W) whose C channels are `heads`
# groups of d = C / heads in (h d) order (head 0 owns channels 0 … d - 1); return f_p (F2) of every
# position's d-vector of every head, in x's layout, with an all-zero feature mapped to 0. The chapter's
# focusing_function works on the last axis of a tensor; here the feature runs along the channels and
# the heads split them. Test shapes: no two axes of one size (B = 2, C = 12, H = 5, W = 7, heads 3, d 4;
# then B = 3, C = 10, H = 4, W = 6, heads 2, d 5), so a norm over any wrong axis changes the values.
# Typical mistakes:
#   - the norms over all C channels (the official code's norm="all"), not per head
#   - the heads split as (d h) instead of (h d)
#   - the norms over the width or the height (the last axis of the map, as focusing_function does on
#     a map passed as it is), or over the whole map
#   - x^p / ‖x^p‖ (‖x‖ forgotten), x^p alone, ‖x‖^p in the denominator, p · x instead of x ** p
#   - NaN for an all-zero feature (0/0 not guarded)
#   - the result in another layout (channels last, or heads split out): caught by the shape
def check_focus_map(fn: Callable[..., Any]) -> Feedback:
    """Exercise 1: ``fn(x, p, heads)`` is f_p of every head's feature at every position of the map."""
    what = "Your focus_map"
    g = torch.Generator().manual_seed(5)
    for b, heads, d, h, w, p in [(2, 3, 4, 5, 7, 3), (3, 2, 5, 4, 6, 2)]:
        x = torch.rand(b, heads * d, h, w, generator=g, dtype=torch.float64) * 2
        x[x < 0.3] = 0  # ReLU features hold zeros
        x[0, :d, 1, 2] = 0  # head 0's feature at (1, 2) of image 0 is zero everywhere
        zero = torch.zeros_like(x, dtype=torch.bool)
        zero[0, :d, 1, 2] = True
        expected = _per_head(x, heads, lambda t: focusing_function(t, p))
        got, fb = run_answer(fn, x.clone(), p, heads, what=what)
        if fb is not None:
            return fb
        if isinstance(got, torch.Tensor) and got.shape == x.shape:
            g64 = got.detach().to(torch.float64)
            if torch.isnan(g64[zero]).any() and torch.allclose(g64[~zero], expected[~zero]):
                return failed(f"{what}: an all-zero feature (head 0 of image 0 at row 1, column 2) gives NaN: "
                              "‖x‖ / ‖x^p‖ is 0/0 there; guard the denominator (clamp_min) so that it gives 0.")
        xp = x**p
        known = {
            "the norms run over all C channels at once (the official code's norm=\"all\"); the paper's f_p "
            "keeps each head's d-vector's norm: split the channels into heads first":
                _norms(x, p, 1),
            "the heads are split as (d h), channel c going to head c % heads; the channels are grouped (h d): "
            "head 0 owns channels 0 … d - 1": _per_head(x, heads, lambda t: focusing_function(t, p), order="d h"),
            "the norms run along the width, the map's last axis (what focusing_function does to a map passed "
            "as it is); a feature is a d-vector of channels at one position": _norms(x, p, -1),
            "the norms run along the height; a feature is a d-vector of channels at one position":
                _norms(x, p, -2),
            "the norms are taken over the whole map; each position's feature of each head keeps its own norm":
                _norms(x, p, (1, 2, 3)),
            "that is x^p / ‖x^p‖ for each head, a unit vector; f_p keeps the norm of x: multiply by ‖x‖":
                _per_head(x, heads, lambda t: t**p / (t**p).norm(dim=-1, keepdim=True).clamp_min(1e-300)),
            "that is x^p alone; f_p rescales it to the norm of x: ‖x‖ / ‖x^p‖ · x^p": xp,
            "the denominator is ‖x‖^p; it is ‖x^p‖, the norm of the element-wise power":
                _per_head(x, heads, lambda t: t**p * t.norm(dim=-1, keepdim=True)
                          / (t.norm(dim=-1, keepdim=True) ** p).clamp_min(1e-300)),
            "that is x unchanged: x^{**p} is the element-wise power x ** p, not p · x": x,
        }
        fb = judge_tensor(got, expected, known, what=what, atol=1e-8, rtol=1e-6)
        if fb is not None:
            return fb
    return passed(f"{what} splits the channels into heads and keeps each feature's norm while raising it to the "
                  "power p; an all-zero feature stays 0.")


# Exercise 2: the largest possible rank of the implicit N × N weights of ONE head (no DWC) when the
# layer runs in 7 × 7 windows (N = 49) with C = 256 channels in 4 heads (d = 64 > N). The chapter's
# example (N = 3,136, d = 32) has the bound d; here the bound is N: rank <= min(N, d).
RANK_SIDE, RANK_C, RANK_HEADS = 7, 256, 4


# Typical mistakes:
#   - d = 64 (the chapter's bound, but an N × N matrix has rank at most N)
#   - C = 256 (the heads split the channels), d² (the size of the state), d + 1 (the normaliser)
#   - N - 1 (the rows sum to 1: that removes no rank)
#   - 7 (the side of the window), N² = 2,401 (the number of entries)
def check_rank_bound(answer: Any) -> Feedback:
    """Exercise 2: max rank of one head's implicit weights, 7×7 window, C = 256, 4 heads."""
    n, c, h = RANK_SIDE * RANK_SIDE, RANK_C, RANK_HEADS
    d = c // h
    return check_number(
        answer,
        min(n, d),
        what="The largest rank",
        hints={
            d: "d = 64 bounds the rank of φ(Q) φ(K)ᵀ, but the weights are an N × N matrix with N = 7 · 7 = 49: "
            "the rank is at most min(N, d).",
            c: "One head sees only its d = C / h channels, and an N × N matrix has rank at most N anyway.",
            d * d: "d² = 4,096 is the size of the state φ(K)ᵀ V (d × d), not a rank; the N × N weights have rank at "
            "most min(N, d).",
            d + 1: "The normaliser divides each row by a number: a diagonal matrix times φ(Q) φ(K)ᵀ, which adds no "
            "rank; and the matrix is only N × N.",
            n - 1: "The rows sum to 1, but that removes no rank (a matrix whose rows sum to 1 can be the "
            "identity): the bound is min(N, d).",
            RANK_SIDE: "7 is the side of the window; the window has N = 49 positions.",
            n * n: "N² = 2,401 is the number of entries of the N × N matrix, not its rank.",
        },
    )


# Exercise 3: the parameters of a variant of the official module, C = 192, 6 heads, 7 × 7 windows:
# a 3 × 3 depthwise convolution per channel (Conv2d(C, C, 3, groups=C) on all heads' values at once,
# with bias: the heads do NOT share it), qkv WITHOUT bias, proj with bias, the learnable scale (C) and
# the positional encoding on K (one C-vector per window position).
VAR_C, VAR_HEADS, VAR_WINDOW, VAR_K = 192, 6, 7, 3


def _variant_parts() -> dict[str, int]:
    c, n, k = VAR_C, VAR_WINDOW * VAR_WINDOW, VAR_K
    return {"qkv": 3 * c * c, "proj": c * c + c, "dwc": c * k * k + c, "scale": c, "pos": n * c}


# Typical mistakes:
#   - the DWC shared by the heads (d·k² + d, the chapter's module) instead of one filter per channel
#   - the paper's 5 × 5 kernel instead of 3 × 3
#   - qkv's biases counted (3C): this variant has none
#   - one C-sized vector missing: the scale, W^O's bias or the DWC's bias (each is C numbers, so the
#     number cannot tell which: one message names the three)
#   - the positional encoding missing, or one d-vector per position instead of a C-vector
#   - the paper's module (no scale, no positional encoding)
def check_flatten_variant_parameters(answer: Any) -> Feedback:
    """Exercise 3: parameters of the per-channel-DWC variant, C = 192, 6 heads, 7×7 windows."""
    p = _variant_parts()
    c, k, n = VAR_C, VAR_K, VAR_WINDOW * VAR_WINDOW
    d = c // VAR_HEADS
    right = sum(p.values())
    return check_number(
        answer,
        right,
        what="The parameter count",
        hints={
            right - p["dwc"] + d * k * k + d: "That is a DWC shared by the heads (d = 32 filters, as in the chapter's "
            "module); in this variant each of the C channels has its own 3 × 3 filter and bias: C·k² + C.",
            right - p["dwc"] + c * 25 + c: "That is a 5 × 5 DWC (the paper's); this variant's kernel is 3 × 3.",
            right + 3 * c: "qkv has no biases in this variant (qkv_bias=False): 3C² for the three projections.",
            right - c: "One C-sized vector is missing: the learnable scale (C), W^O's bias (C) or the DWC's bias "
            "(C, one per channel); all three are there.",
            right - p["pos"]: "The positional encoding is missing: one learnable C-vector per position of the 7 × 7 "
            "window, 49 × 192 numbers.",
            right - p["pos"] + n * d: "The positional encoding adds one C-vector per window position (it is added to "
            "K, all C channels of it), not a d-vector.",
            right - p["pos"] - p["scale"]: "That is without the learnable scale (C) and the positional encoding "
            "(49 × C), the paper's module; the variant keeps the official code's two.",
        },
    )
