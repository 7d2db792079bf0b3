"""The Part II summary's exercise checkers: each typical mistake gets its own message, the right
answer passes, a blank answer is "not attempted" without raising. The mistakes are the ones listed
above each checker in ``attncourse/exercises/hybrid_summary.py``."""

from __future__ import annotations

from torch import nn

import attncourse
from attncourse.cost import count_parameters
from attncourse.exercises import hybrid_summary as ex

from checker_tables import check_table as _check_table


def _ema(C, G=32):
    return count_parameters(attncourse.create("ema", C, factor=G))


def test_overtake():
    triplet = count_parameters(attncourse.create("triplet", 256))
    assert triplet == 300
    widths = [C for C in range(32, 1025, 32) if _ema(C) > triplet]
    assert widths[0] == 192 and _ema(160) == 270 < triplet < _ema(192) == 384
    assert next(C for C in range(8, 257, 8) if _ema(C, 8) > triplet) == 48
    _check_table(ex.check_overtake, 192, {
        "one step short": (160, "still fewer than Triplet's 300"),
        "one step too far": (224, "try c = C/32 one smaller"),
        "the table's width": (256, "the table skips some"),
        "c, not C": (6, "the channels per group"),
        "real solution": (169, "c ≈ 5.28); EMA needs"),
        "real solution, rounded": (170, "rounded up to C = 170"),
        "G = 8": (48, "G = 8, the protocol's choice"),
        "one map per conv": (128, "not 3(k² + 2)"),
        "k = 3": (96, "Triplet at k = 3"),
        "other": (200, "is not right."),
    })


def test_gam_below_conv():
    C = 256
    conv = count_parameters(nn.Conv2d(C, C, 3, bias=False))
    assert conv == 9 * C * C == 589_824
    gam = {r: count_parameters(attncourse.create("gam", C, reduction=r)) for r in range(1, 17)}
    assert min(r for r, n in gam.items() if n < conv) == 12
    assert (gam[11], gam[12]) == (589_916, 538_708)
    assert ex._first_r(C, conv, weights_only=True) == ex._first_r(C, conv + C) == 11   # the two slips that give 11
    _check_table(ex.check_gam_below_conv, 12, {
        "r = 11": (11, "92 more than the convolution's"),
        "powers of two": (16, "need not be a power of two"),
        "h, not r": (21, "hidden width"),
        "k = 3": (3, "3×3 convolutions"),
        "bottleneck": (86, "bottleneck's three convolutions"),
        "other": (8, "is not right."),
    })
