"""The CCNet chapter's exercise checkers: each typical mistake gets its own message, the right answer
passes, a blank answer is "not attempted" without raising (as tests/test_checkers_hybrid.py does).
"""

from __future__ import annotations

import torch

import attncourse
from attncourse.cost import count_parameters
from attncourse.exercises import ccnet as ex

from checker_tables import check_table as _check_table


def test_ccnet_parameters():
    right = 2 * (96 * 12 + 12) + 96 * 96 + 96 + 1
    assert count_parameters(attncourse.create("ccnet", 96, recurrence=3)) == right == 1.25 * 96**2 + 1.25 * 96 + 1
    _check_table(ex.check_ccnet_parameters, right, {
        "times R": (3 * right, "count them once"),
        "all but gamma times R": (3 * (right - 1) + 1, "the convolutions too"),
        "no gamma": (right - 1, "γ"),
        "no biases": (right - 1 - 12 - 12 - 96 + 1, "have biases"),
        "no biases, no gamma": (right - 1 - 12 - 12 - 96, "biases and γ are missing"),
        "value reduced": (2 * (96 * 12 + 12) + 96 * 12 + 12 + 1, "keeps all C channels"),
        "query/key not reduced": (2 * (96 * 96 + 96) + 96 * 96 + 96 + 1, "not C"),
        "no value": (2 * (96 * 12 + 12) + 1, "W_v"),
        "other": (1234, "not right"),
    })


def test_cross_entries():
    n = 48 * 64
    _check_table(ex.check_cross_entries, n * 111, {
        "centre twice": (n * 112, "only once"),
        "centre left out": (n * 110, "is one of its keys"),
        "one query": (111, "every one of the N"),
        "full": (n * n, "full attention"),
        "row only": (n * 64, "row path only"),
        "column only": (n * 48, "column path only"),
    })


def _cc(how="right", swap=False):
    def fn(q, k, v):
        if swap:
            q, k = k, q
        h = q.shape[2]
        e_col = torch.einsum("bchw,bcgw->bhwg", q, k)
        e_row = torch.einsum("bchw,bchv->bhwv", q, k)
        if how == "scaled":
            e_col, e_row = e_col / q.shape[1] ** 0.5, e_row / q.shape[1] ** 0.5
        if how == "column":
            return torch.einsum("bhwg,bcgw->bchw", e_col.softmax(-1), v)
        if how == "row":
            return torch.einsum("bhwv,bchv->bchw", e_row.softmax(-1), v)
        if how != "twice":
            e_col = e_col.masked_fill(torch.eye(h, dtype=torch.bool)[:, None, :], float("-inf"))
        if how == "two":
            a_col, a_row = e_col.softmax(-1), e_row.softmax(-1)
        else:
            a = torch.cat([e_col, e_row], -1).softmax(-1)
            a_col, a_row = a[..., :h], a[..., h:]
        if how == "weights":
            return a
        return torch.einsum("bhwg,bcgw->bchw", a_col, v) + torch.einsum("bhwv,bchv->bchw", a_row, v)
    return fn


def _full(q, k, v):
    a = torch.einsum("bcn,bcm->bnm", q.flatten(2), k.flatten(2)).softmax(-1)
    return torch.einsum("bnm,bcm->bcn", a, v.flatten(2)).reshape(v.shape)


def _module_based(q, k, v):
    """The right answer written through masked full attention (a different route to the same numbers)."""
    b, c, h, w = v.shape
    r, col = torch.arange(h * w) // w, torch.arange(h * w) % w
    cross = (r[:, None] == r[None, :]) | (col[:, None] == col[None, :])
    logits = torch.einsum("bcn,bcm->bnm", q.flatten(2), k.flatten(2)).masked_fill(~cross, float("-inf"))
    return torch.einsum("bnm,bcm->bcn", logits.softmax(-1), v.flatten(2)).reshape(v.shape)


def test_criss_cross():
    assert ex.check_criss_cross(_module_based)
    _check_table(ex.check_criss_cross, _cc(), {
        "centre twice": (_cc("twice"), "counted twice"),
        "two softmaxes": (_cc("two"), "one softmax over the whole path"),
        "scaled": (_cc("scaled"), "not scaled"),
        "full attention": (_full, "full attention"),
        "column only": (_cc("column"), "column path only"),
        "row only": (_cc("row"), "row path only"),
        "q, k swapped": (_cc(swap=True), "swapped"),
        "weights returned": (_cc("weights"), "shape"),
        "crash": (lambda q, k, v: q @ k, "raised"),
    })


def test_criss_cross_matches_the_module():
    m = attncourse.create("ccnet", 16, recurrence=1).double()
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn_like(p))
    x = torch.randn(2, 16, 4, 5, dtype=torch.float64)
    q, k, v = m.query(x), m.key(x), m.value(x)
    torch.testing.assert_close(m(x), x + m.gamma * _cc()(q, k, v))
