"""Checkers for the exercises of "Window attention: Swin's windows, shifts and relative bias".

Above each checker, a comment lists the mistakes a learner typically makes on that exercise;
each one gets its own message (``tests/test_checkers_window.py`` tries every one of them).
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from einops import rearrange

from ..local.window import WindowAttention2d
from . import Feedback, failed, judge_tensor, passed, run_answer

__all__ = ["check_merge_windows", "check_official_index", "check_shifted_mask"]


def _merged(windows: torch.Tensor, h: int, w: int, m: int, how: str = "right") -> torch.Tensor:
    nh, nw = h // m, w // m
    pattern = {
        "right": "(b nh nw) (m1 m2) c -> b c (nh m1) (nw m2)",
        "interleaved": "(b nh nw) (m1 m2) c -> b c (m1 nh) (m2 nw)",
        "windows (nw nh)": "(b nw nh) (m1 m2) c -> b c (nh m1) (nw m2)",
        "tokens (m2 m1)": "(b nh nw) (m2 m1) c -> b c (nh m1) (nw m2)",
        "channels last": "(b nh nw) (m1 m2) c -> b (nh m1) (nw m2) c",
    }[how]
    return rearrange(windows, pattern, nh=nh, nw=nw, m1=m, m2=m)


# Exercise 1: merge_windows(windows, h, w, m) -> (B, C, H, W), the inverse of the chapter's
# partition "b c (nh m1) (nw m2) -> (b nh nw) (m1 m2) c".
# Typical mistakes:
#   - (m1 nh) instead of (nh m1): rows of different windows interleaved
#   - the windows read column by column, (nw nh)
#   - the tokens of a window read column by column, (m2 m1): every window transposed
#   - the result left channels-last, (B, H, W, C)
def check_merge_windows(fn: Callable[..., Any]) -> Feedback:
    """Exercise 1: put the windows back into a map."""
    what = "merge_windows(windows, h, w, m)"
    b, c, m, nh, nw = 2, 5, 3, 4, 7  # every axis a different size
    h, w = nh * m, nw * m
    x = torch.randn(b, c, h, w, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    windows = rearrange(x, "b c (nh m1) (nw m2) -> (b nh nw) (m1 m2) c", m1=m, m2=m)
    got, fb = run_answer(fn, windows.clone(), h, w, m, what=what)
    if fb is not None:
        return fb
    if isinstance(got, torch.Tensor) and tuple(got.shape) == (b, h, w, c):
        return failed(f"{what}: the result is channels-last, {tuple(got.shape)}; the course's maps are "
                      f"(B, C, H, W) = {(b, c, h, w)}.")
    known = {
        "rows of different windows are interleaved: a map row is (nh m1), the window's row then the row "
        "inside it, not (m1 nh)": _merged(windows, h, w, m, "interleaved"),
        "the windows are read column by column: the partition numbers them (nh nw), row by row": _merged(
            windows, h, w, m, "windows (nw nh)"),
        "every window is transposed: its M² tokens are (m1 m2), row by row, not (m2 m1)": _merged(
            windows, h, w, m, "tokens (m2 m1)"),
    }
    wrong = judge_tensor(got, x, known, what=what)
    if wrong is not None:
        return wrong
    return passed(f"{what}: right; {b * nh * nw} windows of {m} × {m} back into a {b} × {c} × {h} × {w} map.")


def _official_index(m: int, how: str = "right") -> torch.Tensor:
    r = torch.arange(m).repeat_interleave(m)  # the row of each of the M² positions, (m1 m2) order
    col = torch.arange(m).repeat(m)
    dy, dx = r[:, None] - r[None, :], col[:, None] - col[None, :]  # query - key
    if how == "key - query":
        dy, dx = -dy, -dx
    if how == "swapped":
        dy, dx = dx, dy
    if how == "no offset":
        return dy * (2 * m - 1) + dx
    if how == "row length M":
        return (dy + m - 1) * m + (dx + m - 1)
    return (dy + m - 1) * (2 * m - 1) + (dx + m - 1)


# Exercise 2: official_index(m) -> the (M², M²) long tensor of the official relative_position_index:
# entry (query, key) = (Δy + M − 1)(2M − 1) + (Δx + M − 1), with Δ = query − key.
# Typical mistakes:
#   - key − query, the module's convention (the table read flipped)
#   - a row length of M instead of 2M − 1 (offsets run from −(M − 1) to M − 1)
#   - the offsets not shifted by M − 1 (negative indices, which Python reads from the end)
#   - Δx first and Δy second
def check_official_index(fn: Callable[..., Any]) -> Feedback:
    """Exercise 2: the official Swin relative position index."""
    what = "official_index(m)"
    m = 3
    got, fb = run_answer(fn, m, what=what)
    if fb is not None:
        return fb
    if isinstance(got, torch.Tensor) and got.is_floating_point():
        return failed(f"{what}: the index must be an integer tensor (it indexes the table), got {got.dtype}.")
    if isinstance(got, torch.Tensor) and tuple(got.shape) != (m * m, m * m):
        return failed(f"{what}: expected shape (M², M²) = {(m * m, m * m)} for M = {m}, got {tuple(got.shape)}.")
    as_float = got.double() if isinstance(got, torch.Tensor) else got
    known = {
        "that is key − query, the module's convention; the official code subtracts the key's coordinates from "
        "the query's, query − key": _official_index(m, "key - query").double(),
        "the row length must be 2M − 1, the number of offsets from −(M − 1) to M − 1, not M": _official_index(
            m, "row length M").double(),
        "the offsets must be shifted by M − 1 first: as it is, some indices are negative": _official_index(
            m, "no offset").double(),
        "Δy and Δx are swapped: the official table is row-major in (Δy, Δx), Δy first": _official_index(
            m, "swapped").double(),
    }
    wrong = judge_tensor(as_float, _official_index(m).double(), known, what=what, atol=0, rtol=0)
    if wrong is not None:
        return wrong
    return passed(f"{what}: right for M = {m}: {m * m} × {m * m} entries into a table of {(2 * m - 1) ** 2}.")


def _shifted_mask(n: int, m: int, s: int, how: str = "right") -> torch.Tensor:
    r = torch.arange(n)
    if how == "start":  # the regions at the start of the map, as if rolled by +s
        reg = (r >= s).long() + (r >= m).long()
    else:
        reg = (r >= n - m).long() + (r >= n - s).long()
    region = reg[:, None] * 3 + (reg[None, :] if how != "rows only" else 0 * reg[None, :])
    windows = rearrange(region, "(nh m1) (nw m2) -> (nh nw) (m1 m2)", m1=m, m2=m)
    masked = windows[:, None, :] != windows[:, :, None]
    return ~masked if how == "inverted" else masked


# Exercise 3: shifted_mask(n, m, s) -> (nW, M², M²) bool, True where a query (row) may NOT attend to a
# key (column) of its window of the n × n map rolled by (−s, −s).
# Typical mistakes:
#   - no mask (all False): the windows that wrap round mix far positions
#   - True where the regions are the same (the mask inverted)
#   - the regions labelled by rows only (the columns' wrap ignored)
#   - the regions at the start of the map (the roll's direction reversed)
def check_shifted_mask(fn: Callable[..., Any]) -> Feedback:
    """Exercise 3: the attention mask of shifted windows."""
    what = "shifted_mask(n, m, s)"
    n, m, s = 12, 4, 2
    got, fb = run_answer(fn, n, m, s, what=what)
    if fb is not None:
        return fb
    nw = (n // m) ** 2
    if not isinstance(got, torch.Tensor) or tuple(got.shape) != (nw, m * m, m * m):
        shape = tuple(got.shape) if isinstance(got, torch.Tensor) else type(got).__name__
        return failed(f"{what}: expected a tensor of shape (nW, M², M²) = {(nw, m * m, m * m)}, got {shape}.")
    got = got.bool().double()
    expected = _shifted_mask(n, m, s).double()
    module = (WindowAttention2d(32, window_size=m, heads=1, shift=s)._mask(n, n, n // m, n // m, torch.device("cpu"))[:, 0] < 0)
    assert torch.equal(module.double(), expected)  # the checker's answer is the module's mask
    if not got.any():
        return failed(f"{what}: nothing is masked; the windows that wrap round the border hold positions that "
                      "are not neighbours in the image, and they must not attend to each other.")
    known = {
        "that is the mask inverted: True must mark the pairs in different regions (those masked)": _shifted_mask(
            n, m, s, "inverted").double(),
        "the regions need both axes: a key in another column region is masked too (label = 3 · row "
        "region + column region)": _shifted_mask(n, m, s, "rows only").double(),
        "the regions are at the wrong end: rolling by −s brings the first s rows to the end, so the last "
        "M and the last s rows are the boundaries": _shifted_mask(n, m, s, "start").double(),
    }
    wrong = judge_tensor(got, expected, known, what=what, atol=0, rtol=0)
    if wrong is not None:
        return wrong
    return passed(f"{what}: right for a {n} × {n} map, M = {m}, s = {s}: {int(expected.sum())} of "
                  f"{nw * m**4} query-key pairs masked.")

