"""The non-local chapter's exercise checkers: each typical mistake gets its own message, the right
answer passes, a blank answer is "not attempted" without raising.

One table per exercise: (wrong answer, a fragment of the message it must get). The mistakes are
the ones listed above each checker in ``attncourse/exercises/nonlocal_.py``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch.nn.attention import SDPBackend, sdpa_kernel

import attncourse
from attncourse.cost import count_flops, count_parameters
from attncourse.exercises import nonlocal_ as ex

from checker_tables import check_table as _check_table


# --- Exercise 1: parameters of the concatenation form -----------------------------------------


def test_concat_parameters():
    c, d = 256, 128
    right = 3 * (c * d + d) + (d * c + c) + 2 * c + 2 * d
    assert count_parameters(attncourse.create("nonlocal", 256, pairwise="concatenation")) == right
    base = right - 2 * d
    _check_table(ex.check_concat_parameters, right, {
        "w_f forgotten": (base, "embedded-Gaussian count"),
        "w_f with a bias": (right + 1, "no bias"),
        "w_f of length d": (base + d, "not C/2"),
        "w_f of length 2C": (base + 2 * c, "not the raw"),
        "BN buffers": (right + 2 * c, "buffers"),
        "BN forgotten": (right - 2 * c, "followed by a batch norm"),
        "conv biases forgotten": (right - 3 * d - c, "have biases"),
        "inner width C": (3 * (c * c + c) + (c * c + c) + 2 * c + 2 * c, "inner width"),
        "no θ, φ": (right - 2 * (c * d + d), "only the Gaussian"),
    })


# --- Exercise 2: multiply-adds of the default block ---------------------------------------------


def test_default_macs():
    c, n, d = 512, 196, 256
    right = 3 * n * c * d + 2 * n * n * d + n * d * c
    with sdpa_kernel(SDPBackend.MATH):  # FlopCounterMode counts 0 for the CPU flash kernel
        assert count_flops(attncourse.create("nonlocal", 512), torch.randn(1, 512, 14, 14)) == 2 * right
    assert 3 * n * c * c + 2 * n * n * c + n * c * c == 2 * right  # an inner width C doubles every term
    _check_table(ex.check_default_macs, right, {
        "FLOPs (or the inner width C: the same number)": (2 * right, "halve it"),
        "no N x N products": (right - 2 * n * n * d, "two N × N products are missing"),
        "one N x N product": (right - n * n * d, "Only one N × N product"),
        "subsampled": (n * c * d + 2 * 49 * c * d + 2 * n * 49 * d + n * d * c, "sub-sampling"),
        "no W_z": (right - n * d * c, "W_z"),
    })


# --- Exercise 3: the dot-product form ------------------------------------------------------------


def _dot(norm="N", swap=False, biases=True, order="hw", out="tokens"):
    def fn(x, wt, bt, wp, bp, wg, bg):
        B, C, H, W = x.shape
        t = rearrange(x, "b c h w -> b (h w) c")
        q = t @ wt.T + (bt if biases else 0)
        k = t @ wp.T + (bp if biases else 0)
        v = t @ wg.T + (bg if biases else 0)
        if swap:
            q, k = k, q
        f = q @ k.transpose(1, 2)
        n, d = H * W, q.shape[-1]
        a = {"N": lambda: f / n, "softmax": lambda: torch.softmax(f, -1), "sum": lambda: f / f.sum(-1, keepdim=True),
             "none": lambda: f, "d": lambda: f / d, "sqrt": lambda: f / d**0.5}[norm]()
        y = a @ v
        if order == "wh":
            y = rearrange(y, "b (h w) d -> b (w h) d", h=H)
        if out == "grid":
            return rearrange(y, "b (h w) d -> b d h w", h=H)
        if out == "channels":
            return y.transpose(1, 2)
        return y
    return fn


def test_dot_product_y():
    _check_table(ex.check_dot_product_y, _dot(), {
        "softmax": (_dot("softmax"), "embedded Gaussian"),
        "sum of f": (_dot("sum"), "Σ_j f"),
        "no normalisation": (_dot("none"), "normalisation 1/C(x) is missing"),
        "divided by d": (_dot("d"), "divided by d;"),
        "divided by sqrt(d)": (_dot("sqrt"), "sqrt(d)"),
        "θ, φ swapped": (_dot(swap=True), "swapped"),
        "no biases": (_dot(biases=False), "biases"),
        "(w h) order": (_dot(order="wh"), "(w h) order"),
        "grid output": (_dot(out="grid"), "as tokens"),
        "channels first": (_dot(out="channels"), "as tokens"),
    })


def test_dot_product_y_matches_the_module():
    """The exercise's y is the module's: W_z y + BN + x with the module's weights."""
    m = attncourse.create("nonlocal", 6, pairwise="dot_product", reduction=2).double().eval()
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn_like(p))
    x = torch.randn(2, 6, 3, 5, dtype=torch.float64)
    y = _dot()(x, m.theta.weight, m.theta.bias, m.phi.weight, m.phi.bias, m.g.weight, m.g.bias)
    torch.testing.assert_close(m(x), x + m.bn(rearrange(m.w_z(y), "b (h w) c -> b c h w", h=3)))


# --- Exercise 4: sub-sampled weights ---------------------------------------------------------------


def _sub(pool="max-ceil", after=False, dim=-1, scale=False, pool_queries=False):
    def fn(x, wt, bt, wp, bp):
        B, C, H, W = x.shape
        def p(t):
            return {"max-ceil": lambda: F.max_pool2d(t, 2, 2, ceil_mode=True), "max-floor": lambda: F.max_pool2d(t, 2, 2),
                    "avg": lambda: F.avg_pool2d(t, 2, 2, ceil_mode=True), "none": lambda: t}[pool]()
        tokens = lambda t: rearrange(t, "b c h w -> b (h w) c")  # noqa: E731
        q = tokens(p(x) if pool_queries else x) @ wt.T + bt
        if after:
            phi = rearrange(tokens(x) @ wp.T + bp, "b (h w) d -> b d h w", h=H)
            k = tokens(p(phi))
        else:
            k = tokens(p(x)) @ wp.T + bp
        logits = q @ k.transpose(1, 2) * (q.shape[-1] ** -0.5 if scale else 1.0)
        return torch.softmax(logits, dim)
    return fn


def test_subsampled_weights():
    _check_table(ex.check_subsampled_weights, _sub(), {
        "no sub-sampling": (_sub("none"), "one key per position"),
        "floor pooling": (_sub("max-floor"), "dropped the last row"),
        "pool after φ": (_sub(after=True), "pooled after the projection"),
        "average pooling": (_sub("avg"), "average pooling"),
        "softmax over queries": (_sub(dim=1), "over the queries"),
        "scaled": (_sub(scale=True), "d^-1/2"),
        "queries pooled": (_sub(pool_queries=True), "queries were pooled"),
    })


def test_subsampled_weights_match_the_module():
    m = attncourse.create("nonlocal", 6, subsample=True).double().eval()
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn_like(p) * 0.4)
    x = torch.randn(2, 6, 5, 7, dtype=torch.float64)
    a = _sub()(x, m.theta.weight, m.theta.bias, m.phi.weight, m.phi.bias)
    torch.testing.assert_close(m.attention(x)[:, 0], a)
