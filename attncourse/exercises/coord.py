"""Checkers for the exercises of the Coordinate Attention chapter.

Above each checker, a comment lists the mistakes a learner typically makes on that exercise;
each one gets its own message (``tests/test_checkers_hybrid.py`` tries every one of them).
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from . import Feedback, check_number, compare_tensors, failed, passed, run_answer

__all__ = ["check_coord_parameters", "check_pool_strips", "check_split_bn_values"]


def _hidden(c: int, r: int = 32, least: int = 8) -> int:
    return max(least, c // r)


def _params(c: int, m: int, *, bias: bool = True, bn: bool = True) -> int:
    return c * m + 2 * m * c + ((m + 2 * c) if bias else 0) + (2 * m if bn else 0)


# Exercise 1, CoordAttention(128) with the defaults (r = 32, m = max(8, C // r)).
# Typical mistakes:
#   - m = C / r = 4, without the official floor of 8
#   - the batch norm forgotten / counted with its running statistics / counted over C channels
#   - the biases forgotten
#   - one output convolution shared by both directions instead of F_h and F_w
#   - SE's count with m hidden units (the neighbouring mechanism)
def check_coord_parameters(answer: Any) -> Feedback:
    """Exercise 1: parameters of CoordAttention(128) with the defaults (r = 32, m = max(8, C // r))."""
    c = 128
    m = _hidden(c)
    right = _params(c, m)
    return check_number(
        answer,
        right,
        what="Parameters of CoordAttention(128)",
        hints={
            _params(c, c // 32): "That uses m = C/r = 4. The official code takes m = max(8, C // r), so m = 8 here.",
            _params(c, m, bn=False): "The batch norm after F1 is missing: its γ and β add 2m.",
            right + 2 * m: "Batch norm's running mean and variance are buffers, not parameters: count only γ and β.",
            right - 2 * m + 2 * c: "The batch norm acts on F1's output, the m hidden channels, not on the C input "
            "channels: 2m parameters.",
            _params(c, m, bias=False): "The biases are missing: F1 has m, F_h and F_w have C each.",
            c * m + m + 2 * m + m * c + c: "F_h and F_w are two separate 1×1 convolutions (m → C), each with its own weights and bias.",
            2 * c * m + m + c: "That is an SE block with C/r = m hidden units; Coordinate Attention has two output convolutions and a batch norm.",
        },
    )


def _reference_strips(x: torch.Tensor) -> torch.Tensor:
    z_h = x.mean(dim=3)  # z^h: mean over the width, one number per row
    z_w = x.mean(dim=2)  # z^w: mean over the height, one number per column
    return torch.cat([z_h, z_w], dim=2)


# Exercise 2, pool_strips(x) = [z^h, z^w], shape (B, C, H + W).
# Typical mistakes:
#   - the two strips returned separately (a tuple)
#   - a trailing axis of size 1 kept: (B, C, H + W, 1)
#   - the column means first: the strips swapped, or each mean taken over the other axis
#   - sums instead of means / maxima instead of means
#   - SE's squeeze: one mean per channel over the whole map, (B, C)
def check_pool_strips(fn: Callable[..., Any]) -> Feedback:
    """Exercise 2: ``fn(x)`` maps (B, C, H, W) to the concatenated strip [z^h, z^w] of shape (B, C, H + W)."""
    what = "Your pool_strips"
    g = torch.Generator().manual_seed(5)
    for shape in [(2, 3, 4, 6), (1, 2, 5, 3)]:
        x = torch.randn(shape, generator=g, dtype=torch.float64)
        B, C, H, W = shape
        got, fb = run_answer(fn, x, what=what)
        if fb is not None:
            return fb
        expected = _reference_strips(x)
        if isinstance(got, (tuple, list)):
            return failed(f"{what}: you returned {len(got)} pieces; concatenate z^h and z^w along the position axis into one (B, C, H + W) tensor.")
        if isinstance(got, torch.Tensor) and tuple(got.shape) == (B, C, H + W, 1):
            return failed(f"{what}: the shape is (B, C, H + W, 1); drop the trailing 1, the exercise asks for (B, C, H + W).")
        if isinstance(got, torch.Tensor) and tuple(got.shape) == (B, C):
            return failed(f"{what}: that is SE's squeeze, one mean per channel over the whole map; keep one mean per "
                          "row (over the width) and one per column (over the height): (B, C, H + W).")
        if isinstance(got, torch.Tensor) and got.shape == expected.shape:
            got = got.detach().to(x.dtype)
            z_h, z_w = x.mean(3), x.mean(2)
            if torch.allclose(got, torch.cat([z_w, z_h], dim=2)):
                return failed(
                    f"{what}: the column means come first, either because the strips are swapped or because each "
                    "mean runs over the other axis. [z^h, z^w] starts with the H row means z^h_c(h) (a mean over "
                    "the width, the last axis), then the W column means (a mean over the height)."
                )
            if torch.allclose(got, torch.cat([x.sum(3), x.sum(2)], dim=2)):
                return failed(f"{what}: these are sums; z^h divides by W and z^w by H (a mean).")
            if torch.allclose(got, torch.cat([x.amax(3), x.amax(2)], dim=2)):
                return failed(f"{what}: these are maxima; z^h and z^w are means (average pooling along one axis).")
        bad = compare_tensors(got, expected, what=what)
        if bad is not None:
            return bad
    return passed(f"{what} computes the strip [z^h, z^w], on square and non-square inputs.")


# Exercise 3, a variant with two batch norms, one on f^h and one on f^w: over how many numbers does
# the one on f^w compute each hidden channel's statistics, in training, for input (4, 64, 7, 5)?
# Typical mistakes:
#   - B·(H + W) = 48: the shared batch norm of the module, not the f^w one
#   - B·H = 28: the rows, f^h's strip (the wrong axis)
#   - W = 5 or H = 7: one image, as if batch norm did not pool over the batch
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
            B * H * W: "That is the full H × W map; the batch norm comes after pooling and sees a strip of W columns per image.",
            B: "One value per image is what a batch norm on SE's pooled vector would see; f^w keeps W positions per image.",
            B * W * m: "Batch norm keeps separate statistics for each of the m hidden channels: count the values of one channel.",
        },
    )
