"""Checkers for the exercises of "Part III side by side".

Above each checker, a comment lists the mistakes a learner typically makes on that exercise;
each one gets its own message (``tests/test_checkers_selfattn_summary.py`` tries every one of them).
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from einops import rearrange

from . import Feedback, compare_tensors, failed, is_unanswered, match_mistake, not_attempted, passed, run_answer

__all__ = ["check_receptive_field", "check_weights_per_image", "check_attention_distance"]

# The baseline: conv 3x3, conv 3x3, max-pool 2x2 (stride 2), conv 3x3; CBAM's 7x7 gate in block 2.
BASELINE, WITH_CBAM = 10, 16


# Exercise 1, the receptive fields (baseline, with CBAM in block 2) as a tuple.
# Typical mistakes:
#   - not a pair of numbers
#   - the pool forgotten (adds 1 pixel before doubling the stride), or the count started at 0
#     pixels instead of 1 (a unit sees at least its own pixel): both give (9, 15)
#   - the stride forgotten after the pool (conv3 adds 2, not 4): (8, 14)
#   - both of these: (7, 13)
#   - CBAM's gate counted as +7 (its kernel size) instead of +6: (10, 17)
#   - CBAM's gate counted after the pool (at stride 2, +12): (10, 22)
#   - CBAM said to see the whole image, because its channel gate pools globally, or its gate
#     taken as 3 × 3 (the "k=3" variant): both give (10, 12)
#   - the pair in the wrong order: (16, 10)
#   - the 12x12 image's side for both
def check_receptive_field(answer: Any) -> Feedback:
    """Exercise 1: the receptive field of the part's baseline, and with CBAM in block 2."""
    what = "Receptive fields (baseline, with CBAM)"
    if is_unanswered(answer):
        return not_attempted(what)
    if not (isinstance(answer, (tuple, list)) and len(answer) == 2):
        return failed(f"{what}: expected a tuple of two integers, got {answer!r}")
    if any(is_unanswered(a) for a in answer):
        return not_attempted(what)
    try:
        got = (int(answer[0]), int(answer[1]))
    except (TypeError, ValueError):
        return failed(f"{what}: expected two integers, got {answer!r}")
    if got == (BASELINE, WITH_CBAM):
        return passed(f"{what}: {got[0]} and {got[1]} pixels; the shapes span at least 11, so the baseline's "
                      "units never see both, CBAM's can (with a 3 × 3 gate, 12 pixels, too).")
    hints = {
        (9, 15): "either the 2 × 2 max-pool is missing (it widens the field by one pixel at stride 1, then doubles "
                 "the stride) or you started from 0 pixels; a unit of the input sees 1 pixel, its own",
        (8, 14): "after the pool the stride is 2, so the last 3 × 3 convolution widens the field by 2 · 2 = 4 pixels",
        (7, 13): "the pool adds a pixel, and after it the last convolution adds 2 · 2 = 4 pixels, not 2",
        (BASELINE, 17): "a k × k convolution at stride 1 widens the field by k − 1 = 6 pixels, not by 7",
        (BASELINE, 22): "CBAM sits in the second block, before the pool: its gate works at stride 1 (+6, not +12)",
        (BASELINE, 12): "12 is what a 3 × 3 gate gives (the 'CBAM (r=4, k=3)' variant), and the image's side; CBAM's "
                        "channel gate pools the whole map, but it scales every position alike, as SE does: count the "
                        "spatial gate's 7 × 7 convolution (+6)",
        (WITH_CBAM, BASELINE): "the pair is the other way round: (baseline, with CBAM)",
        (12, 12): "not every unit sees the whole 12 × 12 image: count what each layer adds",
    }
    if got in hints:
        return failed(f"{what}: {got} is not right: {hints[got]}.")
    if got[0] == BASELINE:
        return failed(f"{what}: the baseline's {BASELINE} is right; with CBAM, {got[1]} is not: add what its 7 × 7 "
                      "gate adds, at the stride where it sits.")
    return failed(f"{what}: {got} is not right. Start from 1 pixel at stride 1 and add (k − 1) · stride per layer.")


