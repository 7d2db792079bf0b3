"""The checkers of "What attention costs": each typical mistake its own message, the right answer
passes, a blank answer is "not attempted" (the mistakes are listed above each checker)."""

from __future__ import annotations

import math

import numpy as np

from attncourse.exercises import linear_cost as ex

from checker_tables import check_table


def test_naive_bytes():
    n = 96 * 96
    right = 2 * 3 * 8 * n * n * 4
    check_table(ex.check_naive_bytes, right, {
        "one tensor": (right / 2, "two"),
        "three tensors (backward)": (right * 3 // 2, "backward pass"),
        "side": (2 * 3 * 8 * 96 * 96 * 4, "9,216"),
        "values": (right / 4, "4 bytes"),
        "float64": (right * 2, "float64"),
        "heads": (right / 8, "h = 8"),
        "batch": (right / 3, "B = 3"),
        "MiB": (right / 2**20, "MiB"),
        "GiB": (right / 2**30, "GiB"),
        "GB": (right / 1e9, "GB"),
        "other": (123, "not right"),
    })


def _local(ns, values):
    x, y = np.log(np.asarray(ns, dtype=float)), np.log(np.asarray(values, dtype=float))
    return list(np.diff(y) / np.diff(x))


def test_local_slopes():
    check_table(ex.check_local_slopes, _local, {
        "one fitted slope": (lambda ns, v: float(np.polyfit(np.log(ns), np.log(v), 1)[0]), "one slope for the whole curve"),
        "np.gradient": (lambda ns, v: list(np.gradient(np.log(v), np.log(ns))), "np.gradient's central differences"),
        "no logs": (lambda ns, v: list(np.diff(v) / np.diff(ns)), "logarithms of both"),
        "semi-log": (lambda ns, v: list(np.diff(np.log(v)) / np.diff(ns)), "divide by the step in log N"),
        "swapped": (lambda ns, v: list(np.diff(np.log(ns)) / np.diff(np.log(v))), "axes are swapped"),
        "ratios": (lambda ns, v: [b / a for a, b in zip(v, v[1:])], "ratios of neighbouring values"),
        "log ratio alone": (lambda ns, v: list(np.diff(np.log(v))), "Δ log(value) alone"),
        "log2 ratio": (lambda ns, v: list(np.diff(np.log2(v))), "log2 of the ratio"),
        "from the first point": (lambda ns, v: [math.log(b / v[0]) / math.log(n / ns[0]) for n, b in zip(ns[1:], v[1:])],
                                 "from the first point"),
        "other": (lambda ns, v: [0.7] * (len(ns) - 1), "the slopes of the segments are"),
        "too short": (lambda ns, v: _local(ns, v)[:-1], "expected 3, one per segment"),
        "raises": (lambda ns, v: 1 / 0, "ZeroDivisionError"),
        "not numbers": (lambda ns, v: ["steep"] * 3, "expected a list of numbers, got ['steep'"),
    })
    # the chapter's fitted slope on every pair of neighbours is the answer too
    from attncourse.linear.sweep import slope
    assert ex.check_local_slopes(lambda ns, v: [slope(ns[i:i + 2], v[i:i + 2]) for i in range(len(ns) - 1)])


def _crossing(ns, slow, fast, x="log", y="log", first=False):
    """A learner's crossover_point: right, or with the gap or the axis not on a log scale, or the first crossing."""
    idx = None
    for i in range(len(ns)):
        if all(f < s for s, f in zip(slow[i:], fast[i:])):
            idx = i
            break
    if first:
        idx = next(i for i, (s, f) in enumerate(zip(slow, fast)) if f < s) if idx is not None else None
    if idx is None:
        return None
    if idx == 0:
        return ns[0]
    gap = [math.log(f / s) if y == "log" else f - s for s, f in zip(slow, fast)]
    t = gap[idx - 1] / (gap[idx - 1] - gap[idx])
    if x == "log":
        return math.exp(math.log(ns[idx - 1]) + t * math.log(ns[idx] / ns[idx - 1]))
    return ns[idx - 1] + t * (ns[idx] - ns[idx - 1])


def test_crossover_point():
    def grid(ns, slow, fast):
        return next((n for i, n in enumerate(ns) if all(f < s for s, f in zip(slow[i:], fast[i:]))), None)

    def before(ns, slow, fast):
        n = grid(ns, slow, fast)
        return None if n is None else ns[max(ns.index(n) - 1, 0)]

    def never_raises(ns, slow, fast):
        n = _crossing(ns, slow, fast)
        if n is None:
            raise ValueError("no crossover")
        return n

    check_table(ex.check_crossover_point, _crossing, {
        "the grid point": (grid, "sweep.crossover's answer"),
        "the point before": (before, "last N at which fast still loses"),
        "linear in N": (lambda *a: _crossing(*a, x="lin"), "interpolated linearly in N"),
        "difference of times": (lambda *a: _crossing(*a, y="lin"), "difference of the times"),
        "times, linear in N": (lambda *a: _crossing(*a, x="lin", y="lin"), "interpolates the times themselves"),
        "first crossing": (lambda *a: _crossing(*a, first=True), "fast loses again later"),
        "never raises": (never_raises, "raised ValueError"),
        "never -1": (lambda *a: -1 if _crossing(*a) is None else _crossing(*a), "return None"),
        "None for always": (lambda ns, s, f: None if all(b < a for a, b in zip(s, f)) else _crossing(ns, s, f),
                            "return None only when it never does"),
        "other": (lambda *a: 7.0, "it returned 7, not 173.26"),
        "not a number": (lambda *a: "soon", "expected a number"),
    })


def test_a_stub_whose_body_is_dots_is_not_attempted():
    def stub(*args):
        ...

    for check in (ex.check_local_slopes, ex.check_crossover_point):
        fb = check(stub)
        assert not fb and not fb.attempted, fb.message
