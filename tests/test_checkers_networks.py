"""The checkers of "Which module should I use?": each typical mistake its own message, the right
answer passes, a blank answer is "not attempted" (the mistakes are listed above each checker)."""

from __future__ import annotations

import math

import torch

from attncourse.exercises import networks as ex
from attncourse.nets import resnet50

from checker_tables import check_table


def test_se_parameters():
    def right(w, b, r):
        return sum(n * (2 * c * (c // r) + c // r + c) for c, n in zip(w, b))

    check_table(ex.check_se_parameters, right, {
        "no biases": (lambda w, b, r: sum(n * 2 * c * (c // r) for c, n in zip(w, b)), "without the biases"),
        "one block": (lambda w, b, r: sum(2 * c * (c // r) + c // r + c for c in w), "one block per stage"),
        "inner": (lambda w, b, r: right([c // 4 for c in w], b, r), "inner width"),
        "one layer": (lambda w, b, r: sum(n * (c * (c // r) + c // r) for c, n in zip(w, b)), "only the first layer"),
        "text": (lambda w, b, r: "many", "whole number"),
        "other": (lambda w, b, r: 1, "expected"),
    })


def test_the_se_formula_is_what_resnet50_with_se_adds():
    with torch.device("meta"):
        added = (sum(p.numel() for p in resnet50(attn="se").parameters())
                 - sum(p.numel() for p in resnet50().parameters()))
    assert ex.se_parameters_reference((256, 512, 1024, 2048), (3, 4, 6, 3), 16) == added == 2_530_992


def test_cheapest_helpful():
    def right(rows, cost):
        ok = [m for m, (g, a, s) in rows.items() if g > 0 and a >= math.ceil(0.8 * s)]
        return min(ok, key=cost.get) if ok else None

    check_table(ex.check_cheapest_helpful, right, {
        "mean only": (lambda rows, cost: min((m for m, (g, a, s) in rows.items() if g > 0), key=cost.get), "80 %"),
        "largest": (lambda rows, cost: max(rows, key=lambda m: rows[m][0]), "largest gain"),
        "cheapest": (lambda rows, cost: min(cost, key=cost.get), "did not help"),
        "strict": (lambda rows, cost: min((m for m, (g, a, s) in rows.items() if g > 0 and a > 0.8 * s),
                                          key=cost.get, default=None), "use >="),
        "never none": (lambda rows, cost: right(rows, cost) or "a", "expected None"),
        "other": (lambda rows, cost: "zzz", "expected"),
    })
