"""The HAT chapter's exercise checkers: each typical mistake gets its own message, the right answer
passes, a blank answer is "not attempted" without raising; and the right answers are what the
official code and the modules compute.

One table per exercise: (wrong answer, a fragment of the message it must get). The mistakes are
the ones listed above each checker in ``attncourse/exercises/hat.py``.
"""

from __future__ import annotations

import torch
from torch import nn

from attncourse import count_parameters
from attncourse.exercises import hat as ex
from attncourse.local.hat import HybridAttentionBlock2d, OverlappingCrossAttention2d

from checker_tables import check_table as _check_table


class OfficialOCAB(nn.Module):
    """The learnable layers of XPixelGroup/HAT hat/archs/hat_arch.py OCAB.__init__ (and its Mlp), re-typed."""

    def __init__(self, dim, window_size, overlap_ratio, num_heads, mlp_ratio=2):
        super().__init__()
        overlap_win_size = int(window_size * overlap_ratio) + window_size
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.relative_position_bias_table = nn.Parameter(
            torch.zeros((window_size + overlap_win_size - 1) * (window_size + overlap_win_size - 1), num_heads))
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        mlp_hidden_dim = int(dim * mlp_ratio)
        self.fc1, self.fc2 = nn.Linear(dim, mlp_hidden_dim), nn.Linear(mlp_hidden_dim, dim)


def test_ocab_parameters():
    c = ex.OCAB_C
    right = ex.official_ocab_parameters()
    assert right == count_parameters(OfficialOCAB(180, 16, 0.5, 6)) == 270_306
    plug_in = count_parameters(OverlappingCrossAttention2d(180, window_size=16, heads=6))
    _check_table(ex.check_ocab_parameters, right, {
        "the plug-in's count": (plug_in, "plug-in's count"),
        "no LayerNorm": (right - 4 * c, "two LayerNorms (norm1 before"),
        "one LayerNorm": (right - 2 * c, "2C short"),
        "mlp_ratio 4": (count_parameters(OfficialOCAB(180, 16, 0.5, 6, mlp_ratio=4)), "mlp_ratio 4"),
        "Swin's table": (right - 6 * 39**2 + 6 * 31**2, "Swin's table"),
        "(2 M_o - 1)^2": (right - 6 * 39**2 + 6 * 47**2, "47²"),
        "one table": (right - 5 * 39**2, "per head"),
        "biases": (right - 3 * c, "3C biases"),
        "other": (12345, "not right"),
    })


def learner_outside_keys(h, w, m, overlap_ratio, how="right"):
    """A learner's count, one window and one key at a time (and its typical mistakes)."""
    mo = m + int(m * overlap_ratio)
    p = (mo - m) // 2
    if how == "ceil":
        p = mo - m - p
    size = m + 2 * p if how == "symmetric" else mo
    nh, nw = -(-h // m), -(-w // m)
    out = torch.zeros(nh, nw, dtype=torch.long)
    for i in range(nh):
        for j in range(nw):
            for a in range(size):
                for b in range(size):
                    y, x = i * m - p + a, j * m - p + b
                    hh, ww = (nh * m, nw * m) if how == "aligned" else (h, w)
                    inside = 0 <= y < hh and 0 <= x < ww
                    out[i, j] += inside if how == "inside" else not inside
    return out.T if how == "transposed" else out


def test_outside_keys():
    for case in [(7, 10, 4, 0.5), (12, 20, 6, 0.5), (5, 11, 4, 1.0)]:
        assert torch.equal(ex.outside_keys(*case), learner_outside_keys(*case))
    # the count is what the module leaves out with border="masked": keys whose weight is e^-100 of the others
    for h, w, m_, r in [(7, 10, 4, 0.5), (12, 20, 6, 0.5)]:
        ocab = OverlappingCrossAttention2d(8, window_size=m_, overlap_ratio=r, heads=1, border="masked")
        a = ocab.attention(torch.randn(1, 8, h, w))[0, 0].reshape(h, w, -1)  # (H, W, M_o²)
        counts = (a[::m_, ::m_] < 1e-30).sum(-1)  # the first query of each window
        assert torch.equal(counts, ex.outside_keys(h, w, m_, r))

    def fn(how):
        return lambda h, w, m, r: learner_outside_keys(h, w, m, r, how)

    def all_left(h, w, m, r):
        return ex.outside_keys(h, w, m, r, how="all left")

    def top_left_inside(h, w, m, r):
        return ex.outside_keys(h, w, m, r, how="top left inside")

    _check_table(ex.check_outside_keys, fn("right"), {
        "symmetric overhang": (fn("symmetric"), "one short when M_o − M is odd"),
        "ceil above": (fn("ceil"), "not ⌈(M_o − M)/2⌉"),
        "all overhang above": (all_left, "not M_o − M"),
        "alignment padding inside": (fn("aligned"), "pad the map to a multiple of M"),
        "top and left inside": (top_left_inside, "above and left of the map"),
        "inside counted": (fn("inside"), "those are the keys inside"),
        "transposed": (fn("transposed"), "the shape is"),
        "a crash": (lambda *a: 1 / 0, "ZeroDivisionError"),
    })


def learner_hab(x, norm1, attn, cab, alpha, norm2, mlp, how="right"):
    """A learner's paper HAB on (B, C, H, W) (and the typical mistakes)."""
    def ln(norm, t):
        return norm(t.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)

    xn = x if how == "no norm1" else ln(norm1, x)
    y = attn(xn)  # xn + W-MSA(xn)
    branch = cab(x if how == "cab on x" else xn)
    if how == "twice":
        xm = y + alpha * branch + x
    elif how == "from xn":
        xm = y + alpha * branch
    elif how == "alpha on attention":
        xm = x + alpha * (y - xn) + branch
    else:
        xm = x + (y - xn) + alpha * branch
    mlp_out = lambda t: mlp(t.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)  # noqa: E731
    if how == "no mlp":
        return xm
    if how == "no norm2":
        return xm + mlp_out(xm)
    if how == "post-norm":
        return ln(norm2, xm + mlp_out(xm))
    if how == "ln on bchw":
        return xm + mlp_out(norm2(xm))
    return xm + mlp_out(ln(norm2, xm))


def test_full_hab():
    # without its LayerNorms and MLP (norm1 = identity), the block's first half is the plug-in
    c = 8
    hab = HybridAttentionBlock2d(c, window_size=4, heads=2, alpha=0.25, compress_ratio=2, squeeze_factor=4,
                                 identity_init=False).double()
    x = torch.randn(2, c, 6, 9, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(ex.full_hab(x, nn.Identity(), hab.attn, hab.cab, 0.25, None, None, how="no mlp"), hab(x))

    def fn(how):
        return lambda *args: learner_hab(*args, how=how)

    _check_table(ex.check_full_hab, fn("right"), {
        "X_N twice": (fn("twice"), "added twice"),
        "residual from X_N": (fn("from xn"), "not the normalised X_N"),
        "α on attention": (fn("alpha on attention"), "α scales CAB"),
        "no norm1": (fn("no norm1"), "first LayerNorm is missing"),
        "CAB on X": (fn("cab on x"), "CAB reads X_N"),
        "no MLP": (fn("no mlp"), "that is X_M"),
        "no norm2": (fn("no norm2"), "second LayerNorm's output"),
        "post-norm": (fn("post-norm"), "post-norm"),
        "LayerNorm on (B, C, H, W)": (fn("ln on bchw"), "RuntimeError"),
    })
