"""Outlook attention (VOLO): equal to the official code re-typed (copied weights, float64), to a
per-position derivation of the paper's eqs. (3)-(5), its gather/scatter index equal to F.unfold and
F.fold, the parameter formula, the scale, and the key property: a window's weights come from one
token, not from comparing it with its neighbours."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from einops import rearrange

from attncourse import count_parameters
from attncourse.local.outlook import OutlookAttention2d, outlook_index
from attncourse.plot import capture_gates

from module_checks import assert_onnx_equals_eager, randomised


# ------------------------------------------------------- the official code, re-typed for the test
# sail-sg/volo, models/volo.py, OutlookAttention.forward (timm's timm/models/volo.py is the same),
# on tokens (B, H, W, C), with the module's Linear layers v, attn, proj; attn_drop and proj_drop
# (0 in VOLO) left out; self.unfold and self.pool written as the F.unfold / F.avg_pool2d calls
# their nn modules make.

def official_outlook(x, v_layer, attn_layer, proj, num_heads, kernel_size, padding, stride, scale):
    B, H, W, C = x.shape
    v = v_layer(x).permute(0, 3, 1, 2)  # B, C, H, W
    h, w = math.ceil(H / stride), math.ceil(W / stride)
    v = F.unfold(v, kernel_size=kernel_size, padding=padding, stride=stride).reshape(
        B, num_heads, C // num_heads, kernel_size * kernel_size, h * w).permute(0, 1, 4, 3, 2)  # B,H,N,kxk,C/H
    attn = F.avg_pool2d(x.permute(0, 3, 1, 2), kernel_size=stride, stride=stride, ceil_mode=True).permute(0, 2, 3, 1)
    attn = attn_layer(attn).reshape(
        B, h * w, num_heads, kernel_size * kernel_size, kernel_size * kernel_size).permute(0, 2, 1, 3, 4)  # B,H,N,kxk,kxk
    attn = attn * scale
    attn = attn.softmax(dim=-1)
    x = (attn @ v).permute(0, 1, 4, 3, 2).reshape(B, C * kernel_size * kernel_size, h * w)
    x = F.fold(x, output_size=(H, W), kernel_size=kernel_size, padding=padding, stride=stride)
    return proj(x.permute(0, 2, 3, 1))


def official_plugin(m, x, *, scale=None):
    """The module's computation through the official code: x + OutlookAttention(x as tokens)."""
    out = official_outlook(rearrange(x, "b c h w -> b h w c"), m.v, m.attn, m.proj, m.heads, m.kernel_size,
                           m.kernel_size // 2, m.stride, m.scale if scale is None else scale)
    return x + rearrange(out, "b h w c -> b c h w")


SETTINGS = [
    dict(),  # VOLO's: K = 3, stride 2, the official scale
    dict(stride=1),  # the paper's equations
    dict(kernel_size=5, stride=3, heads=2),
    dict(kernel_size=5, stride=2, heads=4, qkv_bias=True, scale=1.0),
    dict(kernel_size=1, stride=1, heads=2),
]


@pytest.mark.parametrize("kwargs", SETTINGS, ids=lambda k: "-".join(f"{a}={b}" for a, b in k.items()) or "default")
@pytest.mark.parametrize("size", [(8, 8), (7, 5), (9, 16), (1, 1), (2, 3)])
def test_equals_the_official_code_with_copied_weights(kwargs, size):
    m = randomised(OutlookAttention2d(64, **kwargs), std=0.3)
    x = torch.randn(2, 64, *size, dtype=torch.float64)
    torch.testing.assert_close(m(x), official_plugin(m, x))


def test_the_retyped_official_code_can_fail():
    m = randomised(OutlookAttention2d(64), std=0.3)
    x = torch.randn(2, 64, 7, 6, dtype=torch.float64)
    assert not torch.allclose(m(x), official_plugin(m, x, scale=1.0))  # without the official scale
    m1 = randomised(OutlookAttention2d(64, scale=1.0), std=0.3)
    assert not torch.allclose(m1(x), official_plugin(m1, x, scale=m.scale))


# ------------------------------------------------------- the paper's equations, one position at a time

def naive_outlook(m, x):
    """Eqs. (3)-(5) with the official stride: for every window (i, j) centred on (i s, j s), the
    weights from the mean token of its s × s cell (cut at the border), reshaped to K² × K² per
    head, softmax over each row; slot r of the window outputs Σ_q a[r, q] V[slot q]; every position
    sums the outputs of the slots that land on it; then W^O and the residual."""
    B, C, H, W = x.shape
    K, s, g, d, p = m.kernel_size, m.stride, m.heads, m.head_dim, m.kernel_size // 2
    h, w = math.ceil(H / s), math.ceil(W / s)
    wv, wa, ba = m.v.weight.detach(), m.attn.weight.detach(), m.attn.bias.detach()
    bv = m.v.bias.detach() if m.qkv_bias else torch.zeros(C, dtype=x.dtype)
    out = x.clone()
    for b in range(B):
        def value(y, xx):  # V at a position; 0 outside the map (F.unfold's zero padding)
            if 0 <= y < H and 0 <= xx < W:
                return wv @ x[b, :, y, xx] + bv
            return torch.zeros(C, dtype=x.dtype)

        acc = torch.zeros(H, W, C, dtype=x.dtype)
        for i in range(h):
            for j in range(w):
                cell = [x[b, :, y, xx] for y in range(i * s, min(i * s + s, H)) for xx in range(j * s, min(j * s + s, W))]
                z = torch.stack(cell).mean(0)  # the token the weights are generated from
                a = ((wa @ z + ba) * m.scale).reshape(g, K * K, K * K).softmax(-1)  # Â, softmax per row
                slots = [(i * s + mm - p, j * s + nn - p) for mm in range(K) for nn in range(K)]  # (m n) order
                vals = torch.stack([value(y, xx) for y, xx in slots])  # V_Δ: (K², C), eq. (3)
                for r, (y, xx) in enumerate(slots):
                    if 0 <= y < H and 0 <= xx < W:
                        out_r = torch.cat([a[k, r] @ vals[:, k * d:(k + 1) * d] for k in range(g)])  # eq. (4), row r
                        acc[y, xx] += out_r  # eq. (5): summed where windows overlap
        out[b] += rearrange(m.proj(acc).detach(), "h w c -> c h w")
    return out


@pytest.mark.parametrize("kwargs", SETTINGS[:4], ids=["default", "stride=1", "K=5-s=3", "K=5-s=2-bias-scale1"])
@pytest.mark.parametrize("size", [(6, 6), (5, 7), (1, 2)])
def test_equals_the_paper_one_position_at_a_time(kwargs, size):
    kwargs = {**kwargs, "heads": kwargs.get("heads", 2)}
    m = randomised(OutlookAttention2d(8, **kwargs), std=0.5)
    x = torch.randn(2, 8, *size, dtype=torch.float64)
    torch.testing.assert_close(m(x), naive_outlook(m, x))


# ------------------------------------------------------- the index: F.unfold and F.fold as gather and scatter

@pytest.mark.parametrize("k, s", [(3, 1), (3, 2), (3, 3), (5, 2), (5, 3), (1, 1)])
@pytest.mark.parametrize("size", [(7, 5), (8, 8), (1, 1), (2, 9)])
def test_the_index_is_unfold_and_fold(k, s, size):
    B, C, (H, W) = 3, 4, size
    x = torch.randn(B, C, H, W, dtype=torch.float64)
    idx = outlook_index(B, H, W, k, s)
    L = math.ceil(H / s) * math.ceil(W / s)
    assert idx.shape == (B * L * k * k,) and idx.min() >= 0 and idx.max() <= B * H * W
    rows = torch.cat([rearrange(x, "b c h w -> (b h w) c"), torch.zeros(1, C, dtype=x.dtype)])
    gathered = rearrange(rows[idx], "(b l k) c -> b (c k) l", b=B, k=k * k)
    torch.testing.assert_close(gathered, F.unfold(x, k, padding=k // 2, stride=s))
    cols = torch.randn(B, C * k * k, L, dtype=torch.float64)
    added = torch.zeros(B * H * W + 1, C, dtype=x.dtype).index_add(0, idx, rearrange(cols, "b (c k) l -> (b l k) c", k=k * k))
    torch.testing.assert_close(rearrange(added[:-1], "(b h w) c -> b c h w", b=B, h=H), F.fold(cols, (H, W), k, padding=k // 2, stride=s))


# ------------------------------------------------------- parameters, defaults, the scale

@pytest.mark.parametrize("c, kwargs", [(192, {}), (64, {"kernel_size": 5, "heads": 4, "qkv_bias": True}), (32, {"stride": 1})])
def test_parameters_equal_the_formula(c, kwargs):
    m = OutlookAttention2d(c, **kwargs)
    k4 = m.kernel_size**4
    assert count_parameters(m) == 2 * c * c + c + m.heads * k4 * (c + 1) + (c if m.qkv_bias else 0)


def test_defaults_are_volo_d1_s_outlooker_and_start_as_the_identity():
    m = OutlookAttention2d(192)
    assert (m.heads, m.head_dim, m.kernel_size, m.stride, m.qkv_bias) == (6, 32, 3, 2, False)
    assert m.scale == 32**-0.5 and m.v.bias is None and m.attn.bias is not None and m.proj.bias is not None
    assert count_parameters(m) == 167_718  # the official OutlookAttention(192, 6): v 36,864 + attn 93,798 + proj 37,056
    x = torch.randn(2, 192, 9, 10)
    assert torch.equal(m(x), x)
    assert not torch.equal(OutlookAttention2d(192, identity_init=False)(x), x)


def test_the_scale_only_rescales_the_weight_generator():
    m = randomised(OutlookAttention2d(64), std=0.3)
    m1 = OutlookAttention2d(64, scale=1.0).double()
    m1.load_state_dict(m.state_dict())
    with torch.no_grad():
        m1.attn.weight.mul_(m.scale)
        m1.attn.bias.mul_(m.scale)
    x = torch.randn(2, 64, 7, 5, dtype=torch.float64)
    torch.testing.assert_close(m1(x), m(x))
    m1.load_state_dict(m.state_dict())
    assert not torch.allclose(m1(x), m(x))


# ------------------------------------------------------- the key property: generated, not compared

def test_a_window_s_weights_come_from_its_own_cell_only():
    """The weights of window (i, j) are a function of the s × s cell they are generated from: no
    neighbour outside it reaches them (there is no dot product with the neighbours' features)."""
    m = randomised(OutlookAttention2d(16, heads=2), std=0.5)
    x = torch.randn(1, 16, 7, 6, dtype=torch.float64, requires_grad=True)
    a = m.attention(x)  # (1, 2, 4 * 3, 9, 9)
    win = 1 * 3 + 2  # window (1, 2): centred on (2, 4), cell rows 2-3, columns 4-5
    (a[0, :, win] * torch.randn_like(a[0, :, win])).sum().backward()
    touched = {tuple(p) for p in (x.grad[0].abs().sum(0) > 0).nonzero().tolist()}
    assert touched == {(2, 4), (2, 5), (3, 4), (3, 5)}
    # while the window's output reads all 3 x 3 neighbours (and more, through the overlapping windows)
    x.grad = None
    m(x)[0, :, 2, 4].sum().backward()
    assert (x.grad[0].abs().sum(0) > 0).sum() > 4


def test_swapping_two_neighbours_changes_the_values_not_the_weights():
    m = randomised(OutlookAttention2d(16, heads=2, stride=1), std=0.5)
    x = torch.randn(1, 16, 5, 5, dtype=torch.float64)
    y = x.clone()
    y[:, :, 1, 1], y[:, :, 3, 3] = x[:, :, 3, 3], x[:, :, 1, 1]  # two neighbours of the centre (2, 2)
    centre = 2 * 5 + 2
    torch.testing.assert_close(m.attention(y)[:, :, centre], m.attention(x)[:, :, centre])
    assert not torch.allclose(m(y)[:, :, 2, 2], m(x)[:, :, 2, 2])


def test_attention_returns_what_forward_applies():
    m = randomised(OutlookAttention2d(32, heads=2), std=0.5)
    x = torch.randn(3, 32, 7, 5, dtype=torch.float64)
    a = m.attention(x)
    assert a.shape == (3, 2, 4 * 3, 9, 9)
    torch.testing.assert_close(a.sum(-1), torch.ones(3, 2, 12, 9, dtype=torch.float64))
    (gate,) = capture_gates(m, x).values()
    torch.testing.assert_close(rearrange(gate, "(b l) g i j -> b g l i j", b=3), a)


# ------------------------------------------------------- bad input, impossible settings, gradients, export

@pytest.mark.parametrize(
    "kwargs, words",
    [
        (dict(channels=48), ["OutlookAttention2d", "32", "heads"]),
        (dict(channels=32, heads=3), ["OutlookAttention2d", "heads"]),
        (dict(channels=32, kernel_size=4), ["OutlookAttention2d", "odd", "kernel_size"]),
        (dict(channels=32, kernel_size=0), ["OutlookAttention2d", "kernel_size"]),
        (dict(channels=32, stride=4), ["OutlookAttention2d", "stride", "cover"]),
        (dict(channels=32, stride=0), ["OutlookAttention2d", "stride"]),
        (dict(channels=32, scale=0.0), ["OutlookAttention2d", "scale"]),
        (dict(channels=32, scale=True), ["OutlookAttention2d", "scale"]),
        (dict(channels=32, qkv_bias="yes"), ["OutlookAttention2d", "qkv_bias"]),
        (dict(channels=32, identity_init=None), ["OutlookAttention2d", "identity_init"]),
    ],
)
def test_impossible_hyperparameters(kwargs, words):
    with pytest.raises(ValueError) as info:
        OutlookAttention2d(**kwargs)
    assert all(w in str(info.value) for w in words), str(info.value)


@pytest.mark.parametrize("bad", [torch.randn(2, 32, 8), torch.randn(2, 16, 8, 8), torch.ones(1, 32, 4, 4, dtype=torch.long)])
def test_bad_input_is_named(bad):
    m = OutlookAttention2d(32)
    for f in (m, m.attention):
        with pytest.raises(ValueError, match="OutlookAttention2d"):
            f(bad)


@pytest.mark.parametrize("kwargs", [dict(), dict(stride=1), dict(kernel_size=5, stride=3)])
def test_gradcheck(kwargs):
    m = randomised(OutlookAttention2d(4, heads=2, **kwargs), std=0.5)
    x = torch.randn(1, 4, 4, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(m, (x,))


def test_other_settings_export_with_dynamic_sizes_to_onnx(tmp_path):
    """The deploy contract tests the default; a 5 × 5 window with stride 3 goes through the same
    index arithmetic with other constants."""
    from torch.export import Dim

    m = randomised(OutlookAttention2d(16, heads=2, kernel_size=5, stride=3, identity_init=False), std=0.3).float().eval()
    dims = {0: Dim("b", min=1), 2: Dim("h", min=1), 3: Dim("w", min=1)}
    ep = torch.export.export(m, (torch.randn(2, 16, 7, 5),), dynamic_shapes=({**dims},))
    for shape in [(1, 16, 1, 1), (3, 16, 11, 4)]:
        y = torch.randn(shape)
        torch.testing.assert_close(ep.module()(y), m(y))
    assert_onnx_equals_eager(m, torch.randn(2, 16, 7, 5), dims, [(1, 16, 1, 1), (3, 16, 11, 4)], tmp_path / "outlook.onnx")


def test_the_unfold_fold_form_does_not_export_with_a_dynamic_size():
    """Why the module gathers and scatters instead of calling F.unfold, F.fold and a ceil-mode pool (its
    docstring): the official form, traced with H, W >= 1, trips guards on a window grid of side 1.
    If a later torch exports it, this test fails: then the docstring's reason is out of date."""
    from torch.export import Dim

    m = randomised(OutlookAttention2d(16, heads=2, identity_init=False), std=0.3).float().eval()

    class Official(torch.nn.Module):
        def forward(self, x):
            return official_plugin(m, x)

    dims = {0: Dim("b", min=1), 2: Dim("h", min=1), 3: Dim("w", min=1)}
    with pytest.raises(Exception, match="(?i)constraint|guard"):
        torch.export.export(Official(), (torch.randn(2, 16, 7, 5),), dynamic_shapes=(dims,))
