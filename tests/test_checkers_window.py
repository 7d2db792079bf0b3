"""The checkers of "Window attention": each typical mistake its own message, the right answer
passes, a blank answer is "not attempted" (the mistakes are listed above each checker)."""

from __future__ import annotations

import torch
from einops import rearrange

from attncourse.exercises import window as ex
from attncourse.local.window import WindowAttention2d

from checker_tables import check_table


def test_merge_windows():
    def right(windows, h, w, m):
        return rearrange(windows, "(b nh nw) (m1 m2) c -> b c (nh m1) (nw m2)", nh=h // m, nw=w // m, m1=m)

    def interleaved(windows, h, w, m):
        return rearrange(windows, "(b nh nw) (m1 m2) c -> b c (m1 nh) (m2 nw)", nh=h // m, nw=w // m, m1=m)

    def nw_nh(windows, h, w, m):
        return rearrange(windows, "(b nw nh) (m1 m2) c -> b c (nh m1) (nw m2)", nh=h // m, nw=w // m, m1=m)

    def transposed(windows, h, w, m):
        return rearrange(windows, "(b nh nw) (m2 m1) c -> b c (nh m1) (nw m2)", nh=h // m, nw=w // m, m1=m)

    def channels_last(windows, h, w, m):
        return rearrange(windows, "(b nh nw) (m1 m2) c -> b (nh m1) (nw m2) c", nh=h // m, nw=w // m, m1=m)

    check_table(ex.check_merge_windows, right, {
        "interleaved": (interleaved, "interleaved"),
        "nw nh": (nw_nh, "column by column"),
        "transposed": (transposed, "transposed"),
        "channels last": (channels_last, "channels-last"),
        "crash": (lambda windows, h, w, m: windows.view(h, w), "your code raised"),
        "other": (lambda windows, h, w, m: right(windows, h, w, m) * 2, "not rounding"),
    })


def test_merge_windows_inverts_the_modules_partition():
    """The exercise's layout is the module's: its windows, merged back, give the padded map."""
    x = torch.randn(2, 8, 6, 9)
    m = 3
    windows = rearrange(x, "b c (nh m1) (nw m2) -> (b nh nw) (m1 m2) c", m1=m, m2=m)
    torch.testing.assert_close(ex._merged(windows, 6, 9, m), x)


def test_official_index():
    def right(m):
        r, c = torch.arange(m).repeat_interleave(m), torch.arange(m).repeat(m)
        return (r[:, None] - r[None, :] + m - 1) * (2 * m - 1) + (c[:, None] - c[None, :] + m - 1)

    def key_minus_query(m):
        r, c = torch.arange(m).repeat_interleave(m), torch.arange(m).repeat(m)
        return (r[None, :] - r[:, None] + m - 1) * (2 * m - 1) + (c[None, :] - c[:, None] + m - 1)

    def row_m(m):
        r, c = torch.arange(m).repeat_interleave(m), torch.arange(m).repeat(m)
        return (r[:, None] - r[None, :] + m - 1) * m + (c[:, None] - c[None, :] + m - 1)

    def no_offset(m):
        r, c = torch.arange(m).repeat_interleave(m), torch.arange(m).repeat(m)
        return (r[:, None] - r[None, :]) * (2 * m - 1) + (c[:, None] - c[None, :])

    def swapped(m):
        r, c = torch.arange(m).repeat_interleave(m), torch.arange(m).repeat(m)
        return (c[:, None] - c[None, :] + m - 1) * (2 * m - 1) + (r[:, None] - r[None, :] + m - 1)

    check_table(ex.check_official_index, right, {
        "key - query": (key_minus_query, "key − query"),
        "row length M": (row_m, "row length"),
        "no offset": (no_offset, "negative"),
        "swapped": (swapped, "swapped"),
        "float": (lambda m: right(m).float(), "integer tensor"),
        "shape": (lambda m: right(m)[:, :2], "expected shape"),
        "other": (lambda m: right(m) + 1, "not rounding"),
    })


def test_official_index_matches_the_official_code_and_the_module():
    """The right answer is the official code's index (tests/test_window.py re-types it), and the
    module's (key − query) index read through the flipped table."""
    from test_window import official_index

    torch.testing.assert_close(ex._official_index(7), official_index(7))
    m = WindowAttention2d(32, window_size=4, heads=1)
    flipped = m.relative_bias.detach().flip(1, 2).flatten(1)[0]  # the official table, query − key
    torch.testing.assert_close(flipped[ex._official_index(4)], m.relative_bias.detach().flatten(1)[0][m.relative_index])


def test_shifted_mask():
    def right(n, m, s):
        return ex._shifted_mask(n, m, s)

    check_table(ex.check_shifted_mask, right, {
        "none": (lambda n, m, s: torch.zeros((n // m) ** 2, m * m, m * m, dtype=torch.bool), "nothing is masked"),
        "inverted": (lambda n, m, s: ~right(n, m, s), "inverted"),
        "rows only": (lambda n, m, s: ex._shifted_mask(n, m, s, "rows only"), "both axes"),
        "start": (lambda n, m, s: ex._shifted_mask(n, m, s, "start"), "wrong end"),
        "shape": (lambda n, m, s: right(n, m, s)[0], "expected a tensor of shape"),
        "crash": (lambda n, m, s: torch.arange(n).view(m, m), "your code raised"),
        "other": (lambda n, m, s: right(n, m, s).index_fill(2, torch.tensor([0]), True), "not rounding"),
    })
