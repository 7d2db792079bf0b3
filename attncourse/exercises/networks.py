"""Checkers for the exercises of "Which module should I use?".

Above each checker, a comment lists the mistakes a learner typically makes on that exercise;
each one gets its own message (``tests/test_checkers_networks.py`` tries every one of them).
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

from . import Feedback, failed, passed, run_answer

__all__ = ["check_se_parameters", "check_cheapest_helpful", "se_parameters_reference", "cheapest_helpful_reference"]

# ResNet-50's stages: output channels and blocks
_WIDTHS, _BLOCKS = (256, 512, 1024, 2048), (3, 4, 6, 3)


def se_parameters_reference(widths: Sequence[int], blocks: Sequence[int], r: int) -> int:
    return sum(n * (2 * (c * (c // r)) + c // r + c) for c, n in zip(widths, blocks))


# Exercise 1: se_parameters(widths, blocks, r) -> the parameters SE adds to a ResNet with its module
# after every block: per block two linear layers C -> C/r -> C with their biases (the released
# code's), times the number of blocks of each stage.
# Typical mistakes:
#   - the biases left out (the paper's formula, 2 C^2 / r per block)
#   - one block per stage (the block counts forgotten)
#   - the bottleneck's inner width (C / 4) instead of its output width C
#   - only one of the two layers
def check_se_parameters(fn: Callable[..., Any]) -> Feedback:
    """Exercise 1: the parameters SE adds to ResNet-50."""
    what = "se_parameters(widths, blocks, r)"
    for widths, blocks, r in (((16, 32, 64), (3, 3, 3), 4), (_WIDTHS, _BLOCKS, 16)):
        got, fb = run_answer(fn, list(widths), list(blocks), r, what=what)
        if fb is not None:
            return fb
        try:
            value = int(got)
        except (TypeError, ValueError):
            return failed(f"{what}: expected one whole number of parameters, got {got!r}.")
        want = se_parameters_reference(widths, blocks, r)
        if value == want:
            continue
        hidden = [c // r for c in widths]
        known = {
            sum(n * 2 * c * h for c, n, h in zip(widths, blocks, hidden)):
                "that is the paper's 2C²/r per block, without the biases: the released SE (and this course's) "
                "linear layers have biases, C/r in the first and C in the second",
            sum(2 * c * h + h + c for c, h in zip(widths, hidden)):
                "that counts one block per stage: every block of a stage gets its own SE (multiply by the blocks)",
            se_parameters_reference([c // 4 for c in widths], blocks, r):
                "that is SE on the bottleneck's inner width C/4; it sits after the last 1x1 convolution, on the "
                "block's output width C",
            sum(n * (c * h + h) for c, n, h in zip(widths, blocks, hidden)):
                "that is only the first layer (C -> C/r); the second (C/r -> C, with its bias) has as many weights",
        }
        for wrong, hint in known.items():
            if value == wrong:
                return failed(f"{what}: {hint}.")
        return failed(f"{what}: expected {want:,} for widths {widths}, blocks {blocks}, r = {r}; got {value:,}.")
    want = se_parameters_reference(_WIDTHS, _BLOCKS, 16)
    return passed(f"{what}: right: {want:,} parameters in ResNet-50 (r = 16), about 10 % of its 25.6 M.")


def cheapest_helpful_reference(rows: dict[str, tuple[float, int, int]], cost: dict[str, float]) -> str | None:
    ok = [m for m, (gain, ahead, seeds) in rows.items() if gain > 0 and ahead >= math.ceil(0.8 * seeds)]
    return min(ok, key=cost.__getitem__) if ok else None


# Exercise 2: cheapest_helpful(rows, cost) -> the module that helped (a higher mean than the reference
# and ahead in at least 80 % of the seeds) and costs least (its time ratio), or None when none helped.
# rows: module -> (gain, seeds ahead, seeds); cost: module -> time ratio.
# Typical mistakes:
#   - the seeds' rule left out (a higher mean is enough)
#   - the largest gain instead of the lowest cost
#   - the cheapest module overall (helped or not)
#   - ">" instead of ">=" on the seeds (4 of 5 refused)
def check_cheapest_helpful(fn: Callable[..., Any]) -> Feedback:
    """Exercise 2: the cheapest module that helped."""
    what = "cheapest_helpful(rows, cost)"
    cases = [
        ({"a": (0.05, 5, 5), "b": (0.02, 4, 5), "c": (0.01, 2, 5), "d": (-0.01, 1, 5), "e": (0.10, 5, 5)},
         {"a": 1.5, "b": 1.2, "c": 1.1, "d": 1.0, "e": 3.0}),
        ({"a": (-0.02, 1, 3), "b": (0.0, 3, 3)}, {"a": 1.0, "b": 2.0}),
    ]
    for rows, cost in cases:
        got, fb = run_answer(fn, dict(rows), dict(cost), what=what)
        if fb is not None:
            return fb
        want = cheapest_helpful_reference(rows, cost)
        if got == want:
            continue
        if want is None:
            return failed(f"{what}: no module helped here (a gain of 0 is not a gain, a negative one neither): "
                          f"expected None, got {got!r}.")
        hints = {
            "c": "c's mean is higher, but it was ahead in only 2 of 5 seeds: the rule asks for 80 % of the seeds",
            "e": "e has the largest gain; the question is the cheapest module that helped (lowest cost)",
            "d": "d is the cheapest, but it did not help (its gain is negative)",
            "a": "b was ahead in 4 of 5 seeds, which is 80 %: use >= on the seeds",
        }
        if got in hints:
            return failed(f"{what}: {hints[got]}.")
        return failed(f"{what}: expected {want!r}, got {got!r}.")
    return passed(f"{what}: right: the cheapest of the modules that helped, None when none did.")
