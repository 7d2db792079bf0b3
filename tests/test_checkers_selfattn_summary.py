"""The checkers of "Part III side by side": each typical mistake its own message, the right answer
passes, a blank answer is "not attempted" (the mistakes are listed above each checker)."""

from __future__ import annotations

import pytest
from einops import rearrange

from attncourse.cost import count_parameters
from attncourse.exercises import selfattn_summary as ex
from attncourse.experiments import protocol

from checker_tables import check_table as _check_table


def test_receptive_field():
    _check_table(ex.check_receptive_field, (10, 16), {
        "pool forgotten": ((9, 15), "max-pool widens"),
        "stride forgotten": ((8, 14), "2 · 2 = 4 pixels"),
        "both": ((7, 13), "adds a pixel"),
        "gate +7": ((10, 17), "k − 1 = 6"),
        "gate after the pool": ((10, 22), "before the pool"),
        "channel gate global": ((10, 12), "channel gate pools"),
        "swapped": ((16, 10), "other way round"),
        "whole image": ((12, 12), "not every unit"),
        "cbam wrong otherwise": ((10, 13), "baseline's 10 is right"),
        "other": ((5, 5), "Start from 1 pixel"),
        "not a pair": (10, "tuple of two"),
        "not numbers": (("a", "b"), "two integers"),
    })


def test_added_parameters():
    import attncourse
    from attncourse.nets import TinyNet

    p = protocol("selfattn")
    names = ["MHSA", "Non-local", "GC", "DANet", "CCNet"]
    wider = {"widths": (16, 48, 32), **p.network_kwargs}
    base = count_parameters(TinyNet(2, 2, **wider))
    right = {v: count_parameters(TinyNet(2, 2, attn=p.variants[v][0], attn_kwargs=p.variants[v][1], **wider)) - base
             for v in names}

    def but(v, value):
        return {**right, v: value}

    _check_table(ex.check_added_parameters, right, {
        "C=32": (but("MHSA", count_parameters(attncourse.create("mhsa", 32, heads=2))), "protocol's 32 channels"),
        "C=64": (but("GC", count_parameters(attncourse.create("gc", 64))), "C = 64"),
        "whole": (but("CCNet", right["CCNet"] + base), "whole network"),
        "no beta": (but("DANet", right["DANet"] - 1), "β"),
        "other": (but("Non-local", 7), "7 is not right"),
        "missing": ({"MHSA": 1}, "missing"),
        "not a dict": ([1, 2], "expected a dict"),
        "not a number": (but("GC", "many"), "expected a number"),
    })


def test_share():
    def right(w, q, region):
        return w[:, :, q, rearrange(region, "h w -> (h w)")].sum(-1).mean(1)

    _check_table(ex.check_share, right, {
        "column": (lambda w, q, r: w[:, :, rearrange(r, "h w -> (h w)"), q].sum(-1).mean(1), "column of the query"),
        "heads summed": (lambda w, q, r: w[:, :, q, rearrange(r, "h w -> (h w)")].sum(-1).sum(1), "*average* the heads"),
        "heads kept": (lambda w, q, r: w[:, :, q, rearrange(r, "h w -> (h w)")].sum(-1), "shape (B,)"),
        "(w h) order": (lambda w, q, r: w[:, :, q, rearrange(r, "h w -> (w h)")].sum(-1).mean(1), "(h w) order"),
        "mean": (lambda w, q, r: w[:, :, q, rearrange(r, "h w -> (h w)")].mean(-1).mean(1), "*sum*"),
        "crash": (lambda w, q, r: w @ r, "raised"),
        "other": (lambda w, q, r: w[:, 0, q, :5].sum(-1), "values differ"),
    })
