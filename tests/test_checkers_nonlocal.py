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


def _chapter_params(channels, pairwise="embedded_gaussian"):
    """The chapter's params(): the default reduction 2 only."""
    half = channels // 2
    proj = (1 if pairwise == "gaussian" else 3) * (channels * half + half)
    return proj + (half * channels + channels) + 2 * channels + (2 * half if pairwise == "concatenation" else 0)


def _chapter_macs(channels, h, w):
    """The chapter's macs(): the embedded Gaussian, no sub-sampling."""
    n, dd = h * w, channels // 2
    return 2 * n * channels * dd + 2 * n * channels * dd + 2 * n * n * dd


# --- Exercise 1: parameters of the concatenation form at reduction 4 ------------------------------


def test_reduced_concat_parameters():
    c, d = 384, 96
    right = 3 * (c * d + d) + (d * c + c) + 2 * c + 2 * d
    assert count_parameters(attncourse.create("nonlocal", 384, pairwise="concatenation", reduction=4)) == right
    base = right - 2 * d
    _check_table(ex.check_reduced_concat_parameters, right, {
        "the chapter's params (d = C/2)": (_chapter_params(384, "concatenation"), "default reduction=2"),
        "inner width C": (3 * (c * c + c) + (c * c + c) + 2 * c + 2 * c, "reduction=1"),
        "w_f forgotten": (base, "embedded-Gaussian count"),
        "w_f with a bias": (right + 1, "no bias"),
        "w_f of length 2C": (base + 2 * c, "not the raw"),
        "g's bias forgotten (or w_f of length d: the same number)": (right - d, "g's bias is missing"),
        "θ, φ, g biases forgotten": (right - 3 * d, "biases of θ, φ and g"),
        "W_z's bias forgotten": (right - c, "W_z's bias"),
        "every bias forgotten": (right - 3 * d - c, "Every bias is missing"),
        "BN buffers": (right + 2 * c, "buffers"),
        "BN forgotten": (right - 2 * c, "followed by a batch norm"),
        "no θ, φ": (right - 2 * (c * d + d), "only the Gaussian"),
    })


# --- Exercise 2: multiply-adds of the concatenation block ----------------------------------------


def test_concat_macs():
    c, n, d = 512, 196, 256
    right = 4 * n * c * d + 2 * n * d + n * n * d
    with sdpa_kernel(SDPBackend.MATH):  # the concatenation does not use SDPA; counted as the module runs
        assert count_flops(attncourse.create("nonlocal", 512, pairwise="concatenation"),
                           torch.randn(1, 512, 14, 14)) == 2 * right
    wide = 4 * n * c * c + 2 * n * c + n * n * c
    assert wide == 2 * right  # an inner width C doubles every term
    _check_table(ex.check_concat_macs, right, {
        "FLOPs (or the inner width C: the same number)": (2 * right, "halve it"),
        "N = 14": (4 * 14 * c * d + 2 * 14 * d + 14 * 14 * d, "not the side 14"),
        "concatenated vectors per pair": (right - 2 * n * d + 2 * n * n * d, "for every pair (N² · 2d)"),
        "the chapter's macs (embedded Gaussian)": (_chapter_macs(512, 14, 14), "embedded Gaussian's"),
        "logits forgotten": (right - 2 * n * d, "The logits are missing"),
        "no weighted sum": (right - n * n * d, "weighted sum"),
        "no W_z": (right - n * d * c, "W_z"),
        "subsampled": (n * c * d + 2 * 49 * c * d + n * d + 49 * d + n * 49 * d + n * d * c, "sub-sampling"),
    })


# --- Exercise 3: the dot-product form in linear memory ------------------------------------------


def _dot(norm="N", swap=False, biases=("t", "p", "g"), order="hw", out="tokens", linear=True):
    def fn(x, wt, bt, wp, bp, wg, bg):
        B, C, H, W = x.shape
        t = rearrange(x, "b c h w -> b (h w) c")
        q = t @ wt.T + (bt if "t" in biases else 0)
        k = t @ wp.T + (bp if "p" in biases else 0)
        v = t @ wg.T + (bg if "g" in biases else 0)
        if swap:
            q, k = k, q
        n, d = H * W, q.shape[-1]
        if linear and norm in ("N", "none", "d", "sqrt"):
            y = q @ (k.transpose(1, 2) @ v) / {"N": n, "none": 1, "d": d, "sqrt": d**0.5}[norm]
        else:
            f = q @ k.transpose(1, 2)
            a = {"N": lambda: f / n, "softmax": lambda: torch.softmax(f, -1),
                 "sum": lambda: f / f.sum(-1, keepdim=True)}[norm]()
            y = a @ v
        if order == "wh":
            y = rearrange(y, "b (h w) d -> b (w h) d", h=H)
        if out == "grid":
            return rearrange(y, "b (h w) d -> b d h w", h=H)
        if out == "channels":
            return y.transpose(1, 2)
        return y
    return fn


