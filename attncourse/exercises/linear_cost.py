"""Checkers for the exercises of "What attention costs" (Part IV).

Above each checker, a comment lists the mistakes a learner typically makes on that exercise;
each one gets its own message (``tests/test_checkers_linear_cost.py`` tries every one of them).
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

from . import Feedback, check_number, failed, is_unanswered, not_attempted, passed, run_answer

__all__ = ["check_naive_bytes", "check_slope", "check_crossover", "CASES_SLOPE", "CASES_CROSSOVER"]

# Exercise 1: the peak bytes of the naive forward pass's N x N tensors (the logits Q K^T / sqrt(d) and
# the softmax, both alive at once) for B = 3 images, h = 8 heads, a 96 x 96 map, float32.
BYTES_B, BYTES_HEADS, BYTES_SIDE = 3, 8, 96


# Typical mistakes:
#   - one N x N tensor instead of two (the logits are still alive when the softmax is written)
#   - N taken as the side (96) instead of H * W
#   - elements, not bytes (x 4 forgotten); 8 bytes per value (float64)
#   - the heads or the batch forgotten
#   - the answer in MiB or GB instead of bytes
def check_naive_bytes(answer: Any) -> Feedback:
    """Exercise 1: bytes of the naive form's two (B, h, N, N) float32 tensors, B=3, h=8, 96×96."""
    b, h = BYTES_B, BYTES_HEADS
    n = BYTES_SIDE * BYTES_SIDE
    right = 2 * b * h * n * n * 4
    return check_number(
        answer,
        right,
        what="Peak bytes of the naive form's N × N tensors",
        hints={
            right / 2: "That is one N × N tensor; at the softmax the logits and the weights are alive at once: two.",
            2 * b * h * BYTES_SIDE**2 * 4: "N is the number of positions, H · W = 9,216, not the side 96.",
            right / 4: "That counts values; each float32 takes 4 bytes.",
            right * 2: "That is 8 bytes a value (float64); the step runs in float32, 4 bytes.",
            right / h: "Every head has its own N × N matrices: multiply by h = 8.",
            right / b: "Every image has its own N × N matrices: multiply by B = 3.",
            right / 2**20: "That is in MiB; give the answer in bytes.",
            right / 2**30: "That is in GiB; give the answer in bytes.",
            right / 1e9: "That is in GB; give the answer in bytes.",
        },
    )


# Exercise 2: slope(ns, values), the least-squares slope of log(values) against log(ns).
# The cases: (ns, values, slope) with exact powers and a noisy one where endpoints and fit differ.
CASES_SLOPE: list[tuple[list[float], list[float], float]] = [
    ([64, 128, 256, 512], [3.0 * n**2 for n in [64, 128, 256, 512]], 2.0),
    ([100, 1000, 10000], [0.5 * n for n in [100, 1000, 10000]], 1.0),
    ([64, 256, 1024, 4096], [1.0, 9.0, 30.0, 70.0], None),  # noisy: the fitted slope is computed below
]


def _fit(ns: Sequence[float], values: Sequence[float]) -> float:
    xs, ys = [math.log(n) for n in ns], [math.log(v) for v in values]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)


CASES_SLOPE[2] = (CASES_SLOPE[2][0], CASES_SLOPE[2][1], _fit(CASES_SLOPE[2][0], CASES_SLOPE[2][1]))


def _endpoints(ns, values):
    return math.log(values[-1] / values[0]) / math.log(ns[-1] / ns[0])


def _linear_fit(ns, values):  # the slope of values against ns, no logs
    mx, my = sum(ns) / len(ns), sum(values) / len(values)
    return sum((x - mx) * (y - my) for x, y in zip(ns, values)) / sum((x - mx) ** 2 for x in ns)


def _semilog(ns, values):  # log of the values only
    ys = [math.log(v) for v in values]
    mx, my = sum(ns) / len(ns), sum(ys) / len(ys)
    return sum((x - mx) * (y - my) for x, y in zip(ns, ys)) / sum((x - mx) ** 2 for x in ns)


def _swapped(ns, values):  # log n against log v
    return 1.0 / _fit(ns, values) if _fit(ns, values) else math.inf


