"""The checkers of "MUSE": each typical mistake its own message, the right answer passes, a blank
answer is "not attempted" (the mistakes are listed above each checker)."""

from __future__ import annotations

import torch

import attncourse
from attncourse.blocks.muse import MUSE2d, MUSELayer
from attncourse.exercises import muse as ex

from checker_tables import check_table


def test_concat_parameters():
    c, h, f, ks = 256, 8, 1024, (3, 7, 15)
    right = ex.concat_parameters(c, h, f, ks)
    check_table(ex.check_concat_parameters, right, {
        "gated": (attncourse.count_parameters(MUSELayer(c, heads=h, mlp_ratio=4, kernels=ks)), "gated layer"),
        "alphas": (right + 3, "no alpha"),
        "predictor bias": (right + h * sum(ks), "without a bias"),
        "no heads": (right - c * h * sum(ks) + c * sum(ks), "h heads"),
        "no norm": (right - 2 * c, "LayerNorm"),
        "no attention block": (right - c * c, "attention's output"),
        "other": (right + 1, "not right"),
    })


def test_causal_band():
    def right(w):
        n, k = w.shape
        d = torch.zeros(n, n, dtype=w.dtype)
        for i in range(n):
            for j in range(k):
                m = i - k + 1 + j
                if m >= 0:
                    d[i, m] = w[i, j]
        return d

    check_table(ex.check_causal_band, right, {
        "centred": (lambda w: ex._causal_band(w, "centred"), "centred"),
        "future": (lambda w: ex._causal_band(w, "future"), "into the future"),
        "reversed": (lambda w: ex._causal_band(w, "reversed"), "reversed"),
        "transposed": (lambda w: right(w).t(), "transposed"),
        "shape": (lambda w: right(w)[:, :2], "(N, N)"),
        "crash": (lambda w: w.view(3, 3), "your code raised"),
        "other": (lambda w: right(w) * 2, "not rounding"),
    })


def test_causal_band_is_the_official_decoder_convolution():
    """D V equals the official DynamicConv1dTBC with padding_l = k - 1 (tests/test_muse.py re-types it),
    for one head, a kernel shorter and one longer than the sequence."""
    from test_muse import official_dynamic_conv

    for n, k in [(7, 3), (4, 6)]:
        proj = torch.randn(k, 5, dtype=torch.float64)  # the kernel predictor, C = 5, one head
        v = torch.randn(n, 1, 5, dtype=torch.float64)  # (T, B, C)
        w = torch.softmax(v[:, 0] @ proj.t(), -1)
        want = official_dynamic_conv(v, proj, k, 1, k - 1, unfold=False)[:, 0]
        torch.testing.assert_close(ex._causal_band(w) @ v[:, 0], want)


def test_conv_reach():
    def right(h, w, i, j, k):
        out = torch.zeros(h, w, dtype=torch.bool)
        n = i * w + j
        for m in range(max(0, n - k // 2), min(h * w, n + k // 2 + 1)):
            out[m // w, m % w] = True
        return out

    check_table(ex.check_conv_reach, right, {
        "square": (lambda h, w, i, j, k: ex._reach(h, w, i, j, k, "square"), "square"),
        "row only": (lambda h, w, i, j, k: ex._reach(h, w, i, j, k, "row only"), "stops at the row's end"),
        "torus row": (lambda h, w, i, j, k: ex._reach(h, w, i, j, k, "torus row"), "inside the row"),
        "cyclic map": (lambda h, w, i, j, k: ex._reach(h, w, i, j, k, "cyclic map"), "last pixel to its first"),
        "radius k": (lambda h, w, i, j, k: ex._reach(h, w, i, j, k, "radius k"), "k // 2 positions"),
        "column-major": (lambda h, w, i, j, k: ex._reach(h, w, i, j, k, "column-major"), "column-major"),
        "shape": (lambda h, w, i, j, k: right(h, w, i, j, k).t(), "(H, W)"),
        "other": (lambda h, w, i, j, k: right(h, w, i, j, k).index_fill(0, torch.tensor([0]), True), "not rounding"),
    })


def test_conv_reach_is_what_the_module_reads():
    """The right answer is the set of pixels the module's convolution weights are non-zero on."""
    for h, w, i, j, k in ex.REACH_CASES:
        m = MUSE2d(8, heads=2, kernels=(k,)).double()
        (d,) = m.layer.conv_weights(torch.randn(1, h * w, 8, dtype=torch.float64))
        assert torch.equal(d[0, 0, i * w + j].reshape(h, w) != 0, ex._reach(h, w, i, j, k))
