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
    for v in ("MHSA", "External", "FLatten"):
        attn, kw = p.variants[v]
        out[v] = count_parameters(TinyNet(2, 2, attn=attn, attn_kwargs=kw, **shape)) - base
    return out


def test_width_right_answer_is_what_the_networks_add():
    added = {c: _added(c) for c in (56, 58)}
    assert added[56]["External"] > added[56]["FLatten"] and added[58]["External"] < added[58]["FLatten"]
    assert all(_added(c)["External"] >= _added(c)["FLatten"] for c in range(2, 58, 2))


def test_width():
    check_table(ex.check_width, 58, {
        "break-even": (57, "equal"),
        "the last width above": (56, "still adds more"),
        "MHSA (the chapter's 64)": (64, "passes MHSA"),
        "DWC per channel": (52, "DWC with C channels"),
        "one memory": (26, "one memory"),
        "other": (100, "not right"),
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


def test_column_entropy():
    def right(a):
        c = a / a.sum(1, keepdim=True)
        return -torch.special.xlogy(c, c).sum(1).mean()

    def naive(a):
        c = a / a.sum(1, keepdim=True)
        return -(c * c.log()).sum(1).mean()

    def row_entropy(weights):  # the chapter's function, as it is
        return -torch.special.xlogy(weights, weights).sum(-1).mean()

    check_table(ex.check_column_entropy, right, {
        "rows (the chapter's row_entropy)": (row_entropy, "entropy of the rows"),
        "not renormalised": (lambda a: -torch.special.xlogy(a, a).sum(1).mean(), "not renormalised"),
        "nan": (naive, "NaN"),
        "bits": (lambda a: right(a) / math.log(2), "bits"),
        "sign": (lambda a: -right(a), "the sign"),
        "sum": (lambda a: right(a) * a.shape[0] * a.shape[2], "sum over images and units"),
        "per unit": (lambda a: (lambda c: -torch.special.xlogy(c, c).sum(1))(a / a.sum(1, keepdim=True)), "one number"),
        "other": (lambda a: torch.tensor(0.5), "instead of"),
        "raises": (lambda a: 1 / 0, "ZeroDivisionError"),
    })
    # the chapter's row_entropy on the renormalised, transposed columns passes
    assert ex.check_column_entropy(lambda a: row_entropy((a / a.sum(1, keepdim=True)).transpose(1, 2)))


def test_a_stub_whose_body_is_dots_is_not_attempted():
    def stub(weights):
        ...

    fb = ex.check_column_entropy(stub)
    assert not fb and not fb.attempted, fb.message
