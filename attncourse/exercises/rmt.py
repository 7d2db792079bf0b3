"""Checkers for the exercises of "RMT's Manhattan self-attention: a decay in distance".

Above each checker, a comment lists the mistakes a learner typically makes on that exercise;
each one gets its own message (``tests/test_checkers_rmt.py`` tries every one of them).
"""

from __future__ import annotations

import math
from typing import Any, Callable

import torch
from einops import einsum, rearrange

from . import Feedback, check_number, judge_tensor, passed, run_answer

__all__ = ["check_reach", "check_decomposed_hw", "check_split_weights"]


def _gamma(i: int, heads: int, init_value: float, heads_range: float) -> float:
    """γ_i of the official formula, in float64."""
    return 1 - 2 ** (-init_value - heads_range * i / heads)


def _first_below(gamma: float, level: float = 0.01) -> int:
    """The smallest whole distance d with γ^d < level."""
    return math.floor(math.log(level) / math.log(gamma)) + 1


# Exercise 1: the first stage of the official RMT_M2 (5 heads, init_value 2, heads_range 5): the smallest
# whole Manhattan distance at which the slowest head's decay γ^d falls below 1/100. (Not RMT-S, whose
# γ the chapter prints.)
# Typical mistakes:
#   - the last head taken as i = heads (i / heads = 1) instead of i = heads - 1
#   - the fastest head (i = 0) instead of the slowest
#   - heads_range 4 (RMT-S's first stages) instead of 5
#   - init_value left out of the exponent
#   - the last distance at which D is still >= 1/100 (rounded down) instead of the first below
HEADS, INIT_VALUE, HEADS_RANGE = 5, 2, 5


def check_reach(answer: Any) -> Feedback:
    """Exercise 1: the first distance at which the slowest head of RMT_M2's first stage decays below 1/100."""
    n, a, r = HEADS, INIT_VALUE, HEADS_RANGE
    right = _first_below(_gamma(n - 1, n, a, r))
    return check_number(
        answer,
        right,
        what="The distance",
        hints={
            _first_below(_gamma(n, n, a, r)): f"That is the head i = {n}, which does not exist: the heads are "
            f"i = 0 … {n - 1}, so the slowest has i / heads = {n - 1}/{n}.",
            _first_below(_gamma(0, n, a, r)): "That is the fastest head (i = 0, γ = 0.75); the slowest is the last, "
            f"i = {n - 1}, whose γ is closest to 1.",
            _first_below(_gamma(n - 1, n, a, 4)): f"That uses heads_range 4, RMT-S's first stages'; this stage has {r}.",
            _first_below(_gamma(n - 1, n, 0, r)): "init_value is missing: log γ_i = log(1 − 2^(−init_value − "
            f"heads_range · i / heads)), with init_value {a}.",
            right - 1: "At that distance D is still above 1/100 (you rounded ln(0.01) / ln γ down); the question "
            "asks for the first distance at which it is below.",
        },
    )


def _axis_log_decay(n: int, gamma: float, dtype: torch.dtype, sign: float = 1.0) -> torch.Tensor:
    r = torch.arange(n)
    return (r[:, None] - r[None, :]).abs().to(dtype) * (sign * math.log(gamma))


