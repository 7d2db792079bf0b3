"""The CCNet chapter's exercise checkers: each typical mistake gets its own message, the right answer
passes, a blank answer is "not attempted" without raising (the mistakes are listed above each checker
in ``attncourse/exercises/ccnet.py``).
"""

from __future__ import annotations

import torch

import attncourse
from attncourse.cost import count_parameters
from attncourse.exercises import ccnet as ex

from checker_tables import check_table as _check_table


def test_unshared_parameters():
    one = count_parameters(attncourse.create("ccnet", 96, reduction=4))
    assert one == 2 * (96 * 24 + 24) + 96 * 96 + 96 + 1 == 13_969
    assert count_parameters(attncourse.create("ccnet", 96, reduction=4, recurrence=3)) == one   # shared passes
    right = 3 * one
    c8 = count_parameters(attncourse.create("ccnet", 96))
    _check_table(ex.check_unshared_parameters, right, {
        "one pass (shared)": (one, "one pass's set"),
        "width C/8": (3 * c8, "default width C/8 = 12"),
        "the module itself": (c8, "CrissCrossAttention(96) itself"),
        "R = 2": (2 * one, "R = 2 is the module's default"),
        "one gamma": (3 * (one - 1) + 1, "three γ"),
        "no gamma": (3 * (one - 1), "one scalar per pass"),
        "no biases": (3 * (one - 24 - 24 - 96), "have biases"),
        "value reduced": (3 * (3 * (96 * 24 + 24) + 1), "keeps all C channels"),
        "query/key not reduced": (3 * (3 * (96 * 96 + 96) + 1), "not C"),
        "other": (1234, "not right"),
    })


def test_cross3d_entries():
    n = 6 * 20 * 30
    _check_table(ex.check_cross3d_entries, n * 54, {
        "centre three times": (n * 56, "mask it in two"),
        "centre twice": (n * 55, "still counted twice"),
        "centre left out": (n * 53, "is one of its keys"),
        "one query": (54, "every one of the N"),
        "full": (n * n, "full attention"),
        "2-D cross per slice": (n * 49, "line along T"),
    })


def _cross_mask(t, h, w):
    """(N, N): key and query on one axis-aligned line (share two of their three coordinates)."""
    z, y, x = torch.meshgrid(torch.arange(t), torch.arange(h), torch.arange(w), indexing="ij")
    z, y, x = z.flatten(), y.flatten(), x.flatten()
    same = lambda a: a[:, None] == a[None, :]  # noqa: E731
    return (same(y) & same(x)) | (same(z) & same(x)) | (same(z) & same(y))


def _masked_full(q, k, v):
    """The right answer by another route: full attention, -inf off each voxel's three lines."""
    logits = torch.einsum("bcn,bcm->bnm", q.flatten(2), k.flatten(2)).masked_fill(~_cross_mask(*q.shape[2:]), float("-inf"))
    return torch.einsum("bnm,bcm->bcn", logits.softmax(-1), v.flatten(2)).reshape(v.shape)


def _cc3(how="right", swap=False):
    def fn(q, k, v):
        if swap:
            q, k = k, q
        t, h, w = q.shape[2:]
        e_t = torch.einsum("bcthw,bcshw->bthws", q, k)
        e_h = torch.einsum("bcthw,bctgw->bthwg", q, k)
        e_w = torch.einsum("bcthw,bcthv->bthwv", q, k)
        if how == "scaled":
            e_t, e_h, e_w = (e / q.shape[1] ** 0.5 for e in (e_t, e_h, e_w))
        inf = float("-inf")
        if how in ("right", "scaled", "three", "weights", "twice", "none"):
            e_t = e_t.masked_fill(torch.eye(t, dtype=torch.bool)[:, None, None, :], inf)
        if how in ("right", "scaled", "three", "weights", "none", "no t"):
            e_h = e_h.masked_fill(torch.eye(h, dtype=torch.bool)[None, :, None, :], inf)
        if how == "none":
            e_w = e_w.masked_fill(torch.eye(w, dtype=torch.bool)[None, None, :, :], inf)
        if how == "no t":
            a = torch.cat([e_h, e_w], -1).softmax(-1)
            return (torch.einsum("bthwg,bctgw->bcthw", a[..., :h], v)
                    + torch.einsum("bthwv,bcthv->bcthw", a[..., h:], v))
        if how == "three":
            a_t, a_h, a_w = e_t.softmax(-1), e_h.softmax(-1), e_w.softmax(-1)
        else:
            a = torch.cat([e_t, e_h, e_w], -1).softmax(-1)
            if how == "weights":
                return a
            a_t, a_h, a_w = a[..., :t], a[..., t:t + h], a[..., t + h:]
        return (torch.einsum("bthws,bcshw->bcthw", a_t, v) + torch.einsum("bthwg,bctgw->bcthw", a_h, v)
                + torch.einsum("bthwv,bcthv->bcthw", a_w, v))
    return fn


def _full(q, k, v):
    a = torch.einsum("bcn,bcm->bnm", q.flatten(2), k.flatten(2)).softmax(-1)
    return torch.einsum("bnm,bcm->bcn", a, v.flatten(2)).reshape(v.shape)


def test_criss_cross_3d():
    assert ex.check_criss_cross_3d(_masked_full)
    _check_table(ex.check_criss_cross_3d, _cc3(), {
        "centre three times": (_cc3("thrice"), "counted three times"),
        "centre twice": (_cc3("twice"), "still counted twice"),
        "centre left out": (_cc3("none"), "left out"),
        "no line along T": (_cc3("no t"), "within each slice"),
        "three softmaxes": (_cc3("three"), "one softmax per line"),
        "scaled": (_cc3("scaled"), "not scaled"),
        "full attention": (_full, "full attention"),
        "q, k swapped": (_cc3(swap=True), "swapped"),
        "weights returned": (_cc3("weights"), "shape"),
        "crash": (lambda q, k, v: q @ k, "raised"),
    })


def test_criss_cross_3d_on_one_slice_is_the_module():
    """With T = 1 the 3-D cross is the 2-D one: the right answer equals the package's module."""
    m = attncourse.create("ccnet", 16, recurrence=1).double()
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn_like(p))
    x = torch.randn(2, 16, 4, 5, dtype=torch.float64)
    q, k, v = (conv(x)[:, :, None] for conv in (m.query, m.key, m.value))
    torch.testing.assert_close(m(x), x + m.gamma * _cc3()(q, k, v)[:, :, 0])
