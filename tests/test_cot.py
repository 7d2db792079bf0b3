"""Contextual Transformer (CoT): the local aggregation equal to a per-pixel loop of the official CUDA
kernel; the block equal to the official CotLayer re-typed (copied weights, float64, train and eval)
and to a per-position derivation of the equations; parameters, defaults, bad input and settings,
gradcheck; and what makes it CoT: channels c and c + C/s share a weight map, the weights depend on
the content, the dynamic context is local and the fusion global."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import attncourse
from attncourse import count_parameters
from attncourse.local.cot import ContextualTransformer2d, local_aggregation
from attncourse.plot import capture_gates

from module_checks import randomised


# ------------------------------------------------------- the official CUDA kernel, one pixel at a time
# JDAI-CV/CoTNet, cupy_layers/aggregation_zeropad.py, _aggregation_zeropad_forward_kernel: for every
# output element (n, head, c, h, w), the sum over kh, kw of weight[n, head, c % weight_channels,
# kh * kernel_w + kw, h, w] * bottom[n, c, h_in, w_in], h_in = -pad_h + h * stride_h + kh * dilation_h
# (the same for w), skipped outside the map; output channel head * input_channels + c.

def kernel_loop(bottom, weight, kernel_size, stride=1, padding=0, dilation=1):
    n, input_channels, bottom_height, bottom_width = bottom.shape
    _, weight_heads, weight_channels, _, top_height, top_width = weight.shape
    top = bottom.new_zeros(n, weight_heads * input_channels, top_height, top_width)
    for head in range(weight_heads):
        for c in range(input_channels):
            for h in range(top_height):
                for w in range(top_width):
                    value = bottom.new_zeros(n)
                    for kh in range(kernel_size):
                        for kw in range(kernel_size):
                            h_in = -padding + h * stride + kh * dilation
                            w_in = -padding + w * stride + kw * dilation
                            if 0 <= h_in < bottom_height and 0 <= w_in < bottom_width:
                                value += weight[:, head, c % weight_channels, kh * kernel_size + kw, h, w] * bottom[:, c, h_in, w_in]
                    top[:, head * input_channels + c, h, w] = value
    return top


def official_unfold_aggregation(x, w, kernel_size, padding):
    """The unfold form the kernel file's own test (test_aggregation_zeropad) checks the kernel against."""
    n, c_x, h, w_ = x.shape
    c_w = w.shape[2]
    x2 = nn.Unfold(kernel_size=kernel_size, dilation=1, padding=padding, stride=1)(x).view(n, c_x // c_w, c_w, kernel_size**2, h, w_)
    return (w.unsqueeze(2) * x2.unsqueeze(1)).sum(-3).view(n, w.shape[1] * c_x, h, w_)


@pytest.mark.parametrize("c, maps, k, size", [(8, 2, 3, (5, 4)), (6, 3, 3, (1, 1)), (4, 4, 5, (3, 6)), (6, 1, 1, (2, 3))])
def test_local_aggregation_is_the_cuda_kernel(c, maps, k, size):
    x = torch.randn(2, c, *size, dtype=torch.float64)
    a = torch.randn(2, maps, k * k, *size, dtype=torch.float64)
    want = kernel_loop(x, a[:, None], k, padding=(k - 1) // 2)
    torch.testing.assert_close(local_aggregation(x, a), want)
    torch.testing.assert_close(official_unfold_aggregation(x, a[:, None], k, (k - 1) // 2), want)
    if 1 < maps < c:  # the maps are shared by channels c, c + G, c + 2G, ... (interleaved): not contiguous blocks
        blocks = a.repeat_interleave(c // maps, dim=1)  # channel c -> map c // (C/G)
        wrong = (F.unfold(x, k, padding=(k - 1) // 2).view(2, c, k * k, *size) * blocks).sum(2)
        assert not torch.allclose(wrong, want)


def test_the_official_unfold_form_with_two_heads_is_the_kernel():
    x = torch.randn(2, 8, 4, 5, dtype=torch.float64)
    w = torch.randn(2, 2, 4, 9, 4, 5, dtype=torch.float64)
    torch.testing.assert_close(official_unfold_aggregation(x, w, 3, 1), kernel_loop(x, w, 3, padding=1))


# ------------------------------------------------------- the official CotLayer, re-typed
# JDAI-CV/CoTNet, models/cotnet.py, CotLayer (__init__ and forward), with the LocalConvolution (the
# CUDA kernel) replaced by the unfold form above and get_act_layer('swish') by nn.SiLU (the code's
# 'swish' is F.silu). Its numbers are the code's: groups 4, share_planes 8, factor 2, radix 2,
# reduction_factor 4, attn_chs = max(dim * radix // 4, 32).

class OfficialCotLayer(nn.Module):
    def __init__(self, dim, kernel_size):
        super().__init__()
        self.dim = dim
        self.kernel_size = kernel_size
        self.key_embed = nn.Sequential(
            nn.Conv2d(dim, dim, self.kernel_size, stride=1, padding=self.kernel_size // 2, groups=4, bias=False),
            nn.BatchNorm2d(dim),
            nn.ReLU(inplace=True),
        )
        share_planes = 8
        factor = 2
        self.embed = nn.Sequential(
            nn.Conv2d(2 * dim, dim // factor, 1, bias=False),
            nn.BatchNorm2d(dim // factor),
            nn.ReLU(inplace=True),
            nn.Conv2d(dim // factor, pow(kernel_size, 2) * dim // share_planes, kernel_size=1),
            nn.GroupNorm(num_groups=dim // share_planes, num_channels=pow(kernel_size, 2) * dim // share_planes),
        )
        self.conv1x1 = nn.Sequential(
            nn.Conv2d(dim, dim, kernel_size=1, stride=1, padding=0, dilation=1, bias=False), nn.BatchNorm2d(dim)
        )
        self.padding = (self.kernel_size - 1) // 2
        self.bn = nn.BatchNorm2d(dim)
        self.act = nn.SiLU(inplace=True)
        reduction_factor = 4
        self.radix = 2
        attn_chs = max(dim * self.radix // reduction_factor, 32)
        self.se = nn.Sequential(
            nn.Conv2d(dim, attn_chs, 1), nn.BatchNorm2d(attn_chs), nn.ReLU(inplace=True), nn.Conv2d(attn_chs, self.radix * dim, 1)
        )

    def forward(self, x):
        k = self.key_embed(x)
        qk = torch.cat([x, k], dim=1)
        b, c, qk_hh, qk_ww = qk.size()
        w = self.embed(qk)
        w = w.view(b, 1, -1, self.kernel_size * self.kernel_size, qk_hh, qk_ww)
        x = self.conv1x1(x)
        x = official_unfold_aggregation(x, w, self.kernel_size, self.padding)  # self.local_conv(x, w)
        x = self.bn(x)
        x = self.act(x)
        B, C, H, W = x.shape
        x = x.view(B, C, 1, H, W)
        k = k.view(B, C, 1, H, W)
        x = torch.cat([x, k], dim=2)
        x_gap = x.sum(dim=2)
        x_gap = x_gap.mean((2, 3), keepdim=True)
        x_attn = self.se(x_gap)
        x_attn = x_attn.view(B, C, self.radix)
        x_attn = F.softmax(x_attn, dim=2)
        out = (x * x_attn.reshape((B, C, self.radix, 1, 1))).sum(dim=2)
        return out.contiguous()


def official_copy(m: ContextualTransformer2d) -> OfficialCotLayer:
    """The official layer holding m's weights: the same tensors in the same order (the fusion's
    Linear/BatchNorm1d become 1 x 1 Conv2d/BatchNorm2d)."""
    off = OfficialCotLayer(m.channels, m.kernel_size).double()
    ours = list(m.state_dict().values())
    theirs = off.state_dict()
    assert len(ours) == len(theirs)
    with torch.no_grad():
        for (name, t), s in zip(theirs.items(), ours):
            t.copy_(s.reshape(t.shape))
    return off


@pytest.mark.parametrize("channels, k", [(16, 3), (32, 3), (96, 3), (16, 5)])
@pytest.mark.parametrize("training", [False, True], ids=["eval", "train"])
def test_equals_the_official_code_with_copied_weights(channels, k, training):
    m = randomised(ContextualTransformer2d(channels, kernel_size=k), std=0.5).train(training)
    off = official_copy(m).train(training)
    x = torch.randn(3, channels, 7, 5, dtype=torch.float64)
    torch.testing.assert_close(m(x), off(x))
    if training:  # the batch-norm statistics move alike
        for (name, a), b in zip(m.named_buffers(), off.buffers()):
            torch.testing.assert_close(a, b, msg=name)


def test_the_official_comparison_can_fail():
    m = randomised(ContextualTransformer2d(16), std=0.5).eval()
    x = torch.randn(2, 16, 6, 5, dtype=torch.float64)
    off = official_copy(m).eval()
    with torch.no_grad():  # the fusion's two branches swapped: rows 2c and 2c + 1 of the last layer
        w = off.se[3].weight.view(16, 2, -1)
        off.se[3].weight.copy_(w.flip(1).reshape_as(off.se[3].weight))
        off.se[3].bias.copy_(off.se[3].bias.view(16, 2).flip(1).reshape(-1))
    assert not torch.allclose(m(x), off(x))


# ------------------------------------------------------- the equations, one position at a time

def _bn(t, bn):
    """An eval-mode batch norm on a vector of its channels."""
    return (t - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps) * bn.weight + bn.bias


def naive_cot(m: ContextualTransformer2d, x: torch.Tensor) -> torch.Tensor:
    """(a)-(e) of the module's docstring in eval mode, for each image and position, with the
    neighbourhood read pixel by pixel (zero outside the map)."""
    B, C, H, W = x.shape
    k, p, G, s = m.kernel_size, m.kernel_size // 2, m.maps, m.share_planes
    groups, cg = m.groups, C // m.groups
    wk = m.key_embed[0].weight.detach()
    w_theta, w_delta, b_delta = m.embed[0].weight.detach()[:, :, 0, 0], m.embed[3].weight.detach()[:, :, 0, 0], m.embed[3].bias.detach()
    gn = m.local_gate.activation
    w_v = m.value[0].weight.detach()[:, :, 0, 0]

    def pixel(t, b, y, xx):  # zero padding
        return t[b, :, y, xx] if 0 <= y < H and 0 <= xx < W else torch.zeros(t.shape[1], dtype=t.dtype)

    with torch.no_grad():
        k1 = torch.zeros(B, C, H, W, dtype=x.dtype)
        logits = torch.zeros(B, G * k * k, H, W, dtype=x.dtype)
        v = torch.zeros(B, C, H, W, dtype=x.dtype)
        for b in range(B):
            for y in range(H):
                for xx in range(W):
                    conv = torch.zeros(C, dtype=x.dtype)  # (a): the grouped k x k convolution
                    for i in range(k):
                        for j in range(k):
                            nb = pixel(x, b, y + i - p, xx + j - p)
                            for g in range(groups):
                                sl = slice(g * cg, (g + 1) * cg)
                                conv[sl] += wk[sl, :, i, j] @ nb[sl]
                    k1[b, :, y, xx] = torch.relu(_bn(conv, m.key_embed[1]))
                    q = x[b, :, y, xx]  # Q = X
                    hidden = torch.relu(_bn(w_theta @ torch.cat([q, k1[b, :, y, xx]]), m.embed[1]))  # W_θ [Q, K¹]
                    logits[b, :, y, xx] = w_delta @ hidden + b_delta  # W_δ
                    v[b, :, y, xx] = _bn(w_v @ x[b, :, y, xx], m.value[1])  # (c)
        a = torch.zeros_like(logits)  # (b): GroupNorm, map g = its k² channels over all positions
        for b in range(B):
            for g in range(G):
                sl = slice(g * k * k, (g + 1) * k * k)
                t = logits[b, sl]
                a[b, sl] = (t - t.mean()) / torch.sqrt(t.var(unbiased=False) + gn.eps) * gn.weight[sl, None, None] + gn.bias[sl, None, None]
        k2 = torch.zeros(B, C, H, W, dtype=x.dtype)  # (d): V ⊛ A, channel c with map c mod G
        for b in range(B):
            for y in range(H):
                for xx in range(W):
                    for c in range(C):
                        for i in range(k):
                            for j in range(k):
                                k2[b, c, y, xx] += a[b, (c % G) * k * k + i * k + j, y, xx] * pixel(v, b, y + i - p, xx + j - p)[c]
        k2 = F.silu(_bn(k2.permute(0, 2, 3, 1), m.bn).permute(0, 3, 1, 2))
        out = torch.empty_like(x)
        for b in range(B):  # (e): the fusion
            g_ = (k1[b] + k2[b]).mean(dim=(1, 2))
            z1 = torch.relu(_bn(m.se[0].weight @ g_ + m.se[0].bias, m.se[1]))
            z = m.se[3].weight @ z1 + m.se[3].bias
            for c in range(C):
                alpha = math.exp(z[2 * c]) / (math.exp(z[2 * c]) + math.exp(z[2 * c + 1]))
                out[b, c] = alpha * k2[b, c] + (1 - alpha) * k1[b, c]
    return out


@pytest.mark.parametrize("channels, kwargs, size", [
    (16, {}, (5, 4)), (16, {"kernel_size": 5}, (3, 6)), (24, {"groups": 2, "share_planes": 4, "factor": 4}, (4, 4)),
    (16, {}, (1, 1)), (16, {"reduction": 2, "min_dim": 4}, (2, 7)),
])
def test_equals_the_definition_one_position_at_a_time(channels, kwargs, size):
    m = randomised(ContextualTransformer2d(channels, **kwargs), std=0.5).eval()
    x = torch.randn(2, channels, *size, dtype=torch.float64)
    torch.testing.assert_close(m(x), naive_cot(m, x))


# ------------------------------------------------------- what makes it CoT

def test_channels_c_and_c_plus_maps_share_one_weight_map():
    """Channel c of V is aggregated with map c mod (C/s): with equal value channels c and c + C/s,
    the aggregated channels are equal; c and c + 1 (different maps) are not."""
    m = randomised(ContextualTransformer2d(32), std=0.5).eval()
    x = torch.randn(2, 32, 6, 7, dtype=torch.float64)
    a = m.attention(x)
    assert a.shape == (2, 4, 9, 6, 7)
    v = torch.randn(2, 32, 6, 7, dtype=torch.float64)
    v[:, 4] = v[:, 0]  # channel 4 = 0 + C/s
    v[:, 1] = v[:, 0]
    out = local_aggregation(v, a)
    torch.testing.assert_close(out[:, 4], out[:, 0])
    assert not torch.allclose(out[:, 1], out[:, 0])


def test_the_gates_output_what_forward_applies():
    m = randomised(ContextualTransformer2d(16), std=0.5).eval()
    x = torch.randn(3, 16, 5, 6, dtype=torch.float64)
    gates = capture_gates(m, x)
    assert set(gates) == {"local_gate", "gate"}
    torch.testing.assert_close(gates["local_gate"].view(3, 2, 9, 5, 6), m.attention(x))
    fusion = gates["gate"]
    assert fusion.shape == (3, 2, 16)
    torch.testing.assert_close(fusion.sum(1), torch.ones(3, 16, dtype=torch.float64))
    # Y = α K² + β K¹, with the captured weights
    k1 = m.key_embed(x)
    k2 = m.act(m.bn(local_aggregation(m.value(x), m.attention(x))))
    torch.testing.assert_close(m(x), fusion[:, 0, :, None, None] * k2 + fusion[:, 1, :, None, None] * k1)


def test_the_weights_depend_on_the_content():
    """Unlike a convolution's, the k x k weights differ from position to position and image to image;
    GroupNorm makes each map zero-mean, unit-variance over its k² weights and positions (before its affine)."""
    m = randomised(ContextualTransformer2d(16), std=0.5).eval()
    with torch.no_grad():
        m.local_gate.activation.weight.fill_(1.0)
        m.local_gate.activation.bias.zero_()
    x = torch.randn(2, 16, 6, 5, dtype=torch.float64)
    a = m.attention(x)  # (B, G, k², H, W)
    assert not torch.allclose(a[:, :, :, 0, 0], a[:, :, :, 3, 2])
    assert not torch.allclose(a[0], a[1])
    flat = a.flatten(2)
    torch.testing.assert_close(flat.mean(-1), torch.zeros(2, 2, dtype=torch.float64))
    torch.testing.assert_close(flat.var(-1, unbiased=False), torch.ones(2, 2, dtype=torch.float64), atol=1e-4, rtol=0)


class _Fixed(nn.Module):
    def __init__(self, w):
        super().__init__()
        self.w = w

    def forward(self, z):
        return self.w.expand(z.shape[0], -1, -1)


class _Lambda(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, z):
        return self.fn(z)


def _far_reach(m, x):
    """The input positions whose values reach the output at the centre (4, 4) of a 9 x 9 map."""
    x = x.detach().clone().requires_grad_(True)
    m(x)[0, :, 4, 4].sum().backward()
    return (x.grad[0].abs().sum(0) > 0).nonzero()


@pytest.mark.parametrize("fix_fusion, fix_norm", [(False, False), (True, False), (False, True), (True, True)])
def test_local_weights_two_global_statistics(fix_fusion, fix_norm):
    """K¹, A and V ⊛ A each read the k x k neighbourhood of a position (A reads K¹ at the position
    only), but two statistics are global: GroupNorm's mean and variance of each map, over all
    positions, and the fusion's pool. Held fixed both, output (y, x) depends on the 3 x 3 inputs
    around it; with either one live, a pixel far away reaches it."""
    m = randomised(ContextualTransformer2d(16), std=0.5).eval()
    x = torch.randn(1, 16, 9, 9, dtype=torch.float64)
    if fix_fusion:
        m.gate = _Fixed(torch.softmax(torch.randn(1, 2, 16, dtype=torch.float64), dim=1))
    if fix_norm:  # GroupNorm with the statistics of this x, frozen: only its affine stays per position
        gn, live = m.local_gate.activation, m.attention(x)
        t = m.embed(torch.cat([x, m.key_embed(x)], dim=1)).detach().view(1, m.maps, -1)
        mean, std = t.mean(-1), torch.sqrt(t.var(-1, unbiased=False) + gn.eps)
        frozen = lambda z: ((z.view(1, m.maps, -1) - mean[..., None]) / std[..., None]).view_as(z) * gn.weight[:, None, None] + gn.bias[:, None, None]
        m.local_gate.activation = _Lambda(frozen)
        torch.testing.assert_close(m.attention(x), live)  # the same weights on this x
    reached = _far_reach(m, x)
    rows, cols = reached[:, 0], reached[:, 1]
    if fix_fusion and fix_norm:
        assert (rows.min(), rows.max(), cols.min(), cols.max()) == (3, 5, 3, 5) and len(reached) == 9
    else:
        assert len(reached) == 81  # every input position


# ------------------------------------------------------- parameters, defaults, bad input, gradients

def params(c, k=3, groups=4, s=8, f=2, r=4, min_dim=32):
    d = max(2 * c // r, min_dim)
    return (k * k * c * c // groups + 2 * c  # (a): grouped conv, BN
            + 2 * c * (c // f) + 2 * (c // f)  # W_θ, BN
            + (c // f) * (k * k * c // s) + 3 * (k * k * c // s)  # W_δ with bias, GroupNorm
            + c * c + 2 * c + 2 * c  # W_v, BN; BN of (d)
            + 3 * c * d + 3 * d + 2 * c)  # fusion


@pytest.mark.parametrize("c, kwargs", [(16, {}), (64, {}), (256, {}), (512, {}), (48, {"kernel_size": 5}),
                                       (24, {"groups": 2, "share_planes": 4, "factor": 4, "reduction": 2, "min_dim": 8})])
def test_parameters_match_the_formula(c, kwargs):
    names = {"kernel_size": "k", "groups": "groups", "share_planes": "s", "factor": "f", "reduction": "r", "min_dim": "min_dim"}
    m = ContextualTransformer2d(c, **kwargs)
    assert count_parameters(m) == params(c, **{names[k]: v for k, v in kwargs.items()})
    if not kwargs:  # the closed form at the defaults
        d = max(c // 2, 32)
        assert 16 * count_parameters(m) == 77 * c * c + 198 * c + 48 * c * d + 48 * d


def test_defaults_are_the_official_code_s():
    m = attncourse.create("cot", 64)
    assert isinstance(m, ContextualTransformer2d)
    assert (m.kernel_size, m.groups, m.share_planes, m.factor, m.reduction, m.min_dim) == (3, 4, 8, 2, 4, 32)
    assert (m.maps, m.hidden) == (8, 32) and ContextualTransformer2d(256).hidden == 128
    assert m.key_embed[0].groups == 4 and m.key_embed[0].bias is None and m.embed[3].bias is not None
    assert m.local_gate.activation.num_groups == 8 and m.local_gate.activation.num_channels == 72
    assert isinstance(m.act, nn.SiLU) and isinstance(m.gate.activation, nn.Softmax)
    # fewer parameters than the C -> C 3 x 3 convolution it replaces from C = 32 on, more below
    assert count_parameters(ContextualTransformer2d(32)) < 9 * 32 * 32 < 9 * 64 * 64
    assert count_parameters(ContextualTransformer2d(16)) > 9 * 16 * 16


@pytest.mark.parametrize(
    "kwargs, words",
    [
        (dict(channels=12), ["ContextualTransformer2d", "channels=12", "share_planes=8"]),
        (dict(channels=16, groups=3), ["ContextualTransformer2d", "groups=3"]),
        (dict(channels=16, share_planes=3), ["ContextualTransformer2d", "share_planes=3"]),
        (dict(channels=16, factor=3), ["ContextualTransformer2d", "factor=3"]),
        (dict(channels=16, kernel_size=4), ["ContextualTransformer2d", "odd", "kernel_size"]),
        (dict(channels=16, kernel_size=0), ["ContextualTransformer2d", "kernel_size"]),
        (dict(channels=16, reduction=0), ["ContextualTransformer2d", "reduction"]),
        (dict(channels=16, min_dim=1.5), ["ContextualTransformer2d", "min_dim"]),
        (dict(channels=18), ["ContextualTransformer2d", "groups=4"]),
    ],
)
def test_impossible_hyperparameters(kwargs, words):
    with pytest.raises(ValueError) as info:
        ContextualTransformer2d(**kwargs)
    assert all(w in str(info.value) for w in words), str(info.value)


@pytest.mark.parametrize("bad", [torch.randn(2, 16, 8), torch.randn(2, 8, 5, 5), torch.ones(2, 16, 4, 4, dtype=torch.long)])
def test_bad_input_is_named(bad):
    with pytest.raises(ValueError, match="ContextualTransformer2d"):
        ContextualTransformer2d(16)(bad)
    with pytest.raises(ValueError, match="ContextualTransformer2d"):
        ContextualTransformer2d(16).attention(bad)


def test_batch_of_one_in_training_mode_is_refused_and_works_in_eval():
    m = ContextualTransformer2d(16)
    with pytest.raises(ValueError, match="ContextualTransformer2d.*batch of at least 2"):
        m(torch.randn(1, 16, 5, 5))
    assert m.eval()(torch.randn(1, 16, 5, 5)).shape == (1, 16, 5, 5)
    y = m.train()(torch.randn(2, 16, 1, 1))  # two samples of 1 x 1: every batch norm has two values
    assert y.shape == (2, 16, 1, 1) and torch.isfinite(y).all()


@pytest.mark.parametrize("training", [False, True], ids=["eval", "train"])
def test_gradcheck(training):
    m = randomised(ContextualTransformer2d(8, min_dim=4), std=0.5).train(training)
    x = torch.randn(2, 8, 4, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(m, (x,))
