"""The checkers of "Part V side by side": each typical mistake its own message, the right answer
passes, a blank answer is "not attempted" (the mistakes are listed above each checker)."""

from __future__ import annotations

import math

from attncourse.exercises import local_summary as ex

from checker_tables import check_table


def test_segment_slopes():
    def right(sides, values):
        return [math.log(v1 / v0) / math.log(s1 * s1 / (s0 * s0))
                for s0, s1, v0, v1 in zip(sides, sides[1:], values, values[1:])]

    check_table(ex.check_segment_slopes, right, {
        "side": (lambda s, v: ex._slopes(s, v, "side"), "slope in the side"),
        "no log": (lambda s, v: ex._slopes(s, v, "no log"), "ratios of logarithms"),
        "reversed": (lambda s, v: ex._slopes(s, v, "reversed"), "upside down"),
        "one slope": (lambda s, v: math.log(v[-1] / v[0]) / math.log(s[-1] ** 2 / s[0] ** 2), "not one for the whole"),
        "crash": (lambda s, v: s / v, "your code raised"),
        "other": (lambda s, v: [x + 0.1 for x in right(s, v)], "expected"),
    })


def test_paired_median_gain():
    check_table(ex.check_paired_median_gain, lambda a, b: (a - b).median(), {
        "unpaired": (lambda a, b: a.median() - b.median(), "difference of the medians"),
        "mean": (lambda a, b: (a - b).mean(), "mean of the differences"),
        "reversed": (lambda a, b: (b - a).median(), "sign is reversed"),
        "ratio": (lambda a, b: (a / b).median(), "ratio"),
        "not a number": (lambda a, b: a - b, "one number"),
        "other": (lambda a, b: 0.5, "expected"),
    })


def test_ocab_key_side():
    check_table(ex.check_ocab_key_side, lambda m, r: int(m * r) + m, {
        "float": (lambda m, r: (1 + r) * m, "as a float"),
        "rounded": (lambda m, r: round(m * r + 0.01) + m, "rounded"),
        "window": (lambda m, r: m, "query window"),
        "twice": (lambda m, r: 2 * m, "2M"),
        "text": (lambda m, r: "ten", "whole number"),
        "other": (lambda m, r: 12, "expected 10"),
    })


def test_ocab_key_side_is_the_modules():
    """The exercise's answer is what the package's OCAB uses (HAT's λ = 0.5)."""
    import attncourse

    m = attncourse.create("ocab", 32, window_size=7)
    assert ex._ocab_side(7, 0.5) == 10 == m.overlap_size