_VARIANTS = ["MHSA", "Non-local", "GC", "DANet", "CCNet"]
_SIDE, _CHANNELS, _HEADS = 12, 32, 2          # the module's map (before the pool) and width; MHSA's heads
_N = _SIDE * _SIDE


def _weights_per_image() -> dict[str, int]:
    n, c = _N, _CHANNELS
    return {"MHSA": _HEADS * n * n, "Non-local": n * n, "GC": n, "DANet": n * n + c * c,
            "CCNet": 2 * n * (2 * _SIDE - 1)}


# Exercise 2: the attention weights each module computes per image in the protocol's network
# (C = 32, a 12 × 12 map before the pool: N = 144; MHSA with 2 heads; CCNet's two passes), as a dict.
# Typical mistakes, per variant:
#   - not a dict, or the variant names not the protocol's; a value that is not a number
#   - MHSA with one head (the protocol's MHSA has 2)
#   - GC with N² (a map per query; GC has one map for all queries)
#   - DANet without the channel module's C × C weights
#   - CCNet with one pass; with the centre counted twice (H + W keys); with the dense N × N matrix
#     that attention(x) returns (zeros off the cross included), for one or two passes
#   - the pooled 6 × 6 map (N = 36) instead of the 12 × 12 map the module sits on
def check_weights_per_image(answer: Any) -> Feedback:
    """Exercise 2: the attention weights each module of the protocol computes per image."""
    what = "Attention weights per image"
    if is_unanswered(answer):
        return not_attempted(what)
    if not isinstance(answer, dict):
        return failed(f"{what}: expected a dict from variant name to a number, got {type(answer).__name__}")
    missing = [v for v in _VARIANTS if v not in answer]
    if missing:
        return failed(f"{what}: expected the variants {_VARIANTS}, missing {missing} (use the protocol's names)")
    if any(is_unanswered(answer[v]) for v in _VARIANTS):
        return not_attempted(what)
    right = _weights_per_image()
    n, c, side = _N, _CHANNELS, _SIDE
    pooled = {"MHSA": _HEADS * 36 * 36, "Non-local": 36 * 36, "GC": 36, "DANet": 36 * 36 + c * c, "CCNet": 2 * 36 * 11}
    hints = {
        "MHSA": {n * n: "the protocol's MHSA has 2 heads, each with its own N × N weights"},
        "GC": {n * n: "GC computes one map of N weights for all queries, not a row per query"},
        "DANet": {n * n: "that is the position module's S alone; the channel module adds its C × C weights X"},
        "CCNet": {n * (2 * side - 1): "that is one pass; CCNet's two passes compute their weights twice",
                  2 * n * 2 * side: "the centre of the cross is a key once (H + W - 1 keys per query, not H + W)",
                  n * n: "attention(x) returns the first pass as a dense N × N matrix, zeros off the cross included; "
                         "count the weights of the cross, N (H + W - 1) per pass",
                  2 * n * n: "attention(x)'s dense N × N matrix holds zeros off the cross; count the weights of the "
                             "cross, N (H + W - 1) per pass"},
    }
    for v in _VARIANTS:
        try:
            got = int(answer[v])
        except (TypeError, ValueError):
            return failed(f"{what}: {v}: expected a number, got {answer[v]!r}")
        if got == right[v]:
            continue
        if got in hints.get(v, {}):
            return failed(f"{what}: {v}: {got:,} is not right: {hints[v][got]}.")
        if got == pooled[v]:
            return failed(f"{what}: {v}: {got:,} is for the pooled 6 × 6 map; the module sits in the second block, "
                          f"before the pool, on the 12 × 12 map (N = {n}).")
        return failed(f"{what}: {v}: {got:,} is not right.")
    return passed(f"{what}: " + ", ".join(f"{v} {right[v]:,}" for v in _VARIANTS) + ".")


