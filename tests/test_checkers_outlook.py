"""The Outlook attention chapter's exercise checkers: each typical mistake gets its own message, the
right answer passes, a blank answer is "not attempted" without raising.

One table per exercise: (wrong answer, a fragment of the message it must get). The mistakes are
the ones listed above each checker in ``attncourse/exercises/outlook.py``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from attncourse import count_parameters
from attncourse.exercises import outlook as ex
from attncourse.local.outlook import OutlookAttention2d, outlook_index

from checker_tables import check_table as _check_table


def test_outlooker_parameters():
    c = 192
    block = nn.ModuleList([nn.LayerNorm(c), OutlookAttention2d(c), nn.LayerNorm(c), nn.Linear(c, 3 * c), nn.Linear(3 * c, c)])
    right = count_parameters(block)  # the official Outlooker's tensors: norm1, attn (v, attn, proj), norm2, mlp.fc1, mlp.fc2
    assert right == 390_438
    attention = count_parameters(OutlookAttention2d(c))
    _check_table(ex.check_outlooker_parameters, right, {
        "attention alone": (attention, "outlook attention alone"),
        "no LayerNorms (or no MLP biases)": (right - 4 * c, "768 = 4C short"),
        "no MLP": (right - (c * 3 * c * 2 + 4 * c), "MLP of eq. (2) is missing"),
        "mlp_ratio 4": (4 * c + attention + (c * 4 * c * 2 + 5 * c), "ratio 4"),
        "bias on W_V": (right + c, "qkv_bias=False"),
        "no bias on W_A": (right - 6 * 81, "W_A has a bias"),
        "K² per head": (right - (c + 1) * 6 * (81 - 9), "not K²"),
        "one head": (right - (c + 1) * 5 * 81, "for every head"),
        "other": (12345, "not right"),
    })


def _coverage(how="right"):
    """A learner's coverage(h, w, k, s)."""
    def fn(h, w, k, s):
        stride = 1 if how == "stride 1" else s
        if how == "K²":
            return torch.full((h, w), k * k)
        if how == "ones":
            return torch.ones(h, w)
        if how == "corner":  # windows anchored at (i s, j s), no padding: count with loops
            out = torch.zeros(h, w)
            for i in range(0, h, s):
                for j in range(0, w, s):
                    out[i:i + k, j:j + k] += 1
            return out
        if how == "floor":  # ⌊h/s⌋ windows per column
            out = torch.zeros(h + 2 * (k // 2), w + 2 * (k // 2))
            for i in range(h // s):
                for j in range(w // s):
                    out[i * s:i * s + k, j * s:j * s + k] += 1
            return out[k // 2:k // 2 + h, k // 2:k // 2 + w]
        windows = (-(-h // stride)) * (-(-w // stride))
        out = F.fold(torch.ones(1, k * k, windows), (h, w), k, padding=k // 2, stride=stride)[0, 0]
        return out.long().t() if how == "transposed" else out.long()
    return fn


def test_coverage():
    _check_table(ex.check_coverage, _coverage(), {
        "stride ignored": (_coverage("stride 1"), "stride is ignored"),
        "K² everywhere": (_coverage("K²"), "K² everywhere"),
        "one per position": (_coverage("ones"), "one per position"),
        "anchored at the corner": (_coverage("corner"), "they are centred there"),
        "floor": (_coverage("floor"), "⌊H/s⌋ windows"),
        "transposed": (_coverage("transposed"), "the shape is"),
        "a crash": (lambda h, w, k, s: torch.zeros(h, w)[h], "IndexError"),
    })


def test_coverage_is_what_the_module_s_index_adds():
    def counts(h, w, k, s):
        idx = outlook_index(1, h, w, k, s)
        return torch.zeros(h * w + 1).index_add(0, idx, torch.ones(idx.numel()))[:-1].reshape(h, w)

    assert ex.check_coverage(counts)


def _window(how="right"):
    def fn(logits, values, heads):
        kk, c = values.shape
        d = c // heads
        if how == "heads last":
            a = logits.reshape(kk, kk, heads).permute(2, 0, 1)
        else:
            a = logits.reshape(heads, kk, kk)
        if how == "scaled":
            a = a / d**0.5
        if how == "columns":
            a = a.softmax(dim=1)
        elif how != "no softmax":
            a = a.softmax(dim=-1)
        if how == "transposed":
            a = a.transpose(1, 2)
        if how == "(d h)":
            v = values.reshape(kk, d, heads).permute(2, 0, 1)
        else:
            v = values.reshape(kk, heads, d).permute(1, 0, 2)
        y = a @ v
        if how == "unmerged":
            return y
        if how == "(d h)":
            return y.permute(1, 2, 0).reshape(kk, c)
        return y.permute(1, 0, 2).reshape(kk, c)
    return fn


def test_window_outputs():
    _check_table(ex.check_window_outputs, _window(), {
        "softmax over the columns": (_window("columns"), "over the columns"),
        "no softmax": (_window("no softmax"), "without a softmax"),
        "official scale": (_window("scaled"), "has no scale"),
        "heads last": (_window("heads last"), "head last"),
        "(d heads) channels": (_window("(d h)"), "(d heads)"),
        "transposed weights": (_window("transposed"), "rows and columns are swapped"),
        "heads not merged": (_window("unmerged"), "the shape is"),
        "a crash": (lambda logits, values, heads: logits @ values, "RuntimeError"),
    })


def test_window_outputs_is_one_window_of_the_module():
    """The right answer, applied to the module's own weights and values, is the module's eq. (4)."""
    m = OutlookAttention2d(8, heads=2, stride=1, scale=1.0).double()
    x = torch.randn(1, 8, 5, 4, dtype=torch.float64)
    t = rearrange(x, "b c h w -> (b h w) c")
    idx = outlook_index(1, 5, 4, 3, 1)
    v = torch.cat([m.v(t), torch.zeros(1, 8, dtype=x.dtype)])[idx].reshape(20, 9, 8)
    a = m.attention(x)  # (1, heads, 20, 9, 9)
    logits = m.attn(t)  # (20, heads·81)
    for window in (0, 7, 19):
        y = _window()(logits[window], v[window], 2)
        want = rearrange(a[0, :, window] @ rearrange(v[window], "k (g d) -> g k d", g=2), "g k d -> k (g d)")
        torch.testing.assert_close(y, want)
