"""The checkers of "Part IV side by side": each typical mistake its own message, the right answer
passes, a blank answer is "not attempted" (the mistakes are listed above each checker)."""

from __future__ import annotations

import math

import torch

import attncourse
from attncourse.cost import count_parameters
from attncourse.exercises import linear_summary as ex
from attncourse.experiments import protocol
from attncourse.nets import TinyNet

from checker_tables import check_table


def _added(width: int) -> dict[str, int]:
    """What each module adds to the protocol's network with a middle block of `width` channels."""
    p = protocol("linear")
    shape = {"widths": (16, width, 32), **p.network_kwargs}
    base = count_parameters(TinyNet(2, 2, **shape))
    out = {}
    for v in ("MHSA", "Linear", "External", "FLatten"):
        attn, kw = p.variants[v]
        out[v] = count_parameters(TinyNet(2, 2, attn=attn, attn_kwargs=kw, **shape)) - base
    return out


def test_wider_right_answer_is_what_the_networks_add():
    assert _added(48) == ex._params(48)
    assert _added(32) == ex._params(32)


def test_wider():
    right = _added(48)
    check_table(ex.check_wider, right, {
        "width 32": (_added(32), "protocol's width"),
        "width 64": (ex._params(64), "C = 64"),
        "dwc per channel": ({**right, "FLatten": right["FLatten"] + 26 * 24}, "shared by the two heads"),
        "no memories": ({**right, "External": 2 * 48 * 48 + 3 * 48}, "memories"),
        "no 3C": ({**right, "External": 2 * 48 * 48 + 2 * 64 * 48}, "3C"),
        "linear extra": ({**right, "Linear": right["Linear"] + 48}, "no parameters"),
        "other": ({k: 1 for k in right}, "not right"),
        "not a dict": ([1, 2, 3, 4], "expected a dict"),
        "not numbers": ({k: "x" for k in right}, "whole numbers"),
    })


def _flops_ratio(side: int) -> float:
    c, heads = 64, 2
    x = torch.randn(1, c, side, side)
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel(SDPBackend.MATH):
        mhsa = attncourse.count_flops(attncourse.create("mhsa", c, heads=heads), x)
    lin = attncourse.count_flops(attncourse.create("linear", c, heads=heads), x)
    return mhsa / lin


def test_side_right_answer_is_what_count_flops_counts():
    assert _flops_ratio(39) >= 10 > _flops_ratio(38)


def test_side():
    check_table(ex.check_side, 39, {
        "no projections": (19, "leaves out the projections"),
        "one head": (43, "d = C / 2"),
        "crossover": (6, "factor 1"),
        "rounded down": (38, "rounded down"),
        "N": (39 * 39, "number of positions"),
        "other": (50, "Divide both counts"),
        "not a number": ("big", "whole number"),
    })


def test_entropy():
    def naive(w):
        return -(w * w.log()).sum(-1).mean()

    def right(w):
        return -torch.special.xlogy(w, w).sum(-1).mean()

    check_table(ex.check_entropy, right, {
        "nan": (naive, "NaN"),
        "bits": (lambda w: -(torch.special.xlogy(w, w) / math.log(2)).sum(-1).mean(), "bits"),
        "sign": (lambda w: torch.special.xlogy(w, w).sum(-1).mean(), "the sign"),
        "sum": (lambda w: -torch.special.xlogy(w, w).sum(), "sum over all rows"),
        "columns": (lambda w: -torch.special.xlogy(w, w).sum(-2).mean(), "columns"),
        "per row": (lambda w: -torch.special.xlogy(w, w).sum(-1), "one number"),
        "other": (lambda w: torch.tensor(0.5), "instead of"),
        "raises": (lambda w: 1 / 0, "ZeroDivisionError"),
    })


def test_a_stub_whose_body_is_dots_is_not_attempted():
    def stub(weights):
        ...

    fb = ex.check_entropy(stub)
    assert not fb and not fb.attempted, fb.message
