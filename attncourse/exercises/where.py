"""Checkers for the exercises of "Where: attention needs positions".

Above each checker, a comment lists the mistakes a learner typically makes on that exercise;
each one gets its own message (``tests/test_checkers_where.py`` tries every one of them).
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from einops import rearrange

from ..selfattn.mhsa import sine_position_2d
from . import Feedback, failed, judge_tensor, passed, run_answer

__all__ = ["check_permute_positions", "check_add_sine", "check_table_offset"]


def _permuted(x: torch.Tensor, perm: torch.Tensor, how: str = "right") -> torch.Tensor:
    b, c, h, w = x.shape
    if how == "(w h)":  # positions numbered column by column
        t = rearrange(x, "b c h w -> b c (w h)")[..., perm]
        return rearrange(t, "b c (w h) -> b c h w", h=h)
    t = rearrange(x, "b c h w -> b c (h w)")
    if how == "inverse":  # out[perm[n]] = x[n]
        out = torch.empty_like(t)
        out[..., perm] = t
        t = out
    else:
        t = t[..., perm]
    return rearrange(t, "b c (h w) -> b c h w", h=h)


# Exercise 1: permute_positions(x, perm) -> the map whose position n (in (h w) order) holds x's
# position perm[n], same shape (B, C, H, W).
# Typical mistakes:
#   - the inverse permutation (position perm[n] of the result gets x's position n)
#   - positions numbered column by column, (w h), instead of row by row
#   - the result left as tokens, (B, C, H*W) or (B, H*W, C)
#   - the map not reordered at all (x returned)
def check_permute_positions(fn: Callable[..., Any]) -> Feedback:
    """Exercise 1: reorder the positions of a feature map by a permutation of its H·W positions."""
    what = "permute_positions(x, perm)"
    gen = torch.Generator().manual_seed(0)
    b, c, h, w = 2, 3, 4, 5  # every axis a different size; H ≠ W
    x = torch.randn(b, c, h, w, generator=gen, dtype=torch.float64)
    perm = torch.randperm(h * w, generator=gen)
    got, fb = run_answer(fn, x.clone(), perm.clone(), what=what)
    if fb is not None:
        return fb
    expected = _permuted(x, perm)
    if isinstance(got, torch.Tensor) and tuple(got.shape) in {(b, c, h * w), (b, h * w, c)}:
        return failed(f"{what}: the result has shape {tuple(got.shape)}, tokens; rearrange it back to a map "
                      f"(B, C, H, W) = {(b, c, h, w)}.")
    known = {
        "that is the inverse permutation: position n of the result must hold x's position perm[n] "
        "(index the tokens with perm, do not assign into perm's positions)": _permuted(x, perm, "inverse"),
        "the positions are numbered row by row, (h w), as everywhere in the course; you numbered them "
        "column by column, (w h)": _permuted(x, perm, "(w h)"),
        "that is x unchanged: the positions were not reordered": x,
    }
    wrong = judge_tensor(got, expected, known, what=what)
    if wrong is not None:
        return wrong
    return passed(f"{what}: right on a random {b} × {c} × {h} × {w} map and a random permutation of its {h * w} positions.")


def _with_sine(x: torch.Tensor, how: str = "right") -> torch.Tensor:
    b, c, h, w = x.shape
    p = sine_position_2d(h, w, c, dtype=x.dtype)  # (H*W, C), rows in (h w) order
    if how == "reshape":
        return x + p.reshape(c, h, w)
    if how == "(w h)":
        return x + rearrange(p, "(w h) c -> c h w", h=h)
    if how == "swapped":  # the code of (row, column) = (x, y): the map's rows coded by the column half
        q = sine_position_2d(w, h, c, dtype=x.dtype)
        return x + rearrange(q, "(w h) c -> c h w", h=h)
    p = rearrange(p, "(h w) c -> c h w", h=h)
    if how == "replaced":
        return p.expand_as(x).clone()
    if how == "times":
        return x * p
    if how == "twice":
        return x + 2 * p
    return x + p


# Exercise 2: add_sine(x) -> x plus DETR's sine code, laid out as a map: the code of position
# (row y, column x) added to the C channels there. sine_position_2d(H, W, C) returns (H*W, C),
# rows in (h w) order.
# Typical mistakes:
#   - P.reshape(C, H, W): a reshape reads the (H*W, C) table in memory order and mixes positions
#     and channels; it needs a transpose, rearrange "(h w) c -> c h w"
#   - the table read as (w h) order
#   - sine_position_2d(W, H, C): the rows coded with the columns' half and the other way round
#   - the code replaces x instead of being added to it; multiplied with x; added twice
def check_add_sine(fn: Callable[..., Any]) -> Feedback:
    """Exercise 2: add the 2-D sine position code to a feature map."""
    what = "add_sine(x)"
    gen = torch.Generator().manual_seed(1)
    b, c, h, w = 3, 8, 5, 6  # C divisible by 4; no two axes of equal size
    x = torch.randn(b, c, h, w, generator=gen, dtype=torch.float64)
    got, fb = run_answer(fn, x.clone(), what=what)
    if fb is not None:
        return fb
    known = {
        "P.reshape(C, H, W) reads the (H*W, C) table in memory order and mixes positions with channels; "
        "move the channels first: rearrange(P, '(h w) c -> c h w', h=H)": _with_sine(x, "reshape"),
        "the table's rows are in (h w) order, row by row; you read them as (w h)": _with_sine(x, "(w h)"),
        "sine_position_2d takes (H, W, C): with (W, H, C) the rows get the columns' code": _with_sine(x, "swapped"),
        "the code must be added to x, not replace it": _with_sine(x, "replaced"),
        "the code is added to x, not multiplied with it": _with_sine(x, "times"),
        "the code was added twice": _with_sine(x, "twice"),
    }
    wrong = judge_tensor(got, _with_sine(x), known, what=what)
    if wrong is not None:
        return wrong
    return passed(f"{what}: right on a random {b} × {c} × {h} × {w} map.")


def _offsets(size: tuple[int, int], how: str = "right") -> list[tuple[int, int]]:
    h, w = size
    out = []
    for index in range((2 * h - 1) * (2 * w - 1)):
        row_len = {"W": w, "2H-1": 2 * h - 1}.get(how, 2 * w - 1)
        r, col = divmod(index, row_len)
        dy, dx = (r, col) if how == "raw" else (r - (h - 1), col - (w - 1))
        out.append({"swapped": (dx, dy), "query-key": (-dy, -dx)}.get(how, (dy, dx)))
    return out


# Exercise 3: table_offset(index, size) -> (dy, dx), the offset (key minus query, rows then
# columns) that entry ``index`` of a flattened (2H-1) x (2W-1) relative-bias table stands for.
# Typical mistakes:
#   - the table's row and column returned as they are, without subtracting H - 1 and W - 1
#   - a table row taken as W (or 2H - 1) entries long instead of 2W - 1
#   - (dx, dy) instead of (dy, dx)
#   - the sign flipped: query minus key
#   - not a pair of integers
def check_table_offset(fn: Callable[..., Any]) -> Feedback:
    """Exercise 3: the offset an entry of the relative position table stands for."""
    what = "table_offset(index, size)"
    size = (4, 6)  # H ≠ W, and W, 2H - 1, 2W - 1 all differ: a table of 7 × 11 entries
    expected = _offsets(size)
    got = []
    for index in range(len(expected)):
        out, fb = run_answer(fn, index, size, what=what)
        if fb is not None:
            return fb
        if isinstance(out, torch.Tensor):
            out = out.tolist()
        if not (isinstance(out, (tuple, list)) and len(out) == 2):
            return failed(f"{what}: expected a pair (dy, dx), got {out!r} for index {index}")
        try:
            got.append((int(out[0]), int(out[1])))
        except (TypeError, ValueError):
            return failed(f"{what}: expected two integers (dy, dx), got {out!r} for index {index}")
    if got == expected:
        return passed(f"{what}: right for every entry of the 7 × 11 table of a 4 × 6 map, "
                      f"(dy, dx) from {expected[0]} to {expected[-1]}.")
    hints = {
        "raw": "that is the entry's row and column in the table; the table starts at the offset (-(H-1), -(W-1)): "
               "subtract H - 1 and W - 1",
        "W": "a row of the table holds 2W - 1 entries, one per column offset from -(W-1) to W-1, not W",
        "2H-1": "a row of the table holds 2W - 1 entries (one per column offset), not 2H - 1",
        "swapped": "the pair is the other way round: (dy, dx), rows first",
        "query-key": "the sign is flipped: the offset is the key's position minus the query's",
    }
    for how, hint in hints.items():
        if got == _offsets(size, how):
            return failed(f"{what}: {hint}.")
    first = next(i for i, (g, e) in enumerate(zip(got, expected)) if g != e)
    return failed(f"{what}: index {first} of a {size[0]} × {size[1]} map's table is the offset {expected[first]}, "
                  f"you gave {got[first]}.")