def _hw(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, gamma: float, how: str = "right") -> torch.Tensor:
    """One head's decomposed MaSA, columns first (and the typical wrong versions)."""
    h, w = q.shape[1], q.shape[2]
    sign = -1.0 if how == "sign" else 1.0
    ldh, ldw = _axis_log_decay(h, gamma, q.dtype, sign), _axis_log_decay(w, gamma, q.dtype, sign)
    if how == "gamma as log":
        r_h, r_w = torch.arange(h), torch.arange(w)
        ldh = (r_h[:, None] - r_h[None, :]).abs().to(q.dtype) * gamma
        ldw = (r_w[:, None] - r_w[None, :]).abs().to(q.dtype) * gamma
    if how == "no decay":
        ldh, ldw = torch.zeros_like(ldh), torch.zeros_like(ldw)
    if how == "scaled twice":
        k = k / math.sqrt(q.shape[-1])
    dim = -2 if how == "query axis" else -1

    def weights(logits: torch.Tensor, log_d: torch.Tensor) -> torch.Tensor:
        if how == "product":
            return torch.softmax(logits, dim=-1) * log_d.exp()
        return torch.softmax(logits + log_d, dim=dim)

    def cols(inp: torch.Tensor) -> torch.Tensor:
        a = weights(einsum(q, k, "b y x d, b yy x d -> b x y yy"), ldh)
        return einsum(a, inp, "b x y yy, b yy x d -> b y x d")

    def rows(inp: torch.Tensor) -> torch.Tensor:
        a = weights(einsum(q, k, "b y x d, b y xx d -> b y x xx"), ldw)
        return einsum(a, inp, "b y x xx, b y xx d -> b y x d")

    if how == "rows first":
        return cols(rows(v))
    if how == "second pass on v":
        return rows(v)
    return rows(cols(v))


# Exercise 2: decomposed_hw(q, k, v, gamma): one head, q, k, v (B, H, W, d) with q, k rotated and k
# already scaled; along each column with log D^H in the logits, then along each row, on the column
# pass's output, with log D^W. Test shapes: (2, 3, 5, 4) and (3, 4, 2, 6), no two axes alike.
# Typical mistakes:
#   - rows first (the chapter's order)
#   - the row pass applied to v instead of the column pass's output (only one pass reaches the result)
#   - no decay
#   - the decay after the softmax (the paper's product) instead of in the logits
#   - the decay with the wrong sign (a growth)
#   - gamma used as if it were log γ: d · γ added instead of d · log γ
#   - the softmax over the query axis
#   - k scaled by 1/sqrt(d) again
def check_decomposed_hw(fn: Callable[..., Any]) -> Feedback:
    """Exercise 2: one head's decomposed MaSA with the columns first."""
    what = "Your decomposed_hw"
    g = torch.Generator().manual_seed(7)
    for shape, gamma in [((2, 3, 5, 4), 0.8), ((3, 4, 2, 6), 0.6)]:
        q, k, v = (torch.randn(shape, generator=g, dtype=torch.float64) for _ in range(3))
        expected = _hw(q, k, v, gamma)
        got, fb = run_answer(fn, q.clone(), k.clone(), v.clone(), gamma, what=what)
        if fb is not None:
            return fb
        known = {
            "that is the rows first, then the columns (the chapter's order); here the column pass comes first and "
            "the row pass reads its output": _hw(q, k, v, gamma, "rows first"),
            "the row pass reads v, not the column pass's output, so the column pass never reaches the result":
                _hw(q, k, v, gamma, "second pass on v"),
            "there is no decay: add log D = |Δ| · log γ to the logits of each pass": _hw(q, k, v, gamma, "no decay"),
            "that is the paper's product, softmax ⊙ D; the official code (and this exercise) adds log D to the "
            "logits before the softmax": _hw(q, k, v, gamma, "product"),
            "the decay has the wrong sign: log γ < 0, so |Δ| · log γ lowers the logits of far keys":
                _hw(q, k, v, gamma, "sign"),
            "that adds |Δ| · γ to the logits; the decay is γ^|Δ|, so its log is |Δ| · log γ":
                _hw(q, k, v, gamma, "gamma as log"),
            "the softmax runs over the queries (dim -2); each query's weights over its keys sum to 1 (dim -1)":
                _hw(q, k, v, gamma, "query axis"),
            "k is already scaled by 1/sqrt(d): do not scale it again": _hw(q, k, v, gamma, "scaled twice"),
        }
        fb = judge_tensor(got, expected, known, what=what)
        if fb is not None:
            return fb
    return passed(f"{what} attends along each column with D^H, then along each row on its output with D^W.")


