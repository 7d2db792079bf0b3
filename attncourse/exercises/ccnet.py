"""Checkers for the exercises of the CCNet (criss-cross attention) chapter.

Above each checker, a comment lists the mistakes a learner typically makes on that exercise;
each one gets its own message (``tests/test_checkers_ccnet.py`` tries every one of them).
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from . import Feedback, check_number, compare_tensors, failed, match_mistake, passed, run_answer

__all__ = ["check_ccnet_parameters", "check_cross_entries", "check_criss_cross"]


def _params(c: int, inner: int, *, value: int | None = None, biases: bool = True, gamma: bool = True) -> int:
    value = c if value is None else value
    return 2 * (c * inner + (inner if biases else 0)) + c * value + (value if biases else 0) + (1 if gamma else 0)


# Exercise 1, CrissCrossAttention(96, reduction=8, recurrence=3).
# Typical mistakes:
#   - the parameters counted once per pass (× R), though the passes share them; or all but γ × R
#   - γ forgotten
#   - the convolutions' biases forgotten
#   - the value projection reduced to C' like the query and key
#   - the query and key kept at C channels (no reduction)
#   - only the query and key counted (no value projection)
def check_ccnet_parameters(answer: Any) -> Feedback:
    """Exercise 1: parameters of ``CrissCrossAttention(96, reduction=8, recurrence=3)``."""
    c, inner, r = 96, 12, 3
    right = _params(c, inner)
    return check_number(
        answer,
        right,
        what="Parameters of CrissCrossAttention(96, recurrence=3)",
        hints={
            r * right: "The R = 3 passes share one set of weights (the same module applied three times): "
            "count them once.",
            r * (right - 1) + 1: "The passes share all their weights, the convolutions too, not only γ: "
            "count everything once.",
            right - 1: "γ, the learned scale of the attention output (one scalar), is a parameter too.",
            _params(c, inner, biases=False): "The three 1×1 convolutions have biases (C' + C' + C of them).",
            _params(c, inner, biases=False, gamma=False): "The convolutions' biases and γ are missing.",
            _params(c, inner, value=inner): "The value projection keeps all C channels (the output is added "
            "to the input); only the query and key are reduced to C' = C / 8.",
            _params(c, c): "The query and key have C' = C / 8 = 12 channels, not C.",
            2 * (c * inner + inner) + 1: "The value projection W_v (C × C weights and C biases) is missing.",
        },
    )


# Exercise 2, the non-zero entries of one pass's dense attention matrix, B = 1, H = 48, W = 64.
# Typical mistakes:
#   - the centre counted twice: N (H + W)
#   - the centre left out: N (H + W - 2)
#   - one query's path only: H + W - 1
#   - full attention: N²
#   - the row only or the column only: N W, N H
def check_cross_entries(answer: Any) -> Feedback:
    """Exercise 2: non-zero weights of one criss-cross pass on a 48 × 64 map (batch 1)."""
    h, w = 48, 64
    n = h * w
    return check_number(
        answer,
        n * (h + w - 1),
        what="Non-zero attention weights at H = 48, W = 64",
        hints={
            n * (h + w): "Each query's own position lies in its row and in its column but is a key only "
            "once (the -inf on the column path's diagonal): H + W - 1 keys per query.",
            n * (h + w - 2): "The query's own position is one of its keys (in the row path): H + W - 1 keys.",
            h + w - 1: "That is one query's path; every one of the N = H·W positions is a query.",
            n * n: "That is full attention (N² weights); the criss-cross keeps only each query's row and column.",
            n * w: "That is the row path only; each query also attends to its column.",
            n * h: "That is the column path only; each query also attends to its row.",
        },
    )


def _reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, how: str = "right") -> torch.Tensor:
    b, c, h, w = q.shape
    e_col = torch.einsum("bchw,bcgw->bhwg", q, k)
    e_row = torch.einsum("bchw,bchv->bhwv", q, k)
    if how == "scaled":
        e_col, e_row = e_col / c**0.5, e_row / c**0.5
    if how != "twice":
        eye = torch.eye(h, dtype=torch.bool, device=q.device)[:, None, :]
        e_col = e_col.masked_fill(eye, float("-inf"))
    if how == "two-softmaxes":
        a_col, a_row = e_col.softmax(-1), e_row.softmax(-1)
    else:
        a = torch.cat([e_col, e_row], -1).softmax(-1)
        a_col, a_row = a[..., :h], a[..., h:]
    out_col = torch.einsum("bhwg,bcgw->bchw", a_col, v)
    out_row = torch.einsum("bhwv,bchv->bchw", a_row, v)
    if how == "column-only":
        return torch.einsum("bhwg,bcgw->bchw", torch.einsum("bchw,bcgw->bhwg", q, k).softmax(-1), v)
    if how == "row-only":
        return torch.einsum("bhwv,bchv->bchw", e_row.softmax(-1), v)
    return out_col + out_row


def _full(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    a = torch.einsum("bcn,bcm->bnm", q.flatten(2), k.flatten(2)).softmax(-1)
    return torch.einsum("bnm,bcm->bcn", a, v.flatten(2)).view_as(v)


# Exercise 3, criss_cross(q, k, v) = Σ_i A_{i,u} Φ_{i,u} of one pass (no γ, no residual).
# Typical mistakes:
#   - the centre counted twice (no -inf on the column path's diagonal)
#   - two softmaxes, one over the column and one over the row, instead of one over the path
#   - the logits scaled by 1/sqrt(C') (the Transformer's habit; CCNet does not scale)
#   - full attention over all N positions (no criss-cross mask)
#   - the column path only / the row path only
#   - q and k swapped in the affinity (A transposed: u's weights read from the key side)
#   - the attention weights returned instead of the aggregated values (a shape message)
def check_criss_cross(fn: Callable[..., Any]) -> Feedback:
    """Exercise 3: ``fn(q, k, v)`` returns the criss-cross aggregation of one pass, (B, C, H, W)."""
    what = "Your criss_cross"
    g = torch.Generator().manual_seed(11)
    for b, c_qk, c, h, w in [(2, 3, 5, 4, 6), (1, 2, 4, 5, 3)]:
        q = torch.randn(b, c_qk, h, w, generator=g, dtype=torch.float64)
        k = torch.randn(b, c_qk, h, w, generator=g, dtype=torch.float64)
        v = torch.randn(b, c, h, w, generator=g, dtype=torch.float64)
        got, fb = run_answer(fn, q, k, v, what=what)
        if fb is not None:
            return fb
        expected = _reference(q, k, v)
        if isinstance(got, torch.Tensor) and got.shape == expected.shape:
            known = {
                "the query's own position is counted twice, in its column and in its row; put -inf on the "
                "column path's diagonal (key row = query row) before the softmax": _reference(q, k, v, "twice"),
                "you took one softmax over the column and another over the row; CCNet takes one softmax over "
                "the whole path [column; row], so that a query's H + W - 1 weights sum to 1":
                    _reference(q, k, v, "two-softmaxes"),
                "the logits are divided by sqrt(C'); CCNet's affinity d = Q_u Ω_{i,u}ᵀ is not scaled":
                    _reference(q, k, v, "scaled"),
                "that is full attention over all H·W positions; keep only each query's row and column": _full(q, k, v),
                "that is the column path only; the row path belongs to the same softmax":
                    _reference(q, k, v, "column-only"),
                "that is the row path only; the column path belongs to the same softmax":
                    _reference(q, k, v, "row-only"),
                "q and k are swapped in the affinity: the weights of query u come from Q_u and the keys on "
                "u's path, d_{i,u} = Q_u Ω_{i,u}ᵀ": _reference(k, q, v),
            }
            fb = match_mistake(got, known, what=what, expected=expected, end=".")
            if fb is not None:
                return fb
        bad = compare_tensors(got, expected, what=what)
        if bad is not None:
            return bad
    return passed(f"{what} computes one criss-cross aggregation: one softmax over each query's H + W - 1 keys.")
