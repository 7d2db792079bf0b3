"""Checkers for the exercises of "The MobileViT block: a transformer across patches".

Above each checker, a comment lists the mistakes a learner typically makes on that exercise;
each one gets its own message (``tests/test_checkers_mobilevit.py`` tries every one of them).
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from einops import rearrange

from . import Feedback, check_number, failed, judge_tensor, passed, run_answer

__all__ = ["check_unfold_rect", "check_seen_mask", "check_attention_pairs", "attention_pairs"]


def _unfold_rect(z: torch.Tensor, ph: int, pw: int, how: str = "right") -> torch.Tensor:
    pattern = {
        "right": "b d (nh i) (nw j) -> (b i j) (nh nw) d",
        "patches (nw nh)": "b d (nh i) (nw j) -> (b i j) (nw nh) d",
        "positions (j i)": "b d (nh i) (nw j) -> (b j i) (nh nw) d",
        "batch inner": "b d (nh i) (nw j) -> (i j b) (nh nw) d",
        "vit tokens": "b d (nh i) (nw j) -> (b nh nw) (i j) d",
        "interleaved": "b d (i nh) (j nw) -> (b i j) (nh nw) d",
    }[how]
    return rearrange(z, pattern, i=ph, j=pw)


# Exercise 1: unfold_rect(z, ph, pw): (B, d, H, W) -> (B·P, N, d) with patches of ph rows and pw
# columns (the official code's patch_h, patch_w), pixel positions (i j) row-major, batch outer,
# patches (nh nw) row-major.
# Typical mistakes:
#   - the patches read column by column, (nw nh)
#   - the pixel positions read column by column, (j i)
#   - the batch inside the positions, (i j b) instead of (b i j)
#   - ViT's layout: one sequence per patch, of its P pixels (the transpose of MobileViT's)
#   - (i nh) instead of (nh i): strided "patches" of pixels far apart
#   - ph and pw swapped (a patch of pw rows and ph columns)
def check_unfold_rect(fn: Callable[..., Any]) -> Feedback:
    """Exercise 1: unfold a map into MobileViT's sequences with rectangular patches."""
    what = "unfold_rect(z, ph, pw)"
    b, d, ph, pw, nh, nw = 2, 5, 3, 2, 4, 9  # every axis a different size (H = 12, W = 18; both divide by 2 and 3)
    z = torch.randn(b, d, nh * ph, nw * pw, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    got, fb = run_answer(fn, z.clone(), ph, pw, what=what)
    if fb is not None:
        return fb
    expected = _unfold_rect(z, ph, pw)
    known = {
        "ph and pw are swapped: a patch has ph rows (the H axis) and pw columns": _unfold_rect(z, pw, ph),
        "the patches are read column by column: N runs over (nh nw), row by row": _unfold_rect(z, ph, pw, "patches (nw nh)"),
        "the pixel positions are read column by column: P runs over (i j), the row inside the patch first": _unfold_rect(
            z, ph, pw, "positions (j i)"),
        "the batch is inside the positions: the official code's B·P axis is (b i j), batch outer": _unfold_rect(
            z, ph, pw, "batch inner"),
        "that is ViT's layout, one sequence per patch of its P pixels; MobileViT makes one sequence per pixel "
        "position, of its N patches": _unfold_rect(z, ph, pw, "vit tokens"),
        "a map row is (nh i), the patch's row then the row inside it; (i nh) gathers pixels that are far apart": _unfold_rect(
            z, ph, pw, "interleaved"),
    }
    wrong = judge_tensor(got, expected, known, what=what)
    if wrong is not None:
        return wrong
    return passed(f"{what}: right; {b * ph * pw} sequences of {nh * nw} patches of width {d} "
                  f"({ph} × {pw} patches on a {nh * ph} × {nw * pw} map).")


def _seen(h: int, w: int, p: int, y: int, x: int, how: str = "right") -> torch.Tensor:
    r, c = torch.arange(h)[:, None], torch.arange(w)[None, :]
    if how == "own patch":
        return (r // p == y // p) & (c // p == x // p)
    if how == "patch index":
        return (r % p == (y // p) % p) & (c % p == (x // p) % p)
    if how == "everything":
        return torch.ones(h, w, dtype=torch.bool)
    if how == "rows only":
        return (r % p == y % p).expand(h, w)
    if how == "itself":
        return (r == y) & (c == x)
    return (r % p == y % p) & (c % p == x % p)


# Exercise 2: seen_mask(h, w, p, y, x) -> (h, w) bool: the pixels of X_L that the transformer part's
# output at pixel (y, x) depends on (h, w multiples of p).
# Typical mistakes:
#   - the pixels of its own patch (ViT's intuition: tokens are patches, attention mixes inside them)
#   - the patch's index taken for the pixel position, (y // p, x // p) instead of (y % p, x % p)
#   - every pixel (attention is global, but only across patches, per pixel position)
#   - only the row condition (the same row position, any column)
#   - only the pixel itself
def check_seen_mask(fn: Callable[..., Any]) -> Feedback:
    """Exercise 2: which pixels a pixel sees through the transformer across patches."""
    what = "seen_mask(h, w, p, y, x)"
    h, w, p, y, x = 9, 12, 3, 4, 7
    got, fb = run_answer(fn, h, w, p, y, x, what=what)
    if fb is not None:
        return fb
    if not isinstance(got, torch.Tensor) or tuple(got.shape) != (h, w):
        shape = tuple(got.shape) if isinstance(got, torch.Tensor) else type(got).__name__
        return failed(f"{what}: expected a tensor of shape (h, w) = {(h, w)}, got {shape}.")
    got = got.bool().double()
    known = {
        "that is its own patch, ViT's picture; in MobileViT the sequence runs across patches, one pixel "
        "position of each": _seen(h, w, p, y, x, "own patch").double(),
        "that uses the patch's index (y // p, x // p); the pixel position inside the patch is (y % p, x % p)": _seen(
            h, w, p, y, x, "patch index").double(),
        "not every pixel: attention is global only across patches, and only between pixels at the same position "
        "inside their patches": _seen(h, w, p, y, x, "everything").double(),
        "the column must match too: the same position inside the patch means the same row and the same column "
        "modulo p": _seen(h, w, p, y, x, "rows only").double(),
        "attention mixes the pixel with the others at its position in every patch, not with itself only": _seen(
            h, w, p, y, x, "itself").double(),
    }
    expected = _seen(h, w, p, y, x).double()
    wrong = judge_tensor(got, expected, known, what=what, atol=0, rtol=0)
    if wrong is not None:
        return wrong
    return passed(f"{what}: right; pixel ({y}, {x}) of a {h} × {w} map with {p} × {p} patches sees "
                  f"{int(expected.sum())} pixels, one per patch.")


def attention_pairs(h: int, w: int, p: int, heads: int, layers: int) -> int:
    """Query-key pairs (attention weights) a MobileViT block computes per image: P·N² per head and layer."""
    n = (-(-h // p)) * (-(-w // p))
    return p * p * n * n * heads * layers


# Exercise 3: the attention weights per image of MobileViTBlock(64, dim=96, depth=3, heads=2) (patch 2)
# on a 12 × 18 map.
# Typical mistakes: P·N² forgotten factors (heads, layers, the P sequences), attention over all pixels
# ((HW)², ViT on pixels), a sequence length of P (ViT's tokens inside a patch: N·P²), linear in N.
def check_attention_pairs(answer: Any) -> Feedback:
    """Exercise 3: the number of attention weights the block computes per image."""
    h, w, p, heads, layers = 12, 18, 2, 2, 3
    right = attention_pairs(h, w, p, heads, layers)
    n, big_p, hw = (h // p) * (w // p), p * p, h * w
    hints = {
        right // heads: "that is one head; each of the 2 heads has its own weights.",
        right // layers: "that is one layer; each of the 3 layers computes its own.",
        right // big_p: "the transformer runs P = 4 times, once per pixel position: P sequences of N patches.",
        hw * hw * heads * layers: "that is attention over all H·W pixels (a ViT with one token per pixel); "
        "MobileViT's sequences hold only the N patches at one pixel position.",
        n * big_p * big_p * heads * layers: "that is attention inside each patch (sequences of P pixels, one per "
        "patch); MobileViT attends across patches.",
        big_p * n * heads * layers: "attention weights are pairs: N² per sequence, not N.",
    }
    assert len(set(hints)) == len(hints) and right not in hints
    return check_number(answer, right, what="attention weights per image", hints=hints)