def _split(a_w: torch.Tensor, a_h: torch.Tensor, how: str = "right") -> torch.Tensor:
    """The columns-first effective weights (B, N, N): (y, x) -> (y, x2) by the row pass, which reads
    the column pass's output at (y, x2), which gathered (y2, x2): A_W[y][x, x2] · A_H[x2][y, y2]."""
    pattern = {
        "right": "b y x x2, b x2 y y2 -> b y x y2 x2",
        "rows first": "b y2 x x2, b x y y2 -> b y x y2 x2",
        "key's row": "b y2 x x2, b x2 y y2 -> b y x y2 x2",
        "query's column": "b y x x2, b x y y2 -> b y x y2 x2",
    }[how if how in ("rows first", "key's row", "query's column") else "right"]
    path = einsum(a_w, a_h, pattern)
    if how == "(w h)":
        return rearrange(path, "b y x y2 x2 -> b (x y) (x2 y2)")
    if how == "transposed":
        return rearrange(path, "b y x y2 x2 -> b (y2 x2) (y x)")
    return rearrange(path, "b y x y2 x2 -> b (y x) (y2 x2)")


# Exercise 3: split_weights(a_w, a_h) for the columns-first order of exercise 2: a_w (B, H, W, W) the
# row pass (a_w[b, y, x, x2]), a_h (B, W, H, H) the column pass (a_h[b, x, y, y2]); the effective
# weights (B, N, N) in (h w) order. The query (y, x) reaches (y2, x2) through (y, x2):
# a_w[y, x, x2] · a_h[x2, y, y2]. Test shapes: B = 2, H = 3, W = 4, then B = 3, H = 5, W = 2.
# Typical mistakes:
#   - the chapter's rows-first path, a_h[x, y, y2] · a_w[y2, x, x2]
#   - the row pass read in the key's row y2 instead of the query's row y
#   - the column pass read in the query's column x instead of the key's column x2
#   - queries and keys in (w h) order
#   - queries and keys swapped (the transpose)
#   - not flattened: (B, H, W, H, W), caught by the shape
def check_split_weights(fn: Callable[..., Any]) -> Feedback:
    """Exercise 3: the effective (B, N, N) weights of the columns-first decomposed form."""
    what = "Your split_weights"
    g = torch.Generator().manual_seed(11)
    for b, h, w in [(2, 3, 4), (3, 5, 2)]:
        a_w = torch.softmax(torch.randn(b, h, w, w, generator=g, dtype=torch.float64) * 2, -1)
        a_h = torch.softmax(torch.randn(b, w, h, h, generator=g, dtype=torch.float64) * 2, -1)
        expected = _split(a_w, a_h)
        got, fb = run_answer(fn, a_w.clone(), a_h.clone(), what=what)
        if fb is not None:
            return fb
        known = {
            "that is the rows-first path of the chapter, through (y2, x); here the columns come first, so the query "
            "(y, x) reaches (y2, x2) through (y, x2): a_w[b, y, x, x2] · a_h[b, x2, y, y2]": _split(a_w, a_h, "rows first"),
            "the row pass is read in the key's row y2; the row pass is the second one, run by the query itself, in "
            "its own row y: a_w[b, y, x, x2]": _split(a_w, a_h, "key's row"),
            "the column pass is read in the query's column x; it ran first, in the column x2 of the intermediate "
            "position (y, x2): a_h[b, x2, y, y2]": _split(a_w, a_h, "query's column"),
            "the positions are in (w h) order (column by column); the course numbers them (h w), n = y W + x":
                _split(a_w, a_h, "(w h)"),
            "queries and keys are swapped: row n of the result holds query n's weights over the keys, which sum to 1":
                _split(a_w, a_h, "transposed"),
        }
        fb = judge_tensor(got, expected, known, what=what)
        if fb is not None:
            return fb
    return passed(f"{what} multiplies the row pass of the query's row by the column pass of the key's column.")
