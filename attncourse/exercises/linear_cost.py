"""Checkers for the exercises of "What attention costs" (Part IV).

Above each checker, a comment lists the mistakes a learner typically makes on that exercise;
each one gets its own message (``tests/test_checkers_linear_cost.py`` tries every one of them).
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

from . import Feedback, check_number, failed, is_unanswered, not_attempted, passed, run_answer

__all__ = ["check_naive_bytes", "check_local_slopes", "check_crossover_point", "CASES_LOCAL", "CASES_POINT"]

# Exercise 1: the peak bytes of the naive forward pass's N x N tensors (the logits Q K^T / sqrt(d) and
# the softmax, both alive at once) for B = 3 images, h = 8 heads, a 96 x 96 map, float32.
BYTES_B, BYTES_HEADS, BYTES_SIDE = 3, 8, 96


# Typical mistakes:
#   - one N x N tensor instead of two (the logits are still alive when the softmax is written)
#   - three (the backward pass's peak, which the chapter also computes) instead of two
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
            right * 3 / 2: "That is three N × N tensors, the peak of the backward pass; the question asks for the "
            "forward pass, where the logits and the weights are alive at once: two.",
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


# Exercise 2: local_slopes(ns, values): the slope of every segment of the log-log plot, one per pair
# of neighbouring points (len(ns) - 1 of them); the chapter fitted one line (sweep.slope), which
# hides where a curve bends. The first case's N are not powers of two, so a log2 of the value ratio
# alone cannot pass for a slope.
CASES_LOCAL: list[tuple[list[float], list[float]]] = [
    ([100, 300, 1000, 5000], [1.0, 2.0, 9.0, 100.0]),  # bends upwards; uneven steps in N
    ([64, 128, 256, 512], [3.0 * n**2 for n in [64, 128, 256, 512]]),  # an exact square: slope 2 everywhere
    ([64, 256, 1024, 4096], [1.0, 9.0, 30.0, 70.0]),  # bends downwards
]


def _local(ns: Sequence[float], values: Sequence[float]) -> list[float]:
    return [math.log(values[i + 1] / values[i]) / math.log(ns[i + 1] / ns[i]) for i in range(len(ns) - 1)]


def _as_floats(got: Any) -> list[float] | None:
    try:
        if hasattr(got, "tolist"):
            got = got.tolist()
        return [float(v) for v in got]
    except (TypeError, ValueError):
        return None


def _same(a: Sequence[float], b: Sequence[float]) -> bool:
    return len(a) == len(b) and all(math.isclose(x, y, rel_tol=1e-6, abs_tol=1e-9) for x, y in zip(a, b))


def _local_mistakes(ns: Sequence[float], values: Sequence[float]) -> list[tuple[list[float], str]]:
    pairs = range(len(ns) - 1)
    log = math.log
    return [
        ([(values[i + 1] - values[i]) / (ns[i + 1] - ns[i]) for i in pairs],
         "those are the slopes of the values against N; take logarithms of both first (a log-log plot)"),
        ([log(values[i + 1] / values[i]) / (ns[i + 1] - ns[i]) for i in pairs],
         "only the values are on a log scale; divide by the step in log N, not in N"),
        ([log(ns[i + 1] / ns[i]) / log(values[i + 1] / values[i]) for i in pairs],
         "the axes are swapped: Δ log(value) / Δ log(N), not Δ log(N) / Δ log(value)"),
        ([values[i + 1] / values[i] for i in pairs],
         "those are the ratios of neighbouring values; the slope is log of that ratio over log of the ratio of the N"),
        ([log(values[i + 1] / values[i]) for i in pairs],
         "that is Δ log(value) alone; divide it by Δ log(N) (the N here are not powers of two, so no fixed "
         "log base can stand in for it)"),
        ([math.log2(values[i + 1] / values[i]) for i in pairs],
         "that is log2 of the ratio of neighbouring values, the slope only when N doubles at every step; "
         "divide by Δ log(N)"),
        ([log(values[i + 1] / values[0]) / log(ns[i + 1] / ns[0]) for i in pairs],
         "those are slopes from the first point to each later point; the exercise asks for each segment, "
         "between neighbouring points"),
    ]


# Typical mistakes:
#   - one number for the whole curve (a fitted slope, the chapter's sweep.slope): not a list
#   - len(ns) values (np.gradient's central differences, or a 0 prepended) instead of len(ns) - 1
#   - the slopes of the raw values against N (no logarithms); only the values on a log scale
#   - the axes swapped (Δ log N / Δ log value)
#   - the ratio of neighbouring values, or its logarithm without dividing by Δ log N
#   - log2 of the value ratio (the slope only on a doubling grid; the first case is not one)
#   - slopes from the first point instead of between neighbours
#   - not numbers, or the code raised
def check_local_slopes(fn: Callable[[Sequence[float], Sequence[float]], Any]) -> Feedback:
    """Exercise 2: ``local_slopes(ns, values)``, the slope of every segment of the log-log plot."""
    what = "local_slopes(ns, values)"
    for ns, values in CASES_LOCAL:
        got, fb = run_answer(fn, list(ns), list(values), what=what)
        if fb is not None:
            return fb
        if is_unanswered(got):  # a body of `...` returns None
            return not_attempted(what)
        want = _local(ns, values)
        case = f"on ns={ns}, values={values}"
        if isinstance(got, (int, float)) or (hasattr(got, "ndim") and got.ndim == 0):
            return failed(f"{what}: {case} it returned one number, {float(got):.4g}: that is one slope for the "
                          f"whole curve (as sweep.slope fits); return a list of the {len(want)} slopes between "
                          "neighbouring points.")
        slopes = _as_floats(got)
        if slopes is None:
            return failed(f"{what}: expected a list of numbers, got {str(got)[:60]}")
        if _same(slopes, want):
            continue
        if len(slopes) == len(ns):
            return failed(f"{what}: {case} it returned {len(slopes)} values, one per point (np.gradient's central "
                          f"differences, or a value added at one end); there are {len(want)} segments between "
                          f"{len(ns)} points, one slope each.")
        if len(slopes) != len(want):
            return failed(f"{what}: {case} it returned {len(slopes)} values; expected {len(want)}, one per segment.")
        shown = ", ".join(f"{v:.3g}" for v in slopes)
        for wrong, hint in _local_mistakes(ns, values):
            if _same(slopes, wrong):
                return failed(f"{what}: {case} it returned [{shown}]: {hint}.")
        return failed(f"{what}: {case} it returned [{shown}]; the slopes of the segments are "
                      f"[{', '.join(f'{v:.3g}' for v in want)}], Δ log(value) / Δ log(N) between neighbours.")
    return passed(f"{what}: right on all {len(CASES_LOCAL)} curves, uneven steps in N included.")


# Exercise 3: crossover_point(ns, slow, fast): the N at which the two log-log lines cross. Take the
# measured crossover (sweep.crossover: the smallest N from which `fast` wins at every larger N);
# return None if there is none, ns[0] if fast wins everywhere; else interpolate log(fast / slow)
# linearly in log N between the N just before it and it, and return the N where it is 0.
CASES_POINT: list[tuple[list[float], list[float], list[float]]] = [
    ([64, 128, 256, 512, 1024], [1.0, 2.0, 4.0, 9.0, 30.0], [3.0, 2.5, 3.0, 4.0, 6.0]),
    # a noisy dip: `fast` wins once at 128, loses at 256, and wins from 512 on
    ([64, 128, 256, 512, 1024], [1.0, 2.0, 4.0, 9.0, 30.0], [3.0, 1.9, 4.5, 4.0, 6.0]),
    ([100, 1000, 10000], [1.0, 5.0, 100.0], [2.0, 10.0, 20.0]),  # steps of 10: ratio 2 then 1/5 -> 2,000
    ([64, 128, 256], [1.0, 2.0, 3.0], [2.0, 3.0, 4.0]),  # never
    ([64, 128, 256], [5.0, 6.0, 7.0], [1.0, 1.0, 1.0]),  # always
]


def _grid_crossover(ns, slow, fast) -> int | None:
    for i, n in enumerate(ns):
        if all(f < s for s, f in zip(slow[i:], fast[i:])):
            return i
    return None


def _cross(ns, slow, fast, *, index: int | None = None, x: str = "log", y: str = "log") -> float | None:
    """The crossing between ns[index - 1] and ns[index] (default: the measured crossover), with the
    gap (log of the ratio, or the difference of the times) interpolated linearly in log N or in N."""
    i = _grid_crossover(ns, slow, fast) if index is None else index
    if i is None:
        return None
    if i == 0:
        return float(ns[0])
    gap = (lambda k: math.log(fast[k] / slow[k])) if y == "log" else (lambda k: fast[k] - slow[k])
    t = gap(i - 1) / (gap(i - 1) - gap(i))
    if x == "log":
        return math.exp(math.log(ns[i - 1]) + t * (math.log(ns[i]) - math.log(ns[i - 1])))
    return ns[i - 1] + t * (ns[i] - ns[i - 1])


# Typical mistakes:
#   - the measured grid point (sweep.crossover's answer) instead of the crossing between two points
#   - the N just before it
#   - the gap interpolated linearly in N instead of log N; the times' difference instead of the
#     log of their ratio (and both)
#   - the first place where fast wins, not the one from which it wins for good (the noisy dip)
#   - an exception or a number when fast never wins (None expected); fast winning everywhere
#     (ns[0] expected)
def check_crossover_point(fn: Callable[[Sequence[float], Sequence[float], Sequence[float]], Any]) -> Feedback:
    """Exercise 3: ``crossover_point(ns, slow, fast)``: where the log-log lines of the two times cross."""
    what = "crossover_point(ns, slow, fast)"
    for k, (ns, slow, fast) in enumerate(CASES_POINT):
        got, fb = run_answer(fn, list(ns), list(slow), list(fast), what=what)
        if fb is not None:
            return fb
        if k == 0 and is_unanswered(got):  # a body of `...` returns None (the first case has a crossing)
            return not_attempted(what)
        want = _cross(ns, slow, fast)
        shown = f"{got:.5g}" if isinstance(got, (int, float)) else repr(got)
        case = f"on ns={ns}, slow={slow}, fast={fast} it returned {shown}, not {want if want is None else f'{want:.5g}'}"
        if want is None:
            if got is None:
                continue
            return failed(f"{what}: {case}: when fast never wins for good, there is no crossing: return None.")
        if got is None:
            return failed(f"{what}: {case}: fast wins from a point on here; return None only when it never does.")
        try:
            value = float(got)
        except (TypeError, ValueError):
            return failed(f"{what}: expected a number (or None), got {type(got).__name__}")
        if math.isclose(value, want, rel_tol=1e-6):
            continue
        i = _grid_crossover(ns, slow, fast)
        first = next(j for j, (s, f) in enumerate(zip(slow, fast)) if f < s)
        hints = [
            (float(ns[i]), "that is the measured N from which fast wins (sweep.crossover's answer); the lines "
                           "cross between it and the N before it: interpolate"),
            (float(ns[i - 1]) if i > 0 else None, "that is the last N at which fast still loses; the lines cross "
                                                  "after it: interpolate up to the next N"),
            (_cross(ns, slow, fast, x="lin"), "the gap was interpolated linearly in N; on a log-log plot the lines "
                                              "are straight in log N: interpolate in log N, then take exp"),
            (_cross(ns, slow, fast, y="lin"), "that interpolates the difference of the times; on a log-log plot it "
                                              "is log(fast / slow) that changes linearly: interpolate the log of "
                                              "the ratio"),
            (_cross(ns, slow, fast, x="lin", y="lin"), "that interpolates the times themselves, linearly in N; the "
                                                       "lines of a log-log plot are straight in log N and log time"),
            (_cross(ns, slow, fast, index=first) if first > 0 and first != i else None,
             "that is the first crossing, but fast loses again later; take the one from which it wins at every "
             "larger N"),
        ]
        for wrong, hint in hints:
            if wrong is not None and math.isclose(value, wrong, rel_tol=1e-6):
                return failed(f"{what}: {case}: {hint}.")
        return failed(f"{what}: {case}.")
    return passed(f"{what}: right on all {len(CASES_POINT)} cases, the noisy dip, 'never' and 'always' included.")
