"""Checkers for the exercises of "Part V side by side".

Above each checker, a comment lists the mistakes a learner typically makes on that exercise;
each one gets its own message (``tests/test_checkers_local_summary.py`` tries every one of them).
"""

from __future__ import annotations

import math
from typing import Any, Callable

import torch

from . import Feedback, failed, passed, run_answer

__all__ = ["check_segment_slopes", "check_paired_median_gain", "check_ocab_key_side"]


def _slopes(sides, values, how: str = "right") -> list[float]:
    out = []
    for (s0, v0), (s1, v1) in zip(zip(sides, values), list(zip(sides, values))[1:]):
        x0, x1 = (s0, s1) if how == "side" else (s0 * s0, s1 * s1)
        if how == "no log":
            out.append((v1 / v0) / (x1 / x0))
        elif how == "reversed":
            out.append(math.log(v0 / v1) / math.log(x1 / x0))
        else:
            out.append(math.log(v1 / v0) / math.log(x1 / x0))
    return out


def _close(got: Any, want: list[float]) -> bool:
    try:
        got = [float(g) for g in got]
    except (TypeError, ValueError):
        return False
    return len(got) == len(want) and all(math.isclose(g, w, rel_tol=1e-6, abs_tol=1e-9) for g, w in zip(got, want))


# Exercise 1: segment_slopes(sides, values) -> the log-log slope in N = side² of each segment between
# consecutive sides: log(v1 / v0) / log(N1 / N0).
# Typical mistakes:
#   - the slope in the side, not in N = side² (twice the right value)
#   - no logarithms: the ratio of the ratios
#   - the values' ratio upside down (negative slopes for growing costs)
#   - one end-to-end slope instead of one per segment
def check_segment_slopes(fn: Callable[..., Any]) -> Feedback:
    """Exercise 1: the log-log slope of a cost curve, segment by segment."""
    what = "segment_slopes(sides, values)"
    sides, values = [14, 28, 56, 112], [3.0, 7.5, 40.0, 390.0]
    got, fb = run_answer(fn, list(sides), list(values), what=what)
    if fb is not None:
        return fb
    want = _slopes(sides, values)
    if _close(got, want):
        return passed(f"{what}: right; slopes {', '.join(f'{s:.2f}' for s in want)} for the three segments.")
    if isinstance(got, (int, float)) or (hasattr(got, "__len__") and len(got) == 1):
        return failed(f"{what}: one slope per segment between consecutive sides ({len(sides) - 1} here), "
                      "not one for the whole curve.")
    hints = {
        "side": "that is the slope in the side; the costs are compared in N = side², so the logarithm of the sides' "
                "ratio must be doubled",
        "no log": "slopes on log-log axes are ratios of logarithms: log(v1 / v0) / log(N1 / N0)",
        "reversed": "the values' ratio is upside down: a cost that grows must have a positive slope",
    }
    for how, hint in hints.items():
        if _close(got, _slopes(sides, values, how)):
            return failed(f"{what}: {hint}.")
    return failed(f"{what}: expected {', '.join(f'{s:.3f}' for s in want)}, got {got!r}.")


# Exercise 2: paired_median_gain(acc, base) -> the median over seeds of acc[s] - base[s] (two tensors of
# final accuracies, seed by seed).
# Typical mistakes:
#   - the difference of the medians (the seeds unpaired)
#   - the mean of the differences instead of the median
#   - the baseline minus the variant (the sign reversed)
#   - a relative gain (a ratio) instead of a difference
def check_paired_median_gain(fn: Callable[..., Any]) -> Feedback:
    """Exercise 2: a paired comparison over seeds."""
    what = "paired_median_gain(acc, base)"
    acc = torch.tensor([0.91, 0.62, 0.88, 0.95, 0.70], dtype=torch.float64)
    base = torch.tensor([0.80, 0.66, 0.70, 0.93, 0.50], dtype=torch.float64)
    got, fb = run_answer(fn, acc.clone(), base.clone(), what=what)
    if fb is not None:
        return fb
    try:
        value = float(got)
    except (TypeError, ValueError):
        return failed(f"{what}: expected one number, got {got!r}.")
    want = float((acc - base).median())
    if math.isclose(value, want, abs_tol=1e-9):
        return passed(f"{what}: right, {want:+.2f}: the median of the five seeds' differences.")
    known = {
        float(acc.median() - base.median()): "that is the difference of the medians: pair the runs seed by seed first "
                                             "(the same seed gives both networks the same data order and start)",
        float((acc - base).mean()): "that is the mean of the differences; the median is asked for (one bad seed "
                                    "moves a mean of five a lot)",
        float((base - acc).median()): "the sign is reversed: the variant minus the baseline",
        float((acc / base).median()): "that is a ratio; the gain asked for is a difference in accuracy",
    }
    for wrong, hint in known.items():
        if math.isclose(value, wrong, abs_tol=1e-9):
            return failed(f"{what}: {hint}.")
    return failed(f"{what}: expected {want:+.4f}, got {value:+.4f}.")


def _ocab_side(m: int, overlap_ratio: float) -> int:
    return int(m * overlap_ratio) + m


# Exercise 3: ocab_key_side(m, overlap_ratio) -> the side of OCAB's key window as the official code
# computes it: int(M * λ) + M.
# Typical mistakes:
#   - (1 + λ) M left as a float
#   - rounded instead of truncated (round(3.5) = 4)
#   - M, the query window (no overlap)
#   - 2M, a window of twice the side
def check_ocab_key_side(fn: Callable[..., Any]) -> Feedback:
    """Exercise 3: the side of OCAB's key window, as the official code computes it."""
    what = "ocab_key_side(m, overlap_ratio)"
    got, fb = run_answer(fn, 7, 0.5, what=what)
    if fb is not None:
        return fb
    if isinstance(got, float) and math.isclose(got, 10.5):
        return failed(f"{what}: 10.5 is (1 + λ)M as a float; a window has a whole number of pixels: the official "
                      "code truncates M λ with int() before adding M.")
    hints = {11: "that is rounded: the official code truncates, int(7 × 0.5) = 3, not round(3.5) = 4",
             7: "that is the query window M; the keys come from a larger, overlapping window",
             14: "that is 2M; the key window grows by M λ, not by M"}
    try:
        value = float(got)
    except (TypeError, ValueError):
        return failed(f"{what}: expected a whole number, got {got!r}.")
    if value == _ocab_side(7, 0.5):
        return passed(f"{what}: right for M = 7, λ = 0.5: 10, so each 7 × 7 query window reads 100 keys.")
    if value in hints:
        return failed(f"{what}: {hints[int(value)]}.")
    return failed(f"{what}: expected 10 for M = 7, λ = 0.5, got {got!r}.")
