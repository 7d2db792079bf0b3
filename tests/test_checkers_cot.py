"""The CoT chapter's exercise checkers: each typical mistake gets its own message, the right answer
passes, a blank answer is "not attempted" without raising; and the right answers are what the
official code and the module compute.

One table per exercise: (wrong answer, a fragment of the message it must get). The mistakes are
the ones listed above each checker in ``attncourse/exercises/cot.py``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from attncourse import count_parameters
from attncourse.exercises import cot as ex
from attncourse.local.cot import ContextualTransformer2d, local_aggregation

from checker_tables import check_table as _check_table


def official_coxt(dim, kernel_size=3):
    """The learnable layers of JDAI-CV/CoTNet models/cotnet.py CoXtLayer.__init__, re-typed."""
    share_planes, factor, dw_group, radix = 8, 2, 2, 2
    attn_chs = max(dim * radix // 4, 32)
    return nn.ModuleList([
        nn.Sequential(nn.Conv2d(dim, dim, kernel_size, padding=kernel_size // 2, groups=8, bias=False), nn.BatchNorm2d(dim)),
        nn.Sequential(
            nn.Conv2d(2 * dim, dim // factor, 1, groups=dw_group, bias=False), nn.BatchNorm2d(dim // factor), nn.ReLU(),
            nn.Conv2d(dim // factor, pow(kernel_size, 2) * dim // share_planes, kernel_size=1, groups=dw_group),
            nn.GroupNorm(num_groups=dim // share_planes, num_channels=pow(kernel_size, 2) * dim // share_planes),
        ),
        nn.Sequential(nn.Conv2d(dim, dim, 1, groups=dw_group, bias=False), nn.BatchNorm2d(dim)),
        nn.BatchNorm2d(dim),
        nn.Sequential(nn.Conv2d(dim, attn_chs, 1), nn.BatchNorm2d(attn_chs), nn.ReLU(), nn.Conv2d(attn_chs, radix * dim, 1)),
    ])


def test_coxt_parameters():
    c = ex.COXT_C
    right = ex.coxt_parameters(c)
    assert right == count_parameters(official_coxt(c)) == 37_332
    assert ex.coxt_parameters(64) == count_parameters(official_coxt(64))
    cot = count_parameters(ContextualTransformer2d(c))
    _check_table(ex.check_coxt_parameters, right, {
        "CoT's count": (cot, "CotLayer's count"),
        "K¹ with groups 4": (right + 9 * c * c // 8, "groups=8"),
        "W_θ or W_v dense (the same number)": (right + c * c // 2, "W_θ (2C → C/2) or W_v"),
        "W_δ dense": (right + (c // 2) * (9 * c // 8) // 2, "W_δ (C/2 → k² C/8) is counted dense"),
        "no W_δ bias": (right - 9 * c // 8, "W_δ has a bias"),
        "no GroupNorm affine": (right - 2 * 9 * c // 8, "GroupNorm has an affine"),
        "running statistics": (right + 2 * (3 * c + c // 2 + 48), "buffers"),
        "fusion width 32": (right - 3 * c * 16 - 3 * 16, "not the minimum 32"),
        "no fusion biases": (right - 48 - 2 * c, "have biases"),
        "other": (12345, "not right"),
    })


def _dilated(how="right"):
    """A learner's dilated aggregation."""
    def fn(v, a, dilation):
        b, c, h, w = v.shape
        g, kk = a.shape[1], a.shape[2]
        k = int(kk**0.5)
        p = (k - 1) // 2
        d = 1 if how == "no dilation" else dilation
        if how == "loop":  # one neighbour at a time, shifted slices of the zero-padded map
            vp = F.pad(v, (p * d,) * 4).view(b, c // g, g, h + 2 * p * d, w + 2 * p * d)
            out = 0
            for i in range(k):
                for j in range(k):
                    out = out + vp[..., i * d:i * d + h, j * d:j * d + w] * a[:, None, :, i * k + j]
            return out.reshape(b, c, h, w)
        if how == "transposed":
            a = a.view(b, g, k, k, h, w).transpose(2, 3).reshape(b, g, kk, h, w)
        if how == "flipped":
            a = a.flip(2)
        if how == "blocks":
            per = a.repeat_interleave(c // g, dim=1)
        else:
            per = a.repeat(1, c // g, 1, 1, 1)
        pad = p if how == "small padding" else p * d
        if how == "circular":
            cols = F.unfold(F.pad(v, (p * d,) * 4, mode="circular"), k, dilation=d)
        else:
            cols = F.unfold(v, k, dilation=d, padding=pad)
        if how == "small padding":
            return cols.view(b, c, kk, -1).sum(2)
        out = (cols.view(b, c, kk, h, w) * per).sum(2)
        return out / kk if how == "mean" else out
    return fn


def test_dilated_aggregation():
    _check_table(ex.check_dilated_aggregation, _dilated(), {
        "dilation ignored": (_dilated("no dilation"), "undilated"),
        "contiguous blocks": (_dilated("blocks"), "contiguous blocks"),
        "rows and columns swapped": (_dilated("transposed"), "rows and columns"),
        "flipped": (_dilated("flipped"), "flipped"),
        "circular": (_dilated("circular"), "wraps round"),
        "mean": (_dilated("mean"), "averaged"),
        "padding p": (_dilated("small padding"), "the shape is"),
        "a crash": (lambda v, a, d: v @ a, "RuntimeError"),
    })
    assert ex.check_dilated_aggregation(_dilated("loop"))  # another right form passes


def test_dilation_one_is_the_module_s_aggregation():
    v = torch.randn(2, 12, 5, 7, dtype=torch.float64)
    a = torch.randn(2, 4, 9, 5, 7, dtype=torch.float64)
    torch.testing.assert_close(ex._dilated(v, a, 1), local_aggregation(v, a))


class _Frozen(nn.Module):
    """GroupNorm with the statistics of one input, frozen (its affine kept)."""

    def __init__(self, gn, logits):
        super().__init__()
        self.gn = gn
        t = logits.detach().view(logits.shape[0], gn.num_groups, -1)
        self.mean, self.std = t.mean(-1), torch.sqrt(t.var(-1, unbiased=False) + gn.eps)

    def forward(self, z):
        t = (z.view(z.shape[0], self.gn.num_groups, -1) - self.mean[..., None]) / self.std[..., None]
        return t.view_as(z) * self.gn.weight[:, None, None] + self.gn.bias[:, None, None]


class _FixedFusion(nn.Module):
    def __init__(self, w):
        super().__init__()
        self.w = w

    def forward(self, z):
        return self.w.expand(z.shape[0], -1, -1)


def test_the_reach_is_what_two_frozen_blocks_show():
    torch.manual_seed(0)
    side = ex.REACH_SIDE
    x = torch.randn(1, 16, side, side, dtype=torch.float64)
    blocks = [ContextualTransformer2d(16, kernel_size=k).double().eval() for k in ex.REACH_K]
    h = x
    for m in blocks:  # freeze each block's statistics on the input it gets
        with torch.no_grad():
            m.local_gate.activation = _Frozen(m.local_gate.activation, m.embed(torch.cat([h, m.key_embed(h)], dim=1)))
        m.gate = _FixedFusion(torch.softmax(torch.randn(1, 2, 16, dtype=torch.float64), dim=1))
        h = m(h).detach()
    x.requires_grad_(True)
    blocks[1](blocks[0](x))[0, :, 10, 10].sum().backward()
    reached = int((x.grad[0].abs().sum(0) > 0).sum())
    assert reached == 49
    _check_table(ex.check_reach, reached, {
        "radius 2p": (169, "not 2p"),
        "side 9": (81, "not 9"),
        "side 8": (64, "odd side"),
        "areas added": (34, "not added"),
        "areas multiplied": (225, "do not multiply"),
        "last block": (25, "second block alone"),
        "first block": (9, "first block alone"),
        "statistics live": (400, "every position"),
        "the side": (7, "side of the square"),
        "other": (50, "not right"),
    })
