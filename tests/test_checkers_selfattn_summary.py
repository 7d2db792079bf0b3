"""The checkers of "Part III side by side": each typical mistake its own message, the right answer
passes, a blank answer is "not attempted" (the mistakes are listed above each checker)."""

from __future__ import annotations

import torch
from einops import rearrange

import attncourse
from attncourse.exercises import selfattn_summary as ex
from attncourse.experiments import protocol

from checker_tables import check_table as _check_table


def test_receptive_field():
    _check_table(ex.check_receptive_field, (10, 16), {
        "pool forgotten, or started at 0": ((9, 15), "started from 0 pixels"),
        "stride forgotten": ((8, 14), "2 · 2 = 4 pixels"),
        "both": ((7, 13), "adds a pixel"),
        "gate +7": ((10, 17), "k − 1 = 6"),
        "gate after the pool": ((10, 22), "before the pool"),
        "channel gate global, or a 3 x 3 gate": ((10, 12), "3 × 3 gate gives"),
        "swapped": ((16, 10), "other way round"),
        "whole image": ((12, 12), "not every unit"),
        "cbam wrong otherwise": ((10, 13), "baseline's 10 is right"),
        "other": ((5, 5), "Start from 1 pixel"),
        "not a pair": (10, "tuple of two"),
        "not numbers": (("a", "b"), "two integers"),
    })


def _measured_weights() -> dict[str, int]:
    """The weights each protocol module computes on one 32-channel 12 x 12 map, from the modules themselves."""
    p = protocol("selfattn")
    x = torch.randn(1, 32, 12, 12)
    out = {}
    for v in ["MHSA", "Non-local", "GC", "DANet", "CCNet"]:
        name, kwargs = p.variants[v]
        m = attncourse.create(name, 32, **kwargs).eval()
        with torch.no_grad():
            a = m.attention(x)
            if v == "GC":
                out[v] = int(a[:, :, 0].numel())                       # one map, the same row for every query
            elif v == "DANet":
                out[v] = a.numel() + m.channel_attention(x).numel()
            elif v == "CCNet":
                out[v] = 2 * int((a > 0).sum())                         # two passes; zeros off the cross
            else:
                out[v] = a.numel()
    return out


def test_weights_per_image():
    right = ex._weights_per_image()
    assert right == _measured_weights()
    assert attncourse.create("gc", 32).attention(torch.randn(1, 32, 12, 12)).shape[-1] == 144
    n = 144

    def but(v, value):
        return {**right, v: value}

    _check_table(ex.check_weights_per_image, right, {
        "MHSA with one head": (but("MHSA", n * n), "2 heads"),
        "GC with N²": (but("GC", n * n), "one map of N weights"),
        "DANet without X": (but("DANet", n * n), "C × C weights X"),
        "CCNet one pass": (but("CCNet", n * 23), "that is one pass"),
        "CCNet centre twice": (but("CCNet", 2 * n * 24), "centre of the cross"),
        "CCNet dense, one pass": (but("CCNet", n * n), "returns the first pass as a dense"),
        "CCNet dense, two passes": (but("CCNet", 2 * n * n), "dense N × N matrix holds zeros"),
        "pooled map": (but("Non-local", 36 * 36), "pooled 6 × 6 map"),
        "other": (but("Non-local", 7), "7 is not right"),
        "missing": ({"MHSA": 1}, "missing"),
        "not a dict": ([1, 2], "expected a dict"),
        "not a number": (but("GC", "many"), "expected a number"),
    })


def _dist(how="right"):
    def fn(weights, query, width):
        n = weights.shape[-1]
        per_row = n // width if how == "rows of H" else width
        j = torch.arange(n)
        rc = torch.stack([j // per_row, j % per_row], -1).to(weights.dtype)          # (N, 2): row, column
        delta = rc - rc[query]
        d = {"squared": (delta**2).sum(-1), "manhattan": delta.abs().sum(-1),
             "flat": (j - query).abs().to(weights.dtype)}.get(how, delta.norm(dim=-1))
        rows = weights[:, :, :, query] if how == "column" else weights[:, :, query, :]
        if how == "unweighted":
            return d.mean().repeat(weights.shape[0])
        per_head = (rows * d).mean(-1) if how == "mean" else (rows * d).sum(-1)
        if how == "heads kept":
            return per_head
        return per_head.sum(1) if how == "heads summed" else per_head.mean(1)
    return fn


def test_attention_distance():
    def by_grid(weights, query, width):                                 # the right answer, another route
        rows = rearrange(weights[:, :, query, :].mean(1), "b (h w) -> b h w", w=width)
        h = rows.shape[1]
        ys, xs = torch.meshgrid(torch.arange(h), torch.arange(width), indexing="ij")
        qy, qx = divmod(query, width)
        return (rows * ((ys - qy) ** 2 + (xs - qx) ** 2).sqrt()).sum((1, 2))

    assert ex.check_attention_distance(by_grid)
    _check_table(ex.check_attention_distance, _dist(), {
        "column": (_dist("column"), "column of the query"),
        "heads summed": (_dist("heads summed"), "*average* the heads"),
        "heads kept": (_dist("heads kept"), "one number per image and head"),
        "row, column with H": (_dist("rows of H"), "divided by the height"),
        "squared": (_dist("squared"), "squared distance"),
        "manhattan": (_dist("manhattan"), "Manhattan"),
        "flat index": (_dist("flat"), "flat indices"),
        "unweighted": (_dist("unweighted"), "plain mean"),
        "mean over N": (_dist("mean"), "weighted *sum*"),
        "crash": (lambda w, q, width: w @ q, "raised"),
        "other": (lambda w, q, width: w[:, 0, q, :5].sum(-1), "values differ"),
    })
