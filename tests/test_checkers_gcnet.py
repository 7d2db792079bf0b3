"""The GCNet chapter's exercise checkers: each typical mistake gets its own message, the right
answer passes, a blank answer is "not attempted" without raising.

One table per exercise: (wrong answer, a fragment of the message it must get). The mistakes are
the ones listed above each checker in ``attncourse/exercises/gcnet.py``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

import attncourse
from attncourse.cost import count_parameters
from attncourse.exercises import gcnet as ex

from checker_tables import check_table as _check_table


# --- Exercise 1: parameters of the mul+add block --------------------------------------------------


def _chapter_gc_parameters(C, r=16):
    """The chapter's gc_parameters(): one transform (the add fusion)."""
    return 2 * C * C // r + 2 * C + 3 * C // r + 1


def test_gc_parameters():
    C, h = 768, 96
    transform = 2 * C * h + 3 * h + C
    right = C + 1 + 2 * transform
    assert count_parameters(attncourse.create("gc", 768, reduction=8, fusion="mul+add")) == right
    _check_table(ex.check_gc_parameters, right, {
        "one transform (the chapter's gc_parameters)": (_chapter_gc_parameters(768, 8), "one transform"),
        "W_k twice": (right + C + 1, "counted twice"),
        "r = 16": (C + 1 + 2 * (2 * C * 48 + 3 * 48 + C), "r = 16"),
        "no LN affine": (right - 4 * h, "Both LayerNorms"),
        "LN one per unit (or one LN missing)": (right - 2 * h, "two parameters per hidden unit"),
        "LN over C": (right - 4 * h + 4 * C, "not 2C"),
        "no W_k": (right - C - 1, "Context modelling has parameters"),
        "no W_k bias": (right - 1, "has a bias as well"),
        "no conv biases": (right - 2 * (h + C), "have biases"),
        "sigmoid parameters": (right + C, "sigmoid has no parameters"),
        "non-local": (2 * C * C + 4.5 * C, "non-local block's count"),
    })


# --- Exercise 2: the context, strip by strip -------------------------------------------------------


def _logits(x, wk, bk):
    return torch.einsum("bchw,c->bhw", x, wk) + bk


def _ctx(x, alpha):
    return torch.einsum("bcn,bn->bc", x.flatten(2), alpha)


def _streamed(how="online"):
    def fn(strips, wk, bk):
        if how == "kept":  # keep the strips, read them at the end
            x = torch.cat(list(strips), dim=2)
            return _ctx(x, _logits(x, wk, bk).flatten(1).softmax(-1))
        if how == "copied":  # a copy of each strip is not a mistake (only memory)
            x = torch.cat([s.clone() for s in strips], dim=2)
            return _ctx(x, _logits(x, wk, bk).flatten(1).softmax(-1))
        m = total = acc = None
        contexts, sizes = [], []
        for strip in strips:
            logits = _logits(strip, wk, bk).flatten(1)                     # (B, rows·W)
            if how in ("mean", "sized"):
                contexts.append(_ctx(strip, logits.softmax(-1)))
                sizes.append(strip.shape[2])
                continue
            if how == "uniform":
                contexts.append(strip.sum((2, 3)))
                sizes.append(strip.shape[2] * strip.shape[3])
                continue
            if how == "last":
                m = total = acc = None
            new_m = logits.amax(-1) if m is None else torch.maximum(m, logits.amax(-1))
            if how == "no-max":
                e = torch.exp(logits)
            else:
                e = torch.exp(logits - new_m[:, None])
            if m is not None and how not in ("no-rescale", "no-max"):
                factor = torch.exp(m - new_m)
                total, acc = total * factor, acc * factor[:, None]
            total = e.sum(-1) if total is None else total + e.sum(-1)
            part = _ctx(strip, e)
            acc = part if acc is None else acc + part
            m = new_m
        if how == "mean":
            return torch.stack(contexts).mean(0)
        if how == "sized":
            w = torch.tensor(sizes, dtype=torch.float64) / sum(sizes)
            return sum(wi * c for wi, c in zip(w, contexts))
        if how == "uniform":
            return sum(contexts) / sum(sizes)
        return acc / total[:, None]
    return fn


def test_streamed_context():
    def without_bias(strips, wk, bk):  # not a mistake: the softmax is shift-invariant
        return _streamed()(strips, wk, torch.zeros_like(bk))

    assert ex.check_streamed_context(without_bias)
    assert ex.check_streamed_context(_streamed("copied"))
    _check_table(ex.check_streamed_context, _streamed(), {
        "strips normalised apart, averaged": (_streamed("mean"), "contexts averaged"),
        "strips normalised apart, by size": (_streamed("sized"), "weighted by the strips' sizes"),
        "no rescale": (_streamed("no-rescale"), "was not rescaled"),
        "no maximum (overflow)": (_streamed("no-max"), "overflows"),
        "strips kept past their turn": (_streamed("kept"), "reuses its buffer"),
        "last strip only": (_streamed("last"), "last strip's context alone"),
        "mean (SE)": (_streamed("uniform"), "SE's squeeze"),
        "weights returned": (lambda strips, wk, bk: torch.cat([_logits(s, wk, bk).flatten(1) for s in strips], 1),
                             "shape of weights"),
        "wrong values": (lambda strips, wk, bk: _streamed()(strips, wk, bk) * 1.1, "values differ"),
    })


