"""The MHSA chapter's exercise checkers: each typical mistake gets its own message, the right answer
passes, a blank answer is "not attempted" without raising (as tests/test_checkers_hybrid.py does).

One table per exercise: (wrong answer, a fragment of the message it must get). The mistakes are
the ones listed above each checker in ``attncourse/exercises/mhsa.py``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
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


def _pooled(pool="avg", scale="d", dim=-1, split="h d", heads_used=None, residual=True, w_o=True, out_bias=True,
            unflatten="h w", project_first=False, pooled_order="h w", pool_values=True, pool_queries=False):
    def fn(x, w, b, wo, bo, heads):
        hh = heads if heads_used is None else heads_used
        c, rows = x.shape[1], x.shape[2]

        def pool_(t):
            return {"avg": lambda: F.avg_pool2d(t, 2), "max": lambda: F.max_pool2d(t, 2), "none": lambda: t}[pool]()

        def tokens(t, order="h w"):
            return rearrange(t, f"b c h w -> b ({order}) c")

        if project_first:  # project every position, then average the projected maps: the same numbers
            kv = rearrange(tokens(x) @ w[c:].T + b[c:], "b (h w) c -> b c h w", h=rows)
            k, v = tokens(pool_(kv), pooled_order).split(c, dim=-1)
        else:
            ts = tokens(pool_(x), pooled_order)
            k = ts @ w[c : 2 * c].T + b[c : 2 * c]
            v = (ts if pool_values else tokens(x)) @ w[2 * c :].T + b[2 * c :]
        q = tokens(pool_(x) if pool_queries else x) @ w[:c].T + b[:c]
        q, k, v = (rearrange(t, f"b n ({split}) -> b h n d", h=hh) for t in (q, k, v))
        s = {"d": (c // hh) ** -0.5, "C": c**-0.5, "none": 1.0}[scale]
        o = rearrange(torch.softmax(q @ k.transpose(-1, -2) * s, dim) @ v, "b h n d -> b n (h d)")
        if w_o:
            o = o @ wo.T + (bo if out_bias else 0)
        o = rearrange(o, f"b ({unflatten}) c -> b c h w", h=rows // 2 if pool_queries else rows)
        return o if not residual or pool_queries else x + o
    return fn


def test_pooled_kv_mhsa():
    # not mistakes: an average commutes with the affine projections; keys and values reordered together
    assert ex.check_pooled_kv_mhsa(_pooled(project_first=True))
    assert ex.check_pooled_kv_mhsa(_pooled(pooled_order="w h"))
    _check_table(ex.check_pooled_kv_mhsa, _pooled(), {
        "not pooled (the module)": (_pooled(pool="none"), "full attention"),
        "max-pool": (_pooled(pool="max"), "*average* pool"),
        "queries pooled too": (_pooled(pool_queries=True), "queries were pooled too"),
        "values not pooled": (_pooled(pool_values=False), "must both come from the pooled map"),
        "no scale": (_pooled(scale="none"), "not divided by sqrt(d)"),
        "sqrt(C)": (_pooled(scale="C"), "model width"),
        "softmax over queries": (_pooled(dim=-2), "over the queries"),
        "(d h) split": (_pooled(split="d h"), "(d h)"),
        "one head": (_pooled(heads_used=1), "single head"),
        "no residual": (_pooled(residual=False), "residual is missing"),
        "no W^O": (_pooled(w_o=False), "W^O is missing"),
        "no output bias": (_pooled(out_bias=False), "bias b_o is missing"),
        "(w h) back": (_pooled(unflatten="w h"), "scrambled"),
        "a crash": (lambda *a: 1 / 0, "ZeroDivisionError"),
    })


def test_pooled_kv_mhsa_without_pooling_is_the_module():
    """The checker's reference, with no pool, is MultiHeadSelfAttention2d: the exercise's answer differs
    from the module only in the pooling."""
    from attncourse.selfattn.mhsa import MultiHeadSelfAttention2d

    m = MultiHeadSelfAttention2d(12, heads=3).double()
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn_like(p))
    x = torch.randn(2, 12, 6, 10, dtype=torch.float64)
    args = (x, m.qkv.weight, m.qkv.bias, m.proj.weight, m.proj.bias, 3)
    with torch.no_grad():
        torch.testing.assert_close(_pooled(pool="none")(*args), m(x))
        torch.testing.assert_close(ex._pooled_reference(*args, pool="none"), m(x))


def _distance(order="h w", metric="euclid", weighted=True, keys="sum", queries="mean", heads="keep"):
    def fn(a, height, width):
        n = height * width
        idx = torch.arange(n, dtype=torch.float64)
        if order == "h w":
            r, c = idx // width, idx % width
        else:
            r, c = idx % height, idx // height
        dr, dc = r[:, None] - r[None, :], c[:, None] - c[None, :]
        d = {"euclid": lambda: (dr**2 + dc**2).sqrt(), "squared": lambda: dr**2 + dc**2,
             "manhattan": lambda: dr.abs() + dc.abs()}[metric]()
        per_pair = a * d if weighted else d.expand_as(a) / n  # uniform weights 1/N
        per_query = per_pair.sum(-1) if keys == "sum" else per_pair.mean(-1)
        out = per_query.mean(-1) if queries == "mean" else per_query.sum(-1)
        if heads == "mean":
            return out.mean(1)
        if heads == "batch":
            return out.mean(0)
        return out
    return fn


def test_mean_attention_distance():
    _check_table(ex.check_mean_attention_distance, _distance(), {
        "(w h) order": (_distance(order="w h"), "(w h) order"),
        "squared": (_distance(metric="squared"), "squared distance"),
        "manhattan": (_distance(metric="manhattan"), "Manhattan"),
        "weights ignored": (_distance(weighted=False), "weights are ignored"),
        "averaged over keys": (_distance(keys="mean"), "averaged over the keys"),
        "queries summed": (_distance(queries="sum"), "queries are summed"),
        "heads averaged": (_distance(heads="mean"), "one number per image"),
        "batch averaged": (_distance(heads="batch"), "whole batch"),
    })


def test_mean_attention_distance_of_uniform_and_self_attention():
    """Weights on the query itself: distance 0; uniform weights: the mean distance between positions."""
    h, w = 4, 6
    eye = torch.eye(h * w, dtype=torch.float64).expand(2, 3, -1, -1)
    assert torch.equal(_distance()(eye, h, w), torch.zeros(2, 3, dtype=torch.float64))
    uniform = torch.full((1, 1, h * w, h * w), 1 / (h * w), dtype=torch.float64)
    torch.testing.assert_close(_distance()(uniform, h, w)[0, 0], ex._distances(h, w).mean())
