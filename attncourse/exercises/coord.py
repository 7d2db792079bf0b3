"""Checkers for the exercises of the Coordinate Attention chapter."""

from __future__ import annotations

from typing import Any, Callable

import torch

from . import Feedback, check_number, compare_tensors, failed, passed, run_answer

__all__ = ["check_coord_parameters", "check_pool_strips", "check_bn_values"]


def _hidden(c: int, r: int = 32, least: int = 8) -> int:
    return max(least, c // r)


def _params(c: int, m: int, *, bias: bool = True, bn: bool = True) -> int:
    return c * m + 2 * m * c + ((m + 2 * c) if bias else 0) + (2 * m if bn else 0)


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
            _params(c, m, bias=False): "The biases are missing: F1 has m, F_h and F_w have C each.",
            c * m + m + 2 * m + m * c + c: "F_h and F_w are two separate 1×1 convolutions (m → C), each with its own weights and bias.",
            2 * c * m + m + c: "That is an SE block with C/r = m hidden units; Coordinate Attention has two output convolutions and a batch norm.",
        },
    )


def _reference_strips(x: torch.Tensor) -> torch.Tensor:
    z_h = x.mean(dim=3)  # (4): mean over the width, one number per row
    z_w = x.mean(dim=2)  # (5): mean over the height, one number per column
    return torch.cat([z_h, z_w], dim=2)


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
        if isinstance(got, torch.Tensor) and got.shape == expected.shape:
            z_h, z_w = x.mean(3), x.mean(2)
            if torch.allclose(got.to(x.dtype), torch.cat([z_w, z_h], dim=2)):
                return failed(
                    f"{what}: the column means come first. [z^h, z^w] starts with the H row means "
                    "z^h_c(h) (mean over the width), then the W column means (mean over the height)."
                )
            if torch.allclose(got.to(x.dtype), torch.cat([x.sum(3), x.sum(2)], dim=2)):
                return failed(f"{what}: these are sums; eqs. (4) and (5) divide by W and by H (a mean).")
            if torch.allclose(got.to(x.dtype), torch.cat([x.amax(3), x.amax(2)], dim=2)):
                return failed(f"{what}: these are maxima; eqs. (4) and (5) are means.")
        bad = compare_tensors(got, expected, what=what)
        if bad is not None:
            return bad
    return passed(f"{what} computes [z^h, z^w] of eqs. (4) and (5), on square and non-square inputs.")


def check_bn_values(answer: Any) -> Feedback:
    """Exercise 3: numbers per channel that BN averages over, in training, for input (4, 64, 7, 5)."""
    B, H, W = 4, 7, 5
    return check_number(
        answer,
        B * (H + W),
        what="Values per channel seen by the batch norm",
        hints={
            B * H * W: "That is the full H × W map; the batch norm comes after pooling and sees the strip of H + W positions.",
            H + W: "That is one image; in training, batch norm pools its statistics over the whole batch.",
            B: "One value per image is what a batch norm inside SE's bottleneck would see; here each image gives H + W positions.",
            B * H: "That counts only the rows: the strip holds H row means and W column means.",
            B * W: "That counts only the columns: the strip holds H row means and W column means.",
        },
    )