def _distance(weights: torch.Tensor, query: int, width: int, how: str = "right") -> torch.Tensor:
    """Σ_j w[query, j] · |p_j − p_query| (Euclidean, pixels), averaged over heads: (B,)."""
    n = weights.shape[-1]
    height = n // width
    j = torch.arange(n)
    per_row = height if how == "rows of H" else width       # positions in (h w) order: row = j // W
    r, c = (j // per_row).to(weights.dtype), (j % per_row).to(weights.dtype)
    dr, dc = r - r[query], c - c[query]
    dist = {"squared": dr**2 + dc**2, "manhattan": dr.abs() + dc.abs(),
            "flat": (j - query).abs().to(weights.dtype)}.get(how, (dr**2 + dc**2).sqrt())
    rows = weights[:, :, :, query] if how == "column" else weights[:, :, query, :]   # (B, heads, N)
    if how == "unweighted":
        return dist.mean().expand(weights.shape[0]).clone()
    per_head = (rows * dist).mean(-1) if how == "mean" else (rows * dist).sum(-1)
    return per_head.sum(1) if how == "heads summed" else per_head.mean(1)


# Exercise 3: attention_distance(weights, query, width) -> (B,): the mean distance, in pixels, from
# the query to the positions it attends to, Σ_j w_j |p_j − p_query| (Euclidean), averaged over heads.
# Typical mistakes:
#   - the column instead of the row (what the others give to this position: weights[:, :, :, query])
#   - the heads summed instead of averaged; the heads not reduced at all, (B, heads)
#   - row and column of a position computed with the height (j // H, j % H) instead of the width
#   - the squared distance (no square root)
#   - the Manhattan distance |Δrow| + |Δcolumn|
#   - the distance between flat indices |j − query|
#   - the distances averaged without the weights
#   - a mean over the positions instead of the weighted sum (divided by N)
def check_attention_distance(fn: Callable[..., Any]) -> Feedback:
    """Exercise 3: the weighted mean distance from a query to the positions it attends to."""
    what = "attention_distance(weights, query, width)"
    gen = torch.Generator().manual_seed(0)
    b, heads, h, w = 3, 4, 5, 6            # every axis a different size; H ≠ W
    n = h * w
    weights = (3 * torch.randn(b, heads, n, n, generator=gen, dtype=torch.float64)).softmax(-1)
    query = 8                              # row 1, column 2 of the 5 × 6 map
    got, fb = run_answer(fn, weights, query, w, what=what)
    if fb is not None:
        return fb
    expected = _distance(weights, query, w)
    if isinstance(got, torch.Tensor) and tuple(got.shape) == (b, heads):
        return failed(f"{what}: the result has one number per image and head, shape {(b, heads)}; average over "
                      f"the heads too, shape ({b},).")
    known = {
        "that is the column of the query (what the other positions give to it); a query's weights are its row, "
        "weights[:, :, query, :]": _distance(weights, query, w, "column"),
        "*average* the heads (each head's row sums to 1), do not sum them": _distance(weights, query, w, "heads summed"),
        "positions are in (h w) order, row by row: position j is at row j // W and column j % W, with W = width; "
        "you divided by the height": _distance(weights, query, w, "rows of H"),
        "that is the squared distance; take its square root, the distance in pixels": _distance(weights, query, w, "squared"),
        "that is the Manhattan distance |Δrow| + |Δcolumn|; the exercise asks for the Euclidean one":
            _distance(weights, query, w, "manhattan"),
        "|j − query| is a distance between flat indices; convert both to (row, column) first":
            _distance(weights, query, w, "flat"),
        "that is the plain mean of the distances to all positions; weight each distance by the attention weight":
            _distance(weights, query, w, "unweighted"),
        "the weights already sum to 1: take their weighted *sum* of distances, not a mean over the N positions":
            _distance(weights, query, w, "mean"),
    }
    mistake = match_mistake(got, known, what=what, expected=expected, end=".")
    if mistake is not None:
        return mistake
    wrong = compare_tensors(got, expected, what=what)
    if wrong is not None:
        return wrong
    return passed(f"{what}: right on random weights ({b} images, {heads} heads, a {h} × {w} map).")
