"""Checkers for the exercises of the Coordinate Attention chapter.

Above each checker, a comment lists the mistakes a learner typically makes on that exercise;
each one gets its own message (``tests/test_checkers_hybrid.py`` tries every one of them).
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from einops import reduce

from . import Feedback, check_number, compare_tensors, failed, match_mistake, passed, run_answer

__all__ = ["check_unshared_parameters", "check_band_strips", "check_split_bn_values"]


def _hidden(c: int, r: int = 32, least: int = 8) -> int:
    return max(least, c // r)


def _params(c: int, m: int, *, bias: bool = True, bn: int = 1, f1: int = 1, outs: int = 2) -> int:
    """``f1`` first convolutions C → m, ``bn`` batch norms over m, ``outs`` output convolutions m → C."""
    return f1 * (c * m + (m if bias else 0)) + bn * 2 * m + outs * (m * c + (c if bias else 0))


# Exercise 1, a CoordAttention(128) variant without the shared layer: each strip has its own F1
# (C → m, with a bias) and its own batch norm, then F_h / F_w as usual; r = 32, m = max(8, C // r).
# The chapter's coord_parameters counts the shared module, so calling it gives the first wrong answer.
# Typical mistakes:
#   - the shared module (coord_parameters(128)): one F1 and one BN
#   - a second F1 but one shared BN / a second BN but one shared F1
#   - m = C / r = 4, without the official floor of 8 / r forgotten (m = C)
#   - the batch norms forgotten / counted with their running statistics / counted over C channels
#   - the biases forgotten
#   - one output convolution shared by both directions instead of F_h and F_w
#   - SE's count with m hidden units (the neighbouring mechanism)
def check_unshared_parameters(answer: Any) -> Feedback:
    """Exercise 1: parameters of CoordAttention(128) with one F1 and one BN per strip (r = 32)."""
    c = 128
    m = _hidden(c)
    right = _params(c, m, bn=2, f1=2)
    return check_number(
        answer,
        right,
        what="Parameters of CoordAttention(128) with one F1 and one batch norm per strip",
        hints={
            _params(c, m): "That is CoordAttention(128) itself (the chapter's coord_parameters(128)), whose two "
            "strips share one F1 and one batch norm; in this variant each strip has its own: add Cm + m + 2m.",
            _params(c, m, f1=2): "Each strip has its own batch norm too: 2m more (γ and β for each of the m hidden "
            "channels).",
            _params(c, m, bn=2): "Each strip has its own F1 too: Cm weights and m biases more.",
            _params(c, c // 32, bn=2, f1=2): "That uses m = C/r = 4. The official code takes m = max(8, C // r), so "
            "m = 8 here.",
            _params(c, c, bn=2, f1=2): "That uses a hidden width of C, as if r were 1: m = max(8, C // 32) = 8.",
            _params(c, m, bn=0, f1=2): "The batch norms are missing: each has a γ and a β per hidden channel, 2m.",
            right + 4 * m: "Batch norm's running mean and variance are buffers, not parameters: count only γ and β.",
            right - 4 * m + 4 * c: "The batch norms act on F1's outputs, the m hidden channels, not on the C input "
            "channels: 2m parameters each.",
            _params(c, m, bias=False, bn=2, f1=2): "The biases are missing: each F1 has m, F_h and F_w have C each.",
            _params(c, m, bn=2, f1=2, outs=1): "F_h and F_w are two separate 1×1 convolutions (m → C), each with its "
            "own weights and bias.",
            2 * c * m + m + c: "That is an SE block with m hidden units; Coordinate Attention has a first layer per "
            "strip here, batch norms and two output convolutions.",
        },
    )


def _bands(x: torch.Tensor, s: int, how: str = "right") -> torch.Tensor:
    """[band means over s rows; band means over s columns], (B, C, H/s + W/s), with one mistake."""
    rows = "b c (s h) w -> b c h" if how == "interleaved" else "b c (h s) w -> b c h"
    cols = "b c h (s w) -> b c w" if how == "interleaved" else "b c h (w s) -> b c w"
    op = {"sums": "sum", "maxima": "max"}.get(how, "mean")
    if how == "subsampled":                                   # one row (column) per band
        z_h, z_w = x[:, :, ::s].mean(3), x[:, :, :, ::s].mean(2)
    else:
        z_h, z_w = reduce(x, rows, op, s=s), reduce(x, cols, op, s=s)
    return torch.cat([z_w, z_h] if how == "swapped" else [z_h, z_w], dim=2)


# Exercise 2, band_strips(x, s): the coordinate embedding on bands of s rows and s columns,
# (B, C, H/s + W/s): first each band of s consecutive rows averaged (over the band and the width),
# then each band of s consecutive columns. No cell of the chapter computes it. The tests use sizes
# that cannot stand for one another (B, C, H, W, s, H/s, W/s all different).
# Typical mistakes:
#   - the bands interleaved ('(s h)': rows i, i + H/s, ...) instead of s consecutive rows
#   - s ignored: one value per row and column, the module's strip (B, C, H + W)
#   - s bands of H/s rows instead of H/s bands of s rows
#   - one row (column) per band taken instead of the band's mean
#   - the column bands first
#   - sums / maxima instead of means
#   - the two strips returned separately / a trailing axis of size 1 / SE's squeeze (B, C)
def check_band_strips(fn: Callable[..., Any]) -> Feedback:
    """Exercise 2: ``fn(x, s)`` maps (B, C, H, W) to the band strip of shape (B, C, H/s + W/s)."""
    what = "Your band_strips"
    g = torch.Generator().manual_seed(5)
    for shape, s in [((3, 5, 8, 12), 2), ((4, 7, 10, 15), 5)]:
        B, C, H, W = shape
        x = torch.randn(shape, generator=g, dtype=torch.float64)
        got, fb = run_answer(fn, x.clone(), s, what=what)
        if fb is not None:
            return fb
        expected = _bands(x, s)
        n = H // s + W // s
        if isinstance(got, (tuple, list)):
            return failed(f"{what}: you returned {len(got)} pieces; concatenate the row bands and the column bands "
                          f"along the position axis into one (B, C, H/s + W/s) tensor.")
        if isinstance(got, torch.Tensor):
            shape_got = tuple(got.shape)
            if shape_got == (B, C, n, 1):
                return failed(f"{what}: the shape is (B, C, H/s + W/s, 1); drop the trailing 1: (B, C, H/s + W/s).")
            if shape_got == (B, C):
                return failed(f"{what}: that is SE's squeeze, one mean per channel over the whole map; keep one mean "
                              "per band of s rows and one per band of s columns: (B, C, H/s + W/s).")
            if shape_got == (B, C, H + W):
                return failed(f"{what}: the shape is (B, C, H + W): one value per row and per column, the module's "
                              f"strip; average each band of s = {s} consecutive rows (columns) into one value: "
                              f"(B, C, H/s + W/s) = {(B, C, n)}.")
            if shape_got == (B, C, 2 * s):
                return failed(f"{what}: the shape is {shape_got}: you made s bands of H/s rows each; the question asks "
                              f"for bands of s rows, H/s of them: reduce 'b c (h s) w -> b c h' with s = {s}.")
            if got.shape == expected.shape:
                got = got.detach().to(x.dtype)
                known = {
                    "the bands are interleaved: '(s h)' groups rows i, i + H/s, i + 2H/s, ...; a band is s "
                    "consecutive rows: '(h s)'": _bands(x, s, "interleaved"),
                    "you took one row (column) per band; a band's value is the mean over all its s rows (and the "
                    "width)": _bands(x, s, "subsampled"),
                    "the column bands come first; the strip starts with the H/s row bands (a mean over s rows and "
                    "the width), then the W/s column bands": _bands(x, s, "swapped"),
                    "these are sums; a band's value is a mean, over its s rows and the W columns":
                        _bands(x, s, "sums"),
                    "these are maxima; the coordinate embedding averages (average pooling over each band)":
                        _bands(x, s, "maxima"),
                }
                fb = match_mistake(got, known, what=what, expected=expected, end=".")
                if fb is not None:
                    return fb
        bad = compare_tensors(got, expected, what=what)
        if bad is not None:
            return bad
    return passed(f"{what} averages bands of s consecutive rows and columns into (B, C, H/s + W/s).")


# Exercise 3, a variant with two batch norms, one on f^h and one on f^w: over how many numbers does
# the one on f^w compute each hidden channel's statistics, in training, for input (4, 64, 7, 5)?
# Typical mistakes:
#   - B·(H + W) = 48: the shared batch norm of the module, not the f^w one
#   - B·H = 28: the rows, f^h's strip (the wrong axis)
#   - W = 5 or H = 7: one image, as if batch norm did not pool over the batch
#   - m·W = 40: one image, all hidden channels together
#   - B·H·W = 140: the full map; the batch norm comes after pooling
#   - B = 4: one number per image, as for a batch norm on SE's pooled vector
#   - B·W·m = 160: all hidden channels together; the statistics are per channel
def check_split_bn_values(answer: Any) -> Feedback:
    """Exercise 3: numbers per channel that a batch norm on f^w alone averages over, input (4, 64, 7, 5)."""
    B, H, W, m = 4, 7, 5, 8
    return check_number(
        answer,
        B * W,
        what="Values per channel seen by a batch norm on f^w",
        hints={
            B * (H + W): "That is the module's shared batch norm, which sees the whole strip; a batch norm on f^w "
            "alone sees only the column part of it.",
            B * H: "That is f^h's part of the strip (the H rows); f^w holds one value per column, W of them per image.",
            W: "That is one image; in training, batch norm pools its statistics over the whole batch.",
            H: "That is one image's rows; f^w holds the columns, and batch norm pools over the whole batch.",
            m * W: "That is one image's columns in all m hidden channels; batch norm keeps each channel's statistics "
            "apart, and pools them over the whole batch.",
            B * H * W: "That is the full H × W map; the batch norm comes after pooling and sees a strip of W columns per image.",
            B: "One value per image is what a batch norm on SE's pooled vector would see; f^w keeps W positions per image.",
            B * W * m: "Batch norm keeps separate statistics for each of the m hidden channels: count the values of one channel.",
        },
    )