def test_linear_dot_product_y():
    _check_table(ex.check_linear_dot_product_y, _dot(), {
        "N x N formed": (_dot(linear=False), "formed the N × N"),
        "softmax": (_dot("softmax"), "embedded Gaussian"),
        "sum of f": (_dot("sum"), "Σ_j f"),
        "no normalisation": (_dot("none"), "normalisation 1/C(x) is missing"),
        "divided by d": (_dot("d"), "divided by d;"),
        "divided by sqrt(d)": (_dot("sqrt"), "sqrt(d)"),
        "θ, φ swapped": (_dot(swap=True), "swapped"),
        "g's bias forgotten": (_dot(biases=("t", "p")), "g's bias b_g is missing"),
        "φ's bias forgotten": (_dot(biases=("t", "g")), "φ's bias b_φ is missing"),
        "no biases": (_dot(biases=()), "biases of θ, φ and g"),
        "(w h) order": (_dot(order="wh"), "(w h) order"),
        "grid output": (_dot(out="grid"), "as tokens"),
        "channels first": (_dot(out="channels"), "as tokens"),
        "a crash": (lambda x, *w: x @ w[0], "RuntimeError"),
    })


def test_linear_dot_product_y_matches_the_module():
    """The exercise's y is the module's: W_z y + BN + x with the module's weights."""
    m = attncourse.create("nonlocal", 6, pairwise="dot_product", reduction=2).double().eval()
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn_like(p))
    x = torch.randn(2, 6, 3, 5, dtype=torch.float64)
    y = _dot()(x, m.theta.weight, m.theta.bias, m.phi.weight, m.phi.bias, m.g.weight, m.g.bias)
    torch.testing.assert_close(m(x), x + m.bn(rearrange(m.w_z(y), "b (h w) c -> b c h w", h=3)))


# --- Exercise 4: the paper's sub-sampled weights ------------------------------------------------


def _sub(pool="max-ceil", after=True, dim=-1, scale=False, pool_queries=False, key_order="h w", grid="h w"):
    def fn(x, wt, bt, wp, bp):
        B, C, H, W = x.shape

        def p(t):
            return {"max-ceil": lambda: F.max_pool2d(t, 2, 2, ceil_mode=True), "max-floor": lambda: F.max_pool2d(t, 2, 2),
                    "avg": lambda: F.avg_pool2d(t, 2, 2, ceil_mode=True), "none": lambda: t}[pool]()

        def tokens(t):
            return rearrange(t, "b c h w -> b (h w) c")

        q = tokens(p(x) if pool_queries else x) @ wt.T + bt
        if after:
            phi = rearrange(tokens(x) @ wp.T + bp, f"b ({grid}) d -> b d h w", h=H, w=W)
            k = rearrange(p(phi), f"b d h w -> b ({key_order}) d")
        else:
            k = tokens(p(x)) @ wp.T + bp
        logits = q @ k.transpose(1, 2) * (q.shape[-1] ** -0.5 if scale else 1.0)
        return torch.softmax(logits, dim)
    return fn


def test_paper_subsampled_weights():
    _check_table(ex.check_paper_subsampled_weights, _sub(), {
        "pool before φ (the module's order)": (_sub(after=False), "official code's order"),
        "no sub-sampling": (_sub("none"), "one key per position"),
        "floor pooling": (_sub("max-floor"), "dropped the last row"),
        "average pooling": (_sub("avg"), "average pooling"),
        "softmax over queries": (_sub(dim=1), "over the queries"),
        "scaled": (_sub(scale=True), "d^-1/2"),
        "queries pooled": (_sub(pool_queries=True), "queries were pooled"),
        "keys in (w h) order": (_sub(key_order="w h"), "pooled keys are in (w h) order"),
        "φ grid as (w h)": (_sub(grid="w h"), "not neighbours"),
    })


def test_the_paper_and_the_module_sub_sample_differently():
    """The module (x pooled before φ) is not the exercise's answer (φ pooled): the two orders differ."""
    m = attncourse.create("nonlocal", 6, subsample=True).double().eval()
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn_like(p) * 0.4)
    x = torch.randn(2, 6, 5, 7, dtype=torch.float64)
    args = (x, m.theta.weight, m.theta.bias, m.phi.weight, m.phi.bias)
    torch.testing.assert_close(m.attention(x)[:, 0], _sub(after=False)(*args))
    assert not torch.allclose(m.attention(x)[:, 0], _sub()(*args))
