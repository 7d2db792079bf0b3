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


def _slope(ns, values):
    return float(np.polyfit(np.log(ns), np.log(values), 1)[0])


def test_slope():
    check_table(ex.check_slope, _slope, {
        "no logs": (lambda ns, v: float(np.polyfit(ns, v, 1)[0]), "logarithms of both"),
        "semi-log": (lambda ns, v: float(np.polyfit(ns, np.log(v), 1)[0]), "logarithm of N too"),
        "swapped": (lambda ns, v: float(np.polyfit(np.log(v), np.log(ns), 1)[0]), "swapped"),
        "endpoints": (lambda ns, v: math.log(v[-1] / v[0]) / math.log(ns[-1] / ns[0]), "least-squares line"),
        "other": (lambda ns, v: 0.7, "least-squares slope"),
        "raises": (lambda ns, v: 1 / 0, "ZeroDivisionError"),
        "not a number": (lambda ns, v: "steep", "expected a number"),
    })


def _crossover(ns, slow, fast):
    for i, n in enumerate(ns):
        if all(f < s for s, f in zip(slow[i:], fast[i:])):
            return n
    return None


def test_crossover():
    def first_win(ns, slow, fast):
        return next((n for n, s, f in zip(ns, slow, fast) if f < s), None)

    def index(ns, slow, fast):
        n = _crossover(ns, slow, fast)
        return None if n is None else ns.index(n)

    def last_loss(ns, slow, fast):
        n = _crossover(ns, slow, fast)
        return None if n is None else ns[max(ns.index(n) - 1, 0)]

    def never_raises(ns, slow, fast):
        n = _crossover(ns, slow, fast)
        if n is None:
            raise ValueError("no crossover")
        return n

    def never_minus_one(ns, slow, fast):
        n = _crossover(ns, slow, fast)
        return -1 if n is None else n

    def swapped(ns, slow, fast):
        return _crossover(ns, fast, slow) if ns[0] == 64 and len(ns) == 5 else _crossover(ns, slow, fast)

    check_table(ex.check_crossover, _crossover, {
        "first win": (first_win, "loses again later"),
        "index": (index, "index into ns"),
        "last loss": (last_loss, "last N where fast still loses"),
        "never raises": (never_raises, "raised ValueError"),
        "never -1": (never_minus_one, "return None"),
        "other": (lambda ns, slow, fast: 7, "it returned 7"),
    })
    assert not ex.check_crossover(swapped)


def test_a_stub_whose_body_is_dots_is_not_attempted():
    def stub(*args):
        ...

    for check in (ex.check_slope, ex.check_crossover):
        fb = check(stub)
        assert not fb and not fb.attempted, fb.message
