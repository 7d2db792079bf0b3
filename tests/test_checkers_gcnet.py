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


# --- Exercise 1: parameters ---------------------------------------------------------------------


def test_gc_parameters():
    C, h = 512, 32
    right = 2 * C * h + 2 * C + 3 * h + 1
    assert count_parameters(attncourse.create("gc", 512)) == right
    _check_table(ex.check_gc_parameters, right, {
        "no LN": (right - 2 * h, "affine"),
        "LN one per unit": (right - h, "two parameters per hidden unit"),
        "LN over C": (right - 2 * h + 2 * C, "not 2C"),
        "no W_k": (right - C - 1, "Context modelling has parameters"),
        "no W_k bias": (right - 1, "has a bias as well"),
        "no conv biases": (right - h - C, "W_v1 and W_v2, have biases"),
        "SE": (2 * C * h + h + C, "SE's count"),
        "non-local": (2 * C * C + 4.5 * C, "non-local block's count"),
        "r = 4": (2 * C * 128 + 2 * C + 3 * 128 + 1, "r = 4"),
        "simplified NL": (C + 1 + C * C + C, "simplified non-local"),
    })


# --- Exercise 2: the context ---------------------------------------------------------------------


def _logits(x, wk, bk):
    return torch.einsum("bchw,c->bhw", x, wk) + bk


def _ctx(x, alpha):
    return torch.einsum("bcn,bn->bc", x.flatten(2), alpha)


def right_context(x, wk, bk):
    return _ctx(x, _logits(x, wk, bk).flatten(1).softmax(-1))


def test_global_context():
    def without_bias(x, wk, bk):  # not a mistake: the softmax is shift-invariant
        return _ctx(x, torch.einsum("bchw,c->bhw", x, wk).flatten(1).softmax(-1))

    assert ex.check_global_context(without_bias)
    _check_table(ex.check_global_context, right_context, {
        "softmax over channel axis": (lambda x, wk, bk: _ctx(x, _logits(x, wk, bk)[:, None].softmax(1).flatten(1)),
                                      "size-1 channel axis"),
        "mean (SE)": (lambda x, wk, bk: x.mean((2, 3)), "SE's squeeze"),
        "raw logits": (lambda x, wk, bk: _ctx(x, _logits(x, wk, bk).flatten(1)), "raw logits"),
        "sigmoid": (lambda x, wk, bk: _ctx(x, _logits(x, wk, bk).flatten(1).sigmoid()), "a sigmoid"),
        "softmax over W": (lambda x, wk, bk: _ctx(x, _logits(x, wk, bk).softmax(-1).flatten(1)), "over W only"),
        "softmax over H": (lambda x, wk, bk: _ctx(x, _logits(x, wk, bk).softmax(-2).flatten(1)), "over H only"),
        "softmax over batch": (lambda x, wk, bk: _ctx(x, _logits(x, wk, bk).flatten(1).softmax(0)), "batch axis"),
        "returned alpha": (lambda x, wk, bk: _logits(x, wk, bk).flatten(1).softmax(-1), "shape of the weights"),
        "returned x + context": (lambda x, wk, bk: x + right_context(x, wk, bk)[:, :, None, None], "the fusion"),
        "wrong values": (lambda x, wk, bk: right_context(x, wk, bk) * 1.1, "values differ"),
    })


# --- Exercise 3: the block -----------------------------------------------------------------------


def _gc(*, ln="layer", relu_first=False, relu=True, fusion="add", residual=True, pool="att"):
    def fn(x, wk, bk, w1, b1, gamma, beta, w2, b2):
        ctx = right_context(x, wk, bk) if pool == "att" else x.mean((2, 3))
        t = ctx @ w1.T + b1
        if relu_first:
            t = torch.relu(t)
        if ln == "layer":
            t = F.layer_norm(t, t.shape[-1:], gamma, beta)
        elif ln == "plain":
            t = F.layer_norm(t, t.shape[-1:])
        elif ln == "unbiased":
            t = (t - t.mean(-1, keepdim=True)) / torch.sqrt(t.var(-1, keepdim=True) + 1e-5) * gamma + beta
        elif ln == "batch":
            t = F.batch_norm(t, None, None, gamma, beta, training=True)
        if relu and not relu_first:
            t = torch.relu(t)
        t = (t @ w2.T + b2)[:, :, None, None]
        if fusion == "mul":
            return x * torch.sigmoid(t)
        return x + t if residual else t.expand_as(x)
    return fn


def test_gc_block():
    _check_table(ex.check_gc_block, _gc(), {
        "no LN": (_gc(ln="none"), "LayerNorm is missing"),
        "LN no affine": (_gc(ln="plain"), "no scale γ"),
        "unbiased var": (_gc(ln="unbiased"), "unbiased variance"),
        "batch norm": (_gc(ln="batch"), "over the batch"),
        "ReLU first": (_gc(relu_first=True), "ReLU comes before"),
        "no ReLU": (_gc(relu=False), "ReLU between"),
        "mul fusion": (_gc(fusion="mul"), "multiplicative fusion"),
        "no residual": (_gc(residual=False), "residual x is missing"),
        "mean pooling": (_gc(pool="avg"), "mean over positions"),
        "wrong shape": (lambda *a: a[0].mean((2, 3)), "the shape is"),
    })


def test_gc_block_matches_the_module():
    """The checker's right answer is the package's module, eq. (5), on the module's weights."""
    torch.manual_seed(0)
    m = attncourse.create("gc", 8, reduction=2).double()
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn_like(p))
    x = torch.randn(2, 8, 5, 3, dtype=torch.float64)
    t = m.channel_add_conv
    args = (m.conv_mask.weight[0, :, 0, 0], m.conv_mask.bias, t[0].weight[:, :, 0, 0], t[0].bias,
            t[1].weight[:, 0, 0], t[1].bias[:, 0, 0], t[3].weight[:, :, 0, 0], t[3].bias)
    torch.testing.assert_close(_gc()(x, *args), m(x))
