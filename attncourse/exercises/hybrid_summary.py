"""Checkers for the exercises of "Part II side by side".

Above each checker, a comment lists the mistakes a learner typically makes on that exercise;
each one gets its own message (``tests/test_checkers_hybrid_summary.py`` tries every one of them).
"""

from __future__ import annotations

from typing import Any

from . import Feedback, check_number

__all__ = ["check_overtake", "check_gam_below_conv"]


def _ema(C: int, G: int = 32) -> int:
    c = C // G
    return 10 * c * c + 4 * c


def _triplet(k: int = 7, maps: int = 2) -> int:
    return 3 * (maps * k * k + 2)


def _first_width(budget: int, G: int = 32) -> int:
    """The smallest C (a multiple of G) at which EMA has more parameters than ``budget``."""
    return next(G * c for c in range(1, 10_000) if _ema(G * c, G) > budget)


# Exercise 1, the smallest width C that EMA (G = 32) accepts at which it has more parameters than Triplet (k = 7,
# 300 at any width): c = C/32 = 6, 384 > 300 (c = 5 gives 270): C = 192.
# Typical mistakes:
#   - one step short: C = 160 (c = 5, 270 < 300)
#   - one step too far, C = 224, or the table's next printed width, C = 256
#   - c = C/G answered instead of C
#   - the real solution of 10c² + 4c = 300 (c ≈ 5.28, C ≈ 169) without rounding to a width EMA accepts
#   - the protocol's G = 8 instead of the default 32: C = 48
#   - Triplet counted with one input map per convolution (3(k² + 2) = 153): C = 128
#   - Triplet with k = 3 (60): C = 96
def check_overtake(answer: Any) -> Feedback:
    """Exercise 1: the smallest C (divisible by 32) at which EMA has more parameters than Triplet."""
    right = _first_width(_triplet())
    return check_number(
        answer,
        right,
        what="Smallest width at which EMA costs more than Triplet",
        hints={
            right - 32: "At C = 160, c = C/32 = 5 and EMA has 10·25 + 4·5 = 270 parameters, still fewer than "
            "Triplet's 300.",
            right + 32: "EMA costs more than Triplet already at a smaller width: try c = C/32 one smaller.",
            256: "That is the first width of the table above where EMA is above Triplet; the question asks for the "
            "smallest width EMA accepts (a multiple of 32), and the table skips some.",
            right // 32: "That is c = C/G, the channels per group; the question asks for the width C = 32c.",
            169: "That solves 10c² + 4c = 300 as if c could be any number (c ≈ 5.28); EMA needs C divisible by "
            "G = 32, so c is a whole number.",
            170: "That solves 10c² + 4c = 300 as if c could be any number (c ≈ 5.28, rounded up to C = 170); EMA "
            "needs C divisible by G = 32, so c is a whole number.",
            _first_width(_triplet(), 8): "That is with G = 8, the protocol's choice for the small network; the "
            "question is about EMA's default, G = 32.",
            _first_width(_triplet(maps=1)): "Triplet's convolutions read the Z-pool's two maps: 3(2k² + 2) = 300, "
            "not 3(k² + 2).",
            _first_width(_triplet(k=3)): "That compares with Triplet at k = 3 (60 parameters); its default, and "
            "this page's, is k = 7 (300).",
        },
    )


def _gam(C: int, r: int, k: int = 7) -> int:
    h = C // r
    return (2 + 2 * k * k) * C * h + 4 * h + 4 * C


def _first_r(C: int, budget: int, k: int = 7, weights_only: bool = False) -> int:
    count = (lambda r: (2 + 2 * k * k) * C * (C // r)) if weights_only else (lambda r: _gam(C, r, k))
    return next(r for r in range(1, C + 1) if count(r) < budget)


# Exercise 2, the smallest r at which GAM(256, reduction=r) (k = 7) has fewer parameters than a 3×3 convolution
# C -> C without bias (9C² = 589,824): r = 12 (h = 21: 538,708); at r = 11, h = 23: 589,916, 92 too many.
# Typical mistakes:
#   - r = 11: GAM's biases and batch norms left out (100·C·h only), or the convolution given a bias (9C² + C)
#   - r = 16: only powers of two tried
#   - the hidden width h = C/r answered instead of r (21)
#   - GAM with 3×3 convolutions (k = 3): r = 3
#   - compared with the ResNet-50 bottleneck's three convolutions (17C²/16) instead of one 3×3 convolution: r = 86
def check_gam_below_conv(answer: Any) -> Feedback:
    """Exercise 2: the smallest r with GAM(256, reduction=r) below a 3×3 convolution 256 -> 256 without bias."""
    C = 256
    conv = 9 * C * C
    right = _first_r(C, conv)
    return check_number(
        answer,
        right,
        what="Smallest r at which GAM(256) is below a 3×3 convolution",
        hints={
            right - 1: f"At r = {right - 1}, h = C // r = {C // (right - 1)} and GAM has {_gam(C, right - 1):,} "
            f"parameters, {_gam(C, right - 1) - conv} more than the convolution's 9C² = {conv:,}: count GAM's "
            "biases and batch norms (4h + 4C), and give the 3×3 convolution no bias.",
            16: "GAM is already below the convolution at a smaller r; r need not be a power of two.",
            C // right: "That is the hidden width h = C // r; the question asks for r.",
            _first_r(C, conv, k=3): "That is GAM with 3×3 convolutions; its two convolutions are 7×7.",
            _first_r(C, 17 * C * C // 16): "That compares with the ResNet-50 bottleneck's three convolutions "
            "(17C²/16); the question compares with one 3×3 convolution C → C (9C²).",
        },
    )
