"""The checkers of "The MobileViT block": each typical mistake its own message, the right answer
passes, a blank answer is "not attempted" (the mistakes are listed above each checker)."""

from __future__ import annotations

import torch
from einops import rearrange

from attncourse.blocks.mobilevit import MobileViTBlock
from attncourse.exercises import mobilevit as ex

from checker_tables import check_table
from test_mobilevit import official_unfolding


def test_unfold_rect():
    def right(z, ph, pw):
        return rearrange(z, "b d (nh i) (nw j) -> (b i j) (nh nw) d", i=ph, j=pw)

    def pattern(p):
        return lambda z, ph, pw: rearrange(z, p, i=ph, j=pw)

    check_table(ex.check_unfold_rect, right, {
        "nw nh": (pattern("b d (nh i) (nw j) -> (b i j) (nw nh) d"), "patches are read column by column"),
        "j i": (pattern("b d (nh i) (nw j) -> (b j i) (nh nw) d"), "pixel positions are read column by column"),
        "batch inner": (pattern("b d (nh i) (nw j) -> (i j b) (nh nw) d"), "batch is inside"),
        "vit": (pattern("b d (nh i) (nw j) -> (b nh nw) (i j) d"), "ViT's layout"),
        "interleaved": (pattern("b d (i nh) (j nw) -> (b i j) (nh nw) d"), "(i nh)"),
        "swapped": (lambda z, ph, pw: right(z, pw, ph), "swapped"),
        "crash": (lambda z, ph, pw: z.view(ph, pw), "your code raised"),
        "other": (lambda z, ph, pw: right(z, ph, pw) * 2, "not rounding"),
    })


def test_unfold_rect_is_the_official_unfolding():
    """The exercise's answer is the official code's unfolding with patch_h != patch_w."""
    z = torch.randn(2, 5, 12, 18, dtype=torch.float64)
    torch.testing.assert_close(ex._unfold_rect(z, 3, 2), official_unfolding(z, 3, 2)[0])


def test_seen_mask():
    def right(h, w, p, y, x):
        r, c = torch.arange(h)[:, None], torch.arange(w)[None, :]
        return (r % p == y % p) & (c % p == x % p)

    check_table(ex.check_seen_mask, right, {
        "own patch": (lambda h, w, p, y, x: ex._seen(h, w, p, y, x, "own patch"), "its own patch"),
        "patch index": (lambda h, w, p, y, x: ex._seen(h, w, p, y, x, "patch index"), "patch's index"),
        "everything": (lambda h, w, p, y, x: ex._seen(h, w, p, y, x, "everything"), "not every pixel"),
        "rows only": (lambda h, w, p, y, x: ex._seen(h, w, p, y, x, "rows only"), "column must match"),
        "itself": (lambda h, w, p, y, x: ex._seen(h, w, p, y, x, "itself"), "not with itself only"),
        "shape": (lambda h, w, p, y, x: right(h, w, p, y, x)[0], "expected a tensor of shape"),
        "crash": (lambda h, w, p, y, x: torch.arange(h).view(w), "your code raised"),
        "other": (lambda h, w, p, y, x: right(h, w, p, y, x).index_fill(0, torch.tensor([0]), True), "not rounding"),
    })


def test_seen_mask_is_what_the_module_does():
    m = MobileViTBlock(2, dim=4, heads=2, patch=3, depth=1).double().eval()
    z = torch.randn(1, 4, 9, 12, dtype=torch.float64, requires_grad=True)
    (m.global_rep(z)[0, :, 4, 7] * torch.arange(1.0, 5.0)).sum().backward()  # not .sum(): the final LN's outputs sum to 0
    assert torch.equal(z.grad[0].abs().sum(0) > 0, ex._seen(9, 12, 3, 4, 7))


def test_attention_pairs():
    right = ex.attention_pairs(12, 18, 2, 2, 3)
    assert right == 69_984
    check_table(ex.check_attention_pairs, right, {
        "one head": (right // 2, "one head"),
        "one layer": (right // 3, "one layer"),
        "no P": (right // 4, "once per pixel position"),
        "all pixels": (216 * 216 * 6, "all H·W pixels"),
        "inside patches": (54 * 16 * 6, "inside each patch"),
        "linear": (4 * 54 * 6, "pairs"),
        "text": ("many", "expected a number"),
        "other": (right + 1, "is not right"),
    })


def test_attention_pairs_is_what_the_module_computes():
    m = MobileViTBlock(64, dim=96, depth=3, heads=2).eval()
    a = m.attention(torch.randn(1, 64, 12, 18))
    assert a.numel() == ex.attention_pairs(12, 18, 2, 2, 3)