# Typical mistakes:
#   - the slope of the raw values against N (no logarithms)
#   - the logarithm of the values only (a semi-log plot's slope)
#   - the axes swapped (log N against log value: 1 / slope)
#   - the two endpoints instead of a least-squares fit (right on exact powers, off on noisy data)
#   - not a number, or the code raised
def check_slope(fn: Callable[[Sequence[float], Sequence[float]], float]) -> Feedback:
    """Exercise 2: ``slope(ns, values)`` is the least-squares slope of the log-log plot."""
    what = "slope(ns, values)"
    for ns, values, want in CASES_SLOPE:
        got, fb = run_answer(fn, list(ns), list(values), what=what)
        if fb is not None:
            return fb
        if is_unanswered(got):  # a body of `...` returns None
            return not_attempted(what)
        try:
            got = float(got)
        except (TypeError, ValueError):
            return failed(f"{what}: expected a number, got {got!r}")
        if math.isclose(got, want, rel_tol=1e-6, abs_tol=1e-9):
            continue
        mistakes = [
            (_linear_fit, "that is the slope of the values against N; take logarithms of both first (a log-log plot)"),
            (_semilog, "only the values are on a log scale; take the logarithm of N too"),
            (_swapped, "the axes are swapped: regress log(value) on log(N), not log(N) on log(value)"),
            (_endpoints, "the two endpoints give the slope of exact powers, but a measured curve bends: fit a "
                         "least-squares line through every point"),
        ]
        for wrong, hint in mistakes:
            if math.isclose(got, wrong(ns, values), rel_tol=1e-6, abs_tol=1e-9):
                return failed(f"{what}: on ns={ns}, values={values} it returned {got:.4g}, not {want:.4g}: {hint}.")
        return failed(f"{what}: on ns={ns}, values={values} it returned {got:.4g}; the least-squares slope of "
                      f"log(value) against log(N) is {want:.4g}.")
    return passed(f"{what}: right on all {len(CASES_SLOPE)} cases, exact powers and a bent curve.")


# Exercise 3: crossover(ns, slow, fast), the smallest N from which `fast` takes less time than `slow`
# at that N and every larger one in the sweep (None if it never does).
CASES_CROSSOVER: list[tuple[list[int], list[float], list[float], int | None]] = [
    ([64, 128, 256, 512, 1024], [1.0, 2.0, 4.0, 9.0, 30.0], [3.0, 2.5, 3.0, 4.0, 6.0], 256),
    # a noisy dip: `fast` wins once at 128, loses at 256, and wins from 512 on
    ([64, 128, 256, 512, 1024], [1.0, 2.0, 4.0, 9.0, 30.0], [3.0, 1.9, 4.5, 4.0, 6.0], 512),
    ([64, 128, 256], [1.0, 2.0, 3.0], [2.0, 3.0, 4.0], None),  # never
    ([64, 128, 256], [5.0, 6.0, 7.0], [1.0, 1.0, 1.0], 64),  # always
]


# Typical mistakes:
#   - the first N where fast wins, ignoring that it loses again later (case 2: 128)
#   - the index into ns instead of N
#   - the last N where fast loses (the N just before the crossover)
#   - slow and fast swapped (the first N from which slow wins)
#   - an exception or a non-integer when fast never wins (None expected)
def check_crossover(fn: Callable[[Sequence[int], Sequence[float], Sequence[float]], int | None]) -> Feedback:
    """Exercise 3: ``crossover(ns, slow, fast)``: the smallest N from which ``fast`` wins for good."""
    what = "crossover(ns, slow, fast)"
    for i, (ns, slow, fast, want) in enumerate(CASES_CROSSOVER):
        got, fb = run_answer(fn, list(ns), list(slow), list(fast), what=what)
        if fb is not None:
            return fb
        if i == 0 and is_unanswered(got):  # a body of `...` returns None (the first case has a crossover)
            return not_attempted(what)
        if got == want and (want is None) == (got is None):
            continue
        case = f"on ns={ns}, slow={slow}, fast={fast} it returned {got!r}, not {want!r}"
        first_win = next((n for n, s, f in zip(ns, slow, fast) if f < s), None)
        if want is not None and got == ns.index(want):
            return failed(f"{what}: {case}: that is the index into ns; return the token count N itself.")
        if want is not None and want != ns[0] and got == ns[ns.index(want) - 1]:
            return failed(f"{what}: {case}: that is the last N where fast still loses; return the first N of the "
                          "run where it wins.")
        if got == first_win and first_win != want:
            return failed(f"{what}: {case}: fast wins at {first_win} but loses again later; the crossover is where "
                          "it wins at that N and every larger one.")
        swapped = next((ns[i] for i in range(len(ns)) if all(slow[j] < fast[j] for j in range(i, len(ns)))), None)
        if swapped is not None and got == swapped and swapped != want:
            return failed(f"{what}: {case}: that is where `slow` wins; the crossover is where `fast` takes less time.")
        if want is None:
            return failed(f"{what}: {case}: when fast never wins for good, return None.")
        return failed(f"{what}: {case}.")
    return passed(f"{what}: right on all {len(CASES_CROSSOVER)} cases, the noisy dip and 'never' included.")
