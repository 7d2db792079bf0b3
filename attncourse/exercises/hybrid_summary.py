"""Checkers for the exercises of "Part II side by side".

Above each checker, a comment lists the mistakes a learner typically makes on that exercise;
each one gets its own message (``tests/test_checkers_hybrid.py`` tries every one of them).
"""

from __future__ import annotations

from typing import Any

from .._registry import create
from ..cost import count_parameters
from . import Feedback, failed, is_unanswered, not_attempted, passed

__all__ = ["check_cheapest"]

C = 128
MODULES = ["cbam", "bam", "scse", "coord"]

# Why each wrong module is not the cheapest at C = 128 (the table printed above stops at other C).
_WHY_NOT = {
    "coord": "it is the cheapest at C = 1024, where m = C/32 = 32, but at C = 128 the floor m = max(8, C // 32) = 8 "
    "applies, and its three convolutions cost about 3·C·m",
    "bam": "its spatial branch adds a 1×1 convolution, two dilated 3×3 convolutions and a second batch norm to an "
    "SE-sized channel branch",
    "scse": "its channel half is SE with r = 2, a bottleneck of C/2 units: about C² parameters",
}


# Exercise 1, the cheapest of CBAM, BAM, scSE and Coordinate Attention at C = 128, as (name, count).
# Typical mistakes:
#   - the answer not a (name, count) pair
#   - the class name or a capitalised name ("CBAM") instead of the registered one ("cbam")
#   - SE, the channel-only baseline, which is not one of the four
#   - Coordinate Attention, the cheapest at C = 1024 in the table above (its floor m = 8 matters at 128)
#   - BAM or scSE
#   - the right module with the official form's count (+1), without the conv bias (-1), or without
#     the MLP's biases
def check_cheapest(answer: Any) -> Feedback:
    """Exercise 1: the cheapest hybrid module at C = 128, with its parameter count."""
    what = f"Cheapest hybrid module at C = {C}"
    if is_unanswered(answer):
        return not_attempted(what)
    if not (isinstance(answer, tuple) and len(answer) == 2):
        return failed(f"{what}: expected a tuple (name, count), got {answer!r}")
    name, count = answer
    counts = {n: count_parameters(create(n, C)) for n in MODULES}
    best = min(counts, key=counts.get)
    if is_unanswered(name) or is_unanswered(count):
        return not_attempted(what)
    if not isinstance(name, str):
        return failed(f"{what}: the name should be a string such as 'cbam', got {name!r}.")
    if name == "se":
        return failed(f"{what}: SE is the channel-only baseline of the comparison, not one of the four hybrid "
                      "modules; pick among cbam, bam, scse and coord.")
    if name not in counts and name.lower().replace("coordattention", "coord") in counts:
        return failed(f"{what}: use the registered name, as in attncourse.create(name, C): {name.lower()!r} "
                      "(lower case; 'coord' for Coordinate Attention).")
    if name not in counts:
        return failed(f"{what}: {name!r} is not one of {MODULES}")
    if name != best:
        return failed(f"{what}: {name} has {counts[name]:,} parameters at C = {C}: {_WHY_NOT[name]}. Another module has fewer.")
    try:
        value = int(count)
    except (TypeError, ValueError):
        return failed(f"{what}: {name} is right; the count should be a number, got {count!r}.")
    if value == counts[best]:
        return passed(f"{what}: {name}, {value:,} parameters.")
    spatial = 2 * 7 * 7 + 1
    hints = {
        counts[best] + 1: "that is the official form (conv without bias, then a batch norm's γ and β); the default "
        "spatial gate is a conv with a bias",
        counts[best] - 1: "the default spatial convolution has a bias: 2·7·7 + 1",
        counts[best] - C // 16 - C: "the MLP's two layers have biases, C/16 + C of them",
        counts[best] - spatial: "that is the channel gate alone; add the spatial gate's 2·7·7 + 1",
    }
    hint = hints.get(value, "recount with the chapter's formula, 2C²/r + C/r + C + 2k² + 1")
    return failed(f"{what}: {name} is right, but {value:,} is not its count: {hint}.")