def test_the_strips_are_the_map():
    """The strips tile the map; once consumed one by one they are the map, kept they are not."""
    x = torch.randn(2, 3, 7, 4, dtype=torch.float64)
    heights = [3, 1, 3]
    torch.testing.assert_close(torch.cat([s.clone() for s in ex._strips(x, heights)], dim=2), x)
    torch.testing.assert_close(torch.cat(list(ex._strips(x, heights)), dim=2), ex._kept_strips(x, heights))
    assert not torch.allclose(ex._kept_strips(x, heights), x)


# --- Exercise 3: the mul+add block -----------------------------------------------------------------


def _t(ctx, w1, b1, gamma, beta, w2, b2, *, ln="layer", relu_first=False):
    t = ctx @ w1.T + b1
    if relu_first:
        t = torch.relu(t)
    if ln == "layer":
        t = F.layer_norm(t, t.shape[-1:], gamma, beta)
    elif ln == "batch":
        t = F.batch_norm(t, None, None, gamma, beta, training=True)
    if not relu_first:
        t = torch.relu(t)
    return (t @ w2.T + b2)[:, :, None, None]


def _mul_add(how="right", ln="layer", relu_first=False, pool="att"):
    def fn(x, wk, bk, mul, add):
        ctx = _ctx(x, _logits(x, wk, bk).flatten(1).softmax(-1)) if pool == "att" else x.mean((2, 3))
        tm, ta = _t(ctx, *mul, ln=ln, relu_first=relu_first), _t(ctx, *add, ln=ln, relu_first=relu_first)
        return {
            "right": lambda: x * torch.sigmoid(tm) + ta,
            "sum first": lambda: (x + ta) * torch.sigmoid(tm),
            "swapped": lambda: x * torch.sigmoid(ta) + tm,
            "add twice": lambda: x * torch.sigmoid(ta) + ta,
            "mul twice": lambda: x * torch.sigmoid(tm) + tm,
            "no sigmoid": lambda: x * tm + ta,
            "sigmoid on add": lambda: x * torch.sigmoid(tm) + torch.sigmoid(ta),
            "add only": lambda: x + ta,
            "mul only": lambda: x * torch.sigmoid(tm),
            "x twice": lambda: x * torch.sigmoid(tm) + x + ta,
        }[how]()
    return fn


def test_gc_mul_add():
    _check_table(ex.check_gc_mul_add, _mul_add(), {
        "sum first": (_mul_add("sum first"), "sum comes first"),
        "transforms swapped": (_mul_add("swapped"), "swapped"),
        "add's transform twice": (_mul_add("add twice"), "additive transform's weights are used for both"),
        "mul's transform twice": (_mul_add("mul twice"), "multiplicative transform's weights are used for both"),
        "no sigmoid": (_mul_add("no sigmoid"), "sigmoid on the multiplicative term is missing"),
        "sigmoid on add": (_mul_add("sigmoid on add"), "went through a sigmoid too"),
        "add only": (_mul_add("add only"), "multiplicative term is missing"),
        "mul only": (_mul_add("mul only"), "additive term is missing"),
        "x twice": (_mul_add("x twice"), "added once more"),
        "no LN": (_mul_add(ln="none"), "LayerNorm is missing"),
        "ReLU first": (_mul_add(relu_first=True), "ReLU comes before"),
        "batch norm": (_mul_add(ln="batch"), "over the batch"),
        "mean pooling": (_mul_add(pool="avg"), "mean over positions"),
        "wrong shape": (lambda x, *a: x.mean((2, 3)), "the shape is"),
    })


def test_gc_mul_add_matches_the_module():
    """The checker's right answer is the package's module with fusion="mul+add", on the module's weights."""
    torch.manual_seed(0)
    m = attncourse.create("gc", 8, reduction=2, fusion="mul+add").double()
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn_like(p))
    x = torch.randn(2, 8, 5, 3, dtype=torch.float64)

    def weights(t):
        return (t[0].weight[:, :, 0, 0], t[0].bias, t[1].weight[:, 0, 0], t[1].bias[:, 0, 0], t[3].weight[:, :, 0, 0],
                t[3].bias)

    args = (m.conv_mask.weight[0, :, 0, 0], m.conv_mask.bias, weights(m.channel_mul_conv), weights(m.channel_add_conv))
    with torch.no_grad():
        torch.testing.assert_close(_mul_add()(x, *args), m(x))
