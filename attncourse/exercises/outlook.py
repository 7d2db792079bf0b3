"""Checkers for the exercises of the Outlook attention chapter (Part V).

Above each checker, a comment lists the mistakes a learner typically makes on that exercise;
each one gets its own message (``tests/test_checkers_outlook.py`` tries every one of them).
The exercises ask for what no cell of the chapter computes: the parameters of the whole Outlooker
block, how many window outputs eq. (5) adds at each position, and eq. (4) for one window from
W_A's flat output.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F
from einops import rearrange

from . import Feedback, check_number, judge_tensor, passed, run_answer

__all__ = ["check_outlooker_parameters", "check_coverage", "check_window_outputs"]

# Exercise 1: the learnable numbers of ONE Outlooker block of VOLO-D1 (official code):
# x + OutlookAttention(LN(x)), then x + MLP(LN(x)); C = 192, 6 heads, K = 3, mlp_ratio 3,
# qkv_bias False. LN: 2C each; attention: 2C² + C + heads·K⁴·(C + 1); MLP: C·3C + 3C + 3C·C + C.
BLOCK_C, BLOCK_HEADS, BLOCK_K, BLOCK_RATIO = 192, 6, 3, 3


def _block(c: int = BLOCK_C, heads: int = BLOCK_HEADS, k: int = BLOCK_K, ratio: int = BLOCK_RATIO, *,
           ln: int = 2, attn_out: int | None = None, v_bias: bool = False, a_bias: bool = True,
           mlp: bool = True, mlp_bias: bool = True) -> int:
    """Parameters of an Outlooker block, and of its typical miscounts."""
    attn_out = heads * k**4 if attn_out is None else attn_out
    attention = c * c + (c if v_bias else 0) + c * attn_out + (attn_out if a_bias else 0) + c * c + c
    hidden = ratio * c
    mlp_n = (c * hidden + hidden * c + ((hidden + c) if mlp_bias else 0)) if mlp else 0
    return ln * 2 * c + attention + mlp_n


# Typical mistakes:
#   - the attention alone (count_parameters(OutlookAttention2d(192))): no LayerNorms, no MLP
#   - the LayerNorms forgotten, or the MLP's biases forgotten: both are 4C = 768 short (one message
#     that names both)
#   - the MLP forgotten
#   - ViT's mlp_ratio 4 instead of VOLO's 3
#   - a bias on W_V (VOLO: qkv_bias=False)
#   - W_A without its bias
#   - K² instead of K⁴ outputs of W_A per head
#   - W_A for one head only (K⁴ outputs)
def check_outlooker_parameters(answer: Any) -> Feedback:
    """Exercise 1: learnable numbers of one VOLO-D1 Outlooker (C = 192, 6 heads, K = 3, mlp_ratio 3)."""
    c, heads, k = BLOCK_C, BLOCK_HEADS, BLOCK_K
    return check_number(
        answer,
        _block(),
        what="Learnable numbers of one Outlooker",
        hints={
            _block(ln=0, mlp=False): "That is the outlook attention alone (OutlookAttention2d(192)); the Outlooker "
            "block adds two LayerNorms and an MLP, eqs. (1) and (2).",
            _block(ln=0): "768 = 4C short: the two LayerNorms (a weight and a bias per channel each, 2C), or the "
            "MLP's biases (3C + C)?",
            _block(mlp=False): "The MLP of eq. (2) is missing: two Linear layers C → 3C → C with their biases.",
            _block(ratio=4): "That is an MLP of ratio 4 (ViT's); VOLO's Outlookers use mlp_ratio 3: C → 3C → C.",
            _block(v_bias=True): "One C too many: W_V has no bias in VOLO (qkv_bias=False).",
            _block(a_bias=False): f"W_A has a bias: one per generated number, heads·K⁴ = {heads * k**4}.",
            _block(attn_out=heads * k * k): "W_A generates a K² × K² matrix per head and window: K⁴ = 81 outputs per "
            "head, not K².",
            _block(attn_out=k**4): f"W_A generates K⁴ numbers for every head: {heads} × 81 outputs, not 81.",
        },
    )


def _coverage(h: int, w: int, k: int, s: int, how: str = "right") -> torch.Tensor:
    """How many window outputs eq. (5) adds at each position, and the typical wrong maps."""
    if how == "right":
        return _fold_ones(h, w, k, s)
    if how == "stride 1":
        return _fold_ones(h, w, k, 1)
    if how == "K² everywhere":
        return torch.full((h, w), float(k * k), dtype=torch.float64)
    if how == "one per cell":
        return torch.ones(h, w, dtype=torch.float64)
    out = torch.zeros(h, w, dtype=torch.float64)
    if how == "corner":  # window (i, j) covers (i s + m, j s + n): anchored at its top-left, no border
        nh, nw, off = -(-h // s), -(-w // s), 0
    elif how == "floor":  # ⌊H/s⌋ windows per column
        nh, nw, off = max(h // s, 1), max(w // s, 1), k // 2
    else:
        raise ValueError(how)
    for i in range(nh):
        for j in range(nw):
            for m in range(k):
                for n in range(k):
                    y, x = i * s + m - off, j * s + n - off
                    if 0 <= y < h and 0 <= x < w:
                        out[y, x] += 1
    return out


def _fold_ones(h: int, w: int, k: int, s: int) -> torch.Tensor:
    windows = (-(-h // s)) * (-(-w // s))
    ones = torch.ones(1, k * k, windows, dtype=torch.float64)
    return F.fold(ones, (h, w), k, padding=k // 2, stride=s)[0, 0]


# Exercise 2: coverage(h, w, k, s): an (h, w) map of how many window slots land on each position,
# i.e. how many terms eq. (5) sums there, for windows centred on (i s, j s), i < ⌈h/s⌉, j < ⌈w/s⌉.
# Test sizes: (7, 6, 3, 2), (9, 5, 5, 2), (8, 11, 3, 3), (5, 4, 3, 1): H ≠ W, odd sides.
# Typical mistakes:
#   - the stride ignored: a window at every position (stride 1)
#   - K² everywhere (the border and the stride ignored)
#   - one per position (each position counted once, in its own cell)
#   - windows anchored at their top-left corner (i s, j s) instead of centred there (no border of ⌊K/2⌋)
#   - ⌊h/s⌋ windows per column instead of ⌈h/s⌉ (a cut cell at an odd border dropped)
#   - the map transposed (w, h): caught by the shape
def check_coverage(fn: Callable[..., Any]) -> Feedback:
    """Exercise 2: ``fn(h, w, k, s)`` is the number of window outputs eq. (5) adds at each position."""
    what = "Your coverage"
    for h, w, k, s in [(7, 6, 3, 2), (9, 5, 5, 2), (8, 11, 3, 3), (5, 4, 3, 1)]:
        got, fb = run_answer(fn, h, w, k, s, what=what)
        if fb is not None:
            return fb
        if isinstance(got, torch.Tensor) and not got.is_floating_point():
            got = got.double()
        known = {
            "the stride is ignored: that is a window centred on every position (stride 1); with stride s the "
            "windows sit on every s-th row and column only": _coverage(h, w, k, s, "stride 1"),
            "K² everywhere: at the border some slots fall outside the map, and with stride s > 1 not every "
            "position is reached by K² windows": _coverage(h, w, k, s, "K² everywhere"),
            "one per position: eq. (5) adds the output of every window slot that lands on a position, and K × K "
            "windows overlap": _coverage(h, w, k, s, "one per cell"),
            "those windows start at (i s, j s); they are centred there, covering rows i s − ⌊K/2⌋ … i s + ⌊K/2⌋ "
            "(F.unfold's padding ⌊K/2⌋)": _coverage(h, w, k, s, "corner"),
            "that is ⌊H/s⌋ windows per column; the official code has ⌈H/s⌉ (its pooling uses ceil_mode, keeping a "
            "cut cell at an odd border)": _coverage(h, w, k, s, "floor"),
        }
        fb = judge_tensor(got, _coverage(h, w, k, s), known, what=what)
        if fb is not None:
            return fb
    return passed(f"{what} counts, at every position, the slots of the windows centred on the stride's grid that "
                  "land on it.")


def _window_outputs(logits: torch.Tensor, values: torch.Tensor, heads: int, how: str = "right") -> torch.Tensor:
    """Eq. (4) for one window: W_A's flat output (heads·K⁴,) and the window's values (K², C) -> (K², C)."""
    kk = values.shape[0]
    order = "(i j g)" if how == "heads last" else "(g i j)"
    a = rearrange(logits, f"{order} -> g i j", g=heads, i=kk)
    if how == "scaled":
        a = a * (values.shape[1] // heads) ** -0.5
    if how == "columns":
        a = a.softmax(-2)
    elif how != "no softmax":
        a = a.softmax(-1)
    if how == "transposed":
        a = a.transpose(-1, -2)
    split = "k (d g) -> g k d" if how == "(d h)" else "k (g d) -> g k d"
    v = rearrange(values, split, g=heads)
    y = a @ v  # (g, K², d)
    if how == "unmerged":
        return y
    merge = "g k d -> k (d g)" if how == "(d h)" else "g k d -> k (g d)"
    return rearrange(y, merge)


# Exercise 3: window_outputs(logits, values, heads): eq. (4) for ONE window, without a scale (the
# paper's): logits are W_A's flat output for the window, (heads·K⁴,) in the official layout
# (heads, K² rows, K² columns); values are V_Δ, (K², C) in (m n) order, channels (heads d).
# Return Y_Δ, (K², C): row r is output slot r, heads concatenated back in (heads d) order.
# Test sizes: K = 3, heads 2, C = 8 (d = 4); K = 5, heads 3, C = 6 (d = 2).
# Typical mistakes:
#   - the softmax over the columns (dim -2) instead of each row
#   - no softmax (the logits used as weights)
#   - the official scale d^-1/2 applied (the exercise asks for the paper's eq. (4))
#   - the logits read as (K², K², heads), heads last
#   - the channels split into heads as (d heads)
#   - softmax(Â)ᵀ V: rows and columns swapped after the softmax
#   - the heads not concatenated, (heads, K², d): caught by the shape
def check_window_outputs(fn: Callable[..., Any]) -> Feedback:
    """Exercise 3: ``fn(logits, values, heads)`` is eq. (4) for one window."""
    what = "Your window_outputs"
    g = torch.Generator().manual_seed(3)
    for k, heads, c in [(3, 2, 8), (5, 3, 6)]:
        logits = torch.randn(heads * k**4, generator=g, dtype=torch.float64) * 2
        values = torch.randn(k * k, c, generator=g, dtype=torch.float64)
        got, fb = run_answer(fn, logits.clone(), values.clone(), heads, what=what)
        if fb is not None:
            return fb
        known = {
            "the softmax runs over the columns (dim −2): each *row* of Â (one output slot) is a softmax over the "
            "K² slots it reads": _window_outputs(logits, values, heads, "columns"),
            "the logits are used as weights without a softmax; eq. (4) takes softmax(Â), row by row":
                _window_outputs(logits, values, heads, "no softmax"),
            "the logits were scaled by d^−1/2, as the official code does; the paper's eq. (4), asked for here, has "
            "no scale": _window_outputs(logits, values, heads, "scaled"),
            "W_A's outputs were read with the head last, (K², K², heads); the official layout is (heads, K², K²): "
            "rearrange(logits, '(g i j) -> g i j')": _window_outputs(logits, values, heads, "heads last"),
            "the channels were split into heads as (d heads); a head owns a block of d consecutive channels, "
            "(heads d)": _window_outputs(logits, values, heads, "(d h)"),
            "rows and columns are swapped: row r of softmax(Â) makes output slot r, Y = softmax(Â) V, not "
            "softmax(Â)ᵀ V": _window_outputs(logits, values, heads, "transposed"),
        }
        fb = judge_tensor(got, _window_outputs(logits, values, heads), known, what=what)
        if fb is not None:
            return fb
    return passed(f"{what} reshapes W_A's output to (heads, K², K²), takes a softmax of each row and multiplies "
                  "each head's values, as eq. (4).")
