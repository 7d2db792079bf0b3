"""The checkers of "Where: attention needs positions": each typical mistake its own message, the
right answer passes, a blank answer is "not attempted" (the mistakes are listed above each checker)."""

from __future__ import annotations

import torch
from einops import rearrange

from attncourse.exercises import where as ex
from attncourse.selfattn.mhsa import MultiHeadSelfAttention2d, sine_position_2d

from checker_tables import check_table


def test_permute_positions():
    def right(x, perm):
        h = x.shape[2]
        return rearrange(rearrange(x, "b c h w -> b c (h w)")[..., perm], "b c (h w) -> b c h w", h=h)

    def inverse(x, perm):
        t = rearrange(x, "b c h w -> b c (h w)").clone()
        t[..., perm] = rearrange(x, "b c h w -> b c (h w)")
        return rearrange(t, "b c (h w) -> b c h w", h=x.shape[2])

    def columns(x, perm):
        return rearrange(rearrange(x, "b c h w -> b c (w h)")[..., perm], "b c (w h) -> b c h w", h=x.shape[2])

    check_table(ex.check_permute_positions, right, {
        "inverse": (inverse, "inverse permutation"),
        "(w h)": (columns, "column by column"),
        "unchanged": (lambda x, perm: x, "not reordered"),
        "tokens": (lambda x, perm: rearrange(x, "b c h w -> b c (h w)")[..., perm], "tokens"),
        "crash": (lambda x, perm: x @ perm, "your code raised"),
        "other": (lambda x, perm: right(x, perm) + 1, "not rounding"),
    })


def test_the_right_permutation_is_the_one_mhsa_commutes_with():
    """What the exercise leads to: MHSA without positions commutes with it, with the sine code not."""
    torch.manual_seed(0)
    x, perm = torch.randn(2, 8, 4, 5, dtype=torch.float64), torch.randperm(20)
    for position, equal in [(None, True), ("sine", False)]:
        m = MultiHeadSelfAttention2d(8, heads=2, position=position, identity_init=False).double()
        permuted = ex._permuted(m(x), perm)
        assert torch.allclose(m(ex._permuted(x, perm)), permuted) == equal


def test_add_sine():
    def right(x):
        _, c, h, w = x.shape
        return x + rearrange(sine_position_2d(h, w, c, dtype=x.dtype), "(h w) c -> c h w", h=h)

    def reshaped(x):
        _, c, h, w = x.shape
        return x + sine_position_2d(h, w, c, dtype=x.dtype).reshape(c, h, w)

    def read_wh(x):
        _, c, h, w = x.shape
        return x + rearrange(sine_position_2d(h, w, c, dtype=x.dtype), "(w h) c -> c h w", h=h)

    def swapped(x):
        _, c, h, w = x.shape
        return x + rearrange(sine_position_2d(w, h, c, dtype=x.dtype), "(w h) c -> c h w", h=h)

    check_table(ex.check_add_sine, right, {
        "reshape": (reshaped, "memory order"),
        "(w h)": (read_wh, "you read them as (w h)"),
        "swapped": (swapped, "(W, H, C)"),
        "replaced": (lambda x: right(x) - x, "not replace it"),
        "times": (lambda x: x * (right(x) - x), "not multiplied"),
        "twice": (lambda x: 2 * right(x) - x, "added twice"),
        "tokens": (lambda x: rearrange(right(x), "b c h w -> b (h w) c"), "shape"),
        "other": (lambda x: right(x) + 0.1, "not rounding"),
    })


def test_the_sine_code_added_to_the_map_is_mhsa_sine():
    """The exercise's map-level code is the module's: (x + P) W = x W + P W for queries and keys."""
    torch.manual_seed(0)
    x = torch.randn(2, 8, 5, 6, dtype=torch.float64)
    sine = MultiHeadSelfAttention2d(8, heads=2, position="sine", identity_init=False).double()
    plain = MultiHeadSelfAttention2d(8, heads=2, identity_init=False).double()
    plain.load_state_dict(sine.state_dict())
    torch.testing.assert_close(sine.attention(x), plain.attention(ex._with_sine(x)))


def test_table_offset():
    def right(index, size):
        h, w = size
        r, c = divmod(index, 2 * w - 1)
        return r - (h - 1), c - (w - 1)

    check_table(ex.check_table_offset, right, {
        "raw": (lambda i, s: divmod(i, 2 * s[1] - 1), "subtract H - 1"),
        "row of W": (lambda i, s: (i // s[1] - (s[0] - 1), i % s[1] - (s[1] - 1)), "not W"),
        "row of 2H-1": (lambda i, s: (i // (2 * s[0] - 1) - (s[0] - 1), i % (2 * s[0] - 1) - (s[1] - 1)), "not 2H - 1"),
        "swapped": (lambda i, s: right(i, s)[::-1], "other way round"),
        "sign": (lambda i, s: tuple(-v for v in right(i, s)), "sign is flipped"),
        "one number": (lambda i, s: i, "expected a pair"),
        "not ints": (lambda i, s: ("a", "b"), "two integers"),
        "other": (lambda i, s: (0, 0), "you gave"),
    })


def test_the_offsets_are_the_modules():
    """Entry (dy, dx) of MHSA's table is the bias the query at p reads for the key at p + (dy, dx)."""
    h, w = 4, 6
    m = MultiHeadSelfAttention2d(8, heads=2, position="relative", size=(h, w))
    for index, (dy, dx) in enumerate(ex._offsets((h, w))):
        q = (max(0, -dy), max(0, -dx))
        k = (q[0] + dy, q[1] + dx)
        assert int(m.relative_index[q[0] * w + q[1], k[0] * w + k[1]]) == index
