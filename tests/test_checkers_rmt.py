"""The RMT chapter's exercise checkers: each typical mistake gets its own message, the right answer
passes, a blank answer is "not attempted" without raising.

One table per exercise: (wrong answer, a fragment of the message it must get). The mistakes are
the ones listed above each checker in ``attncourse/exercises/rmt.py``.
"""

from __future__ import annotations

import math

import torch
from einops import einsum, rearrange

from attncourse.exercises import rmt as ex
from attncourse.local.rmt import ManhattanSelfAttention2d, head_decays

from checker_tables import check_table


def test_reach():
    g = head_decays(5, 2.0, 5.0).double().exp()
    right = math.floor(math.log(0.01) / math.log(g[-1].item())) + 1
    assert right == 293 and g[-1] ** right < 0.01 <= g[-1] ** (right - 1)
    check_table(ex.check_reach, right, {
        "i = heads": (588, "does not exist"),
        "fastest head": (17, "fastest head"),
        "heads_range 4": (167, "heads_range 4"),
        "no init_value": (72, "init_value is missing"),
        "rounded down": (292, "still above 1/100"),
        "other": (300, "not right"),
    })


def _hw(how="right"):
    """A learner's decomposed_hw, written independently of the checker's reference."""
    def fn(q, k, v, gamma):
        h, w = q.shape[1], q.shape[2]
        dh = (torch.arange(h)[:, None] - torch.arange(h)[None, :]).abs().to(q.dtype)
        dw = (torch.arange(w)[:, None] - torch.arange(w)[None, :]).abs().to(q.dtype)
        lg = {"sign": -math.log(gamma), "gamma as log": gamma, "no decay": 0.0}.get(how, math.log(gamma))
        kk = k / math.sqrt(q.shape[-1]) if how == "scaled twice" else k

        def weights(logits, dist):
            if how == "product":
                return logits.softmax(-1) * gamma**dist
            return (logits + dist * lg).softmax(-2 if how == "query axis" else -1)

        def along_cols(inp):
            a = weights(torch.einsum("byxd,bzxd->bxyz", q, kk), dh)
            return torch.einsum("bxyz,bzxd->byxd", a, inp)

        def along_rows(inp):
            a = weights(torch.einsum("byxd,byzd->byxz", q, kk), dw)
            return torch.einsum("byxz,byzd->byxd", a, inp)

        if how == "rows first":
            return along_cols(along_rows(v))
        if how == "second pass on v":
            return along_rows(v)
        if how == "no return":
            along_rows(along_cols(v))
            return None
        return along_rows(along_cols(v))
    return fn


def test_decomposed_hw():
    check_table(ex.check_decomposed_hw, _hw(), {
        "rows first": (_hw("rows first"), "rows first, then the columns"),
        "second pass on v": (_hw("second pass on v"), "the row pass reads v"),
        "no decay": (_hw("no decay"), "there is no decay"),
        "product": (_hw("product"), "the paper's product"),
        "sign": (_hw("sign"), "wrong sign"),
        "gamma as log": (_hw("gamma as log"), "|Δ| · γ"),
        "query axis": (_hw("query axis"), "over the queries"),
        "scaled twice": (_hw("scaled twice"), "already scaled"),
        "nothing returned": (_hw("no return"), "expected a torch.Tensor"),
        "a crash": (lambda *a: a[0] @ a[1], "RuntimeError"),
    })


def test_rows_first_is_the_module_s_decomposed_form():
    """The checker's rows-first variant is the module's decomposed form for one head (no rotation, no LePE)."""
    m = ManhattanSelfAttention2d(4, heads=1, decomposed=True, theta_shift=False, lepe_kernel=None, identity_init=False).double()
    with torch.no_grad():
        m.proj.weight.copy_(torch.eye(4)), m.proj.bias.zero_()
    x = torch.randn(2, 4, 3, 5, dtype=torch.float64)
    t = x.permute(0, 2, 3, 1)
    wq, wk, wv = m.qkv.weight.split(4)
    bq, bk, bv = m.qkv.bias.split(4)
    q, k, v = t @ wq.T + bq, (t @ wk.T + bk) / 2, t @ wv.T + bv  # k scaled by 1/sqrt(4)
    gamma = m.log_gamma.double().exp().item()
    torch.testing.assert_close(m(x) - x, ex._hw(q, k, v, gamma, "rows first").permute(0, 3, 1, 2))
    assert not torch.allclose(m(x) - x, ex._hw(q, k, v, gamma).permute(0, 3, 1, 2))  # the orders differ


def _split(how="right"):
    def fn(a_w, a_h):
        b, h, w, _ = a_w.shape
        out = torch.zeros(b, h, w, h, w, dtype=a_w.dtype)
        for y in range(h):
            for x in range(w):
                for y2 in range(h):
                    for x2 in range(w):
                        if how == "rows first":
                            val = a_h[:, x, y, y2] * a_w[:, y2, x, x2]
                        elif how == "key's row":
                            val = a_w[:, y2, x, x2] * a_h[:, x2, y, y2]
                        elif how == "query's column":
                            val = a_w[:, y, x, x2] * a_h[:, x, y, y2]
                        else:
                            val = a_w[:, y, x, x2] * a_h[:, x2, y, y2]
                        out[:, y, x, y2, x2] = val
        if how == "unflattened":
            return out
        if how == "(w h)":
            return rearrange(out, "b y x y2 x2 -> b (x y) (x2 y2)")
        if how == "transposed":
            return rearrange(out, "b y x y2 x2 -> b (y2 x2) (y x)")
        return rearrange(out, "b y x y2 x2 -> b (y x) (y2 x2)")
    return fn


def test_split_weights():
    check_table(ex.check_split_weights, _split(), {
        "rows first": (_split("rows first"), "rows-first path of the chapter"),
        "key's row": (_split("key's row"), "read in the key's row"),
        "query's column": (_split("query's column"), "read in the query's column"),
        "(w h)": (_split("(w h)"), "(w h) order"),
        "transposed": (_split("transposed"), "queries and keys are swapped"),
        "unflattened": (_split("unflattened"), "the shape is"),
        "a crash": (lambda a_w, a_h: a_w @ a_h, "RuntimeError"),
    })


def test_split_weights_are_what_decomposed_hw_applies():
    """The right answers of exercises 2 and 3 agree: the columns-first output is the effective weights times v."""
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 4, 5, generator=g, dtype=torch.float64) for _ in range(3))
    lg = math.log(0.7)
    dh = (torch.arange(3)[:, None] - torch.arange(3)[None, :]).abs().double() * lg
    dw = (torch.arange(4)[:, None] - torch.arange(4)[None, :]).abs().double() * lg
    a_h = torch.softmax(einsum(q, k, "b y x d, b yy x d -> b x y yy") + dh, -1)
    a_w = torch.softmax(einsum(q, k, "b y x d, b y xx d -> b y x xx") + dw, -1)
    eff = ex._split(a_w, a_h)
    out = rearrange(eff @ rearrange(v, "b h w d -> b (h w) d"), "b (h w) d -> b h w d", h=3)
    torch.testing.assert_close(out, ex._hw(q, k, v, 0.7))
