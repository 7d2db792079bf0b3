"""Checkers for the exercises of "Part II side by side"."""

from __future__ import annotations

from typing import Any

from .._registry import create
from ..cost import count_parameters
from . import Feedback, failed, is_unanswered, not_attempted, passed

__all__ = ["check_cheapest"]


def check_cheapest(answer: Any) -> Feedback:
    """Exercise 1: the cheapest hybrid module at C = 1024, with its parameter count."""
    what = "Cheapest hybrid module at C = 1024"
    if is_unanswered(answer):
        return not_attempted(what)
    counts = {n: count_parameters(create(n, 1024)) for n in ["cbam", "bam", "scse", "coord"]}
    best = min(counts, key=counts.get)
    if not (isinstance(answer, tuple) and len(answer) == 2):
        return failed(f"{what}: expected a tuple (name, count), got {answer!r}")
    name, count = answer
    if name not in counts:
        return failed(f"{what}: {name!r} is not one of {sorted(counts)}")
    if name != best:
        return failed(f"{what}: {name} has {counts[name]:,} parameters at C = 1024; another module has fewer.")
    if count != counts[best]:
        return failed(f"{what}: {name} is right, but it has {counts[best]:,} parameters, not {count}.")
    return passed(f"{what}: {name}, {count:,} parameters.")
