"""The MHSA chapter's exercise checkers: each typical mistake gets its own message, the right answer
passes, a blank answer is "not attempted" without raising (as tests/test_checkers_hybrid.py does).

One table per exercise: (wrong answer, a fragment of the message it must get). The mistakes are
the ones listed above each checker in ``attncourse/exercises/mhsa.py``.
"""

from __future__ import annotations

import torch
from einops import rearrange

from attncourse.exercises import mhsa as ex

from checker_tables import check_table as _check_table


def test_attention_bytes():
    b, h, c, n = 3, 8, 256, 56 * 56
    right = b * h * n * n * 4
    assert right == 944_111_616
    _check_table(ex.check_attention_bytes, right, {
        "N, not N x N": (b * h * n * 4, "not N"),
        "elements": (b * h * n * n, "4 bytes"),
        "float64, or two tensors": (b * h * n * n * 8, "float64"),
        "no heads": (b * n * n * 4, "multiply by h"),
        "no batch": (h * n * n * 4, "multiply by B"),
        "size of Q": (b * h * n * (c // h) * 4, "size of Q"),
        "MiB": (right / 2**20, "MiB"),
        "MB": (right / 1e6, "in MB"),
        "GB": (right / 1e9, "in GB"),
    })


def _mhsa(scale="d", dim=-1, split="h d", heads_used=None, swap=False, residual=True, w_o=True, out_bias=True,
          unflatten="h w"):
    def fn(x, w, b, wo, bo, heads):
        hh = heads if heads_used is None else heads_used
        c, rows = x.shape[1], x.shape[2]
        t = rearrange(x, "b c h w -> b (h w) c")
        q, k, v = rearrange(t @ w.T + b, f"b n (three {split}) -> three b h n d", three=3, h=hh)
        if swap:
            q, k = k, q
        s = {"d": (c // hh) ** -0.5, "C": c**-0.5, "none": 1.0}[scale]
        o = rearrange(torch.softmax(q @ k.transpose(-1, -2) * s, dim) @ v, "b h n d -> b n (h d)")
        if w_o:
            o = o @ wo.T + (bo if out_bias else 0)
        o = rearrange(o, f"b ({unflatten}) c -> b c h w", h=rows)
        return x + o if residual else o
    return fn


def test_mhsa_function():
    _check_table(ex.check_mhsa_function, _mhsa(), {
        "no scale": (_mhsa(scale="none"), "not divided by sqrt(d)"),
        "sqrt(C)": (_mhsa(scale="C"), "model width"),
        "softmax over queries": (_mhsa(dim=-2), "over the queries"),
        "(d h) split": (_mhsa(split="d h"), "(d h)"),
        "one head": (_mhsa(heads_used=1), "single head"),
        "q and k swapped": (_mhsa(swap=True), "swapped"),
        "no residual": (_mhsa(residual=False), "residual is missing"),
        "no W^O": (_mhsa(w_o=False), "W^O is missing"),
        "no output bias": (_mhsa(out_bias=False), "bias b_o is missing"),
        "(w h) back": (_mhsa(unflatten="w h"), "scrambled"),
        "a crash": (lambda *a: 1 / 0, "ZeroDivisionError"),
    })


def _query_map(how="right"):
    def fn(a, h, w, i, j):
        b = a.shape[0]
        return {
            "right": lambda: a[:, :, i * w + j].mean(1).reshape(b, h, w),
            "column": lambda: a[:, :, :, i * w + j].mean(1).reshape(b, h, w),
            "column-major": lambda: a[:, :, j * h + i].mean(1).reshape(b, h, w),
            "(w, h)": lambda: a[:, :, i * w + j].mean(1).reshape(b, w, h),
            "per head": lambda: a[:, :, i * w + j].reshape(b, -1, h, w),
            "sum": lambda: a[:, :, i * w + j].sum(1).reshape(b, h, w),
            "max": lambda: a[:, :, i * w + j].amax(1).reshape(b, h, w),
            "head 0": lambda: a[:, 0, i * w + j].reshape(b, h, w),
        }[how]()
    return fn


def test_query_map():
    _check_table(ex.check_query_map, _query_map(), {
        "column": (_query_map("column"), "column of the weights"),
        "column-major": (_query_map("column-major"), "column-major"),
        "(w, h)": (_query_map("(w, h)"), "reshape to (B, H, W)"),
        "per head": (_query_map("per head"), "one map per head"),
        "sum": (_query_map("sum"), "summed"),
        "max": (_query_map("max"), "maximum over the heads"),
        "head 0": (_query_map("head 0"), "head 0 only"),
    })
