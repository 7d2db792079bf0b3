"""FAN's block and its channel attention: equal to the official code re-typed, to a derivation one
channel at a time from the equations, its parameter formula, defaults and initialisation, the
range of its gates, the gates through the Gate, and its input checks. The module contract and the
deploy contract are checked for every registered module in test_contract.py and test_deploy.py."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from attncourse.blocks.fan import ChannelProcessing, DWConvMlp, FANBlock, FANBlock2d

from module_checks import randomised


# ------------------------------------------------------- the official code, re-typed for the test
# NVlabs/FAN, models/fan.py (commit ee1b7df): DWConv, Mlp, TokenMixing, ChannelProcessing and
# FANBlock, forward computations as written there. Changed: dropout, drop path, the initialisation
# (weights are copied in), `linear`, `downsample` and `return_attention` left out; H, W passed to
# FANBlock.forward instead of set as attributes; timm's imports not needed.

class OfficialDWConv(nn.Module):
    def __init__(self, in_features):
        super().__init__()
        self.conv1 = nn.Conv2d(in_features, in_features, kernel_size=3, padding=1, groups=in_features)
        self.act = nn.GELU()
        self.bn = nn.BatchNorm2d(in_features)
        self.conv2 = nn.Conv2d(in_features, in_features, kernel_size=3, padding=1, groups=in_features)

    def forward(self, x, H, W):
        B, N, C = x.shape
        x = x.permute(0, 2, 1).reshape(B, C, H, W)
        x = self.conv1(x)
        x = self.act(x)
        x = self.bn(x)
        x = self.conv2(x)
        x = x.reshape(B, C, N).permute(0, 2, 1)
        return x


class OfficialMlp(nn.Module):
    def __init__(self, in_features, hidden_features):
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.dwconv = OfficialDWConv(hidden_features)
        self.gamma = nn.Parameter(torch.ones(hidden_features))
        self.act = nn.GELU()  # built, never called, as in the official forward
        self.fc2 = nn.Linear(hidden_features, in_features)

    def forward(self, x, H, W):
        x = self.fc1(x)
        x = self.gamma * self.dwconv(x, H, W) + x
        x = self.fc2(x)
        return x


class OfficialTokenMixing(nn.Module):
    def __init__(self, dim, num_heads, qkv_bias):
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(dim, dim * 2, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x, H, W):
        B, N, C = x.shape
        q = self.q(x).reshape(B, N, self.num_heads, C // self.num_heads).permute(0, 2, 1, 3)
        kv = self.kv(x).reshape(B, -1, 2, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
        k, v = kv[0], kv[1]
        attn = q * self.scale @ k.transpose(-2, -1)
        attn = attn.softmax(dim=-1)
        x = (attn @ v).transpose(1, 2).reshape(B, N, C)
        return self.proj(x)


class OfficialChannelProcessing(nn.Module):
    def __init__(self, dim, num_heads, qkv_bias, mlp_hidden_dim):
        super().__init__()
        self.num_heads = num_heads
        self.temperature = nn.Parameter(torch.ones(num_heads, 1, 1))
        self.mlp_v = OfficialMlp(dim, mlp_hidden_dim)
        self.norm_v = nn.LayerNorm(dim)
        self.q = nn.Linear(dim, dim, bias=qkv_bias)

    def _gen_attn(self, q, k):
        q = q.softmax(-2).transpose(-1, -2)
        _, _, N, _ = k.shape
        k = F.adaptive_avg_pool2d(k.softmax(-2), (N, 1))
        attn = torch.sigmoid(q @ k)
        return attn * self.temperature

    def forward(self, x, H, W):
        B, N, C = x.shape
        v = x.reshape(B, N, self.num_heads, C // self.num_heads).permute(0, 2, 1, 3)
        q = self.q(x).reshape(B, N, self.num_heads, C // self.num_heads).permute(0, 2, 1, 3)
        k = x.reshape(B, N, self.num_heads, C // self.num_heads).permute(0, 2, 1, 3)
        attn = self._gen_attn(q, k)
        Bv, Hd, Nv, Cv = v.shape
        v = self.norm_v(self.mlp_v(v.transpose(1, 2).reshape(Bv, Nv, Hd * Cv), H, W)).reshape(Bv, Nv, Hd, Cv).transpose(1, 2)
        repeat_time = N // attn.shape[-1]
        attn = attn.repeat_interleave(repeat_time, dim=-1) if attn.shape[-1] > 1 else attn
        x = (attn * v.transpose(-1, -2)).permute(0, 3, 1, 2).reshape(B, N, C)
        return x


class OfficialFANBlock(nn.Module):
    def __init__(self, dim, num_heads, mlp_ratio, qkv_bias, eta, c_head_num=None):
        super().__init__()
        norm_layer = lambda d: nn.LayerNorm(d, eps=1e-6)  # FAN passes partial(nn.LayerNorm, eps=1e-6)
        self.norm1 = norm_layer(dim)
        self.attn = OfficialTokenMixing(dim, num_heads, qkv_bias)
        self.norm2 = norm_layer(dim)
        self.mlp = OfficialChannelProcessing(dim, c_head_num or num_heads, qkv_bias, int(dim * mlp_ratio))
        self.gamma1 = nn.Parameter(eta * torch.ones(dim))
        self.gamma2 = nn.Parameter(eta * torch.ones(dim))

    def forward(self, x, H, W):
        x_new = self.attn(self.norm1(x), H, W)
        x = x + self.gamma1 * x_new
        x_new = self.mlp(self.norm2(x), H, W)
        x = x + self.gamma2 * x_new
        return x


def official_from(m: FANBlock2d) -> OfficialFANBlock:
    """The official block with m's weights (names mapped; q and kv are the rows of qkv)."""
    b = m.block
    o = OfficialFANBlock(b.dim, b.heads, b.mlp.mlp_ratio, b.attn.qkv.bias is not None, 1.0, b.channel_heads).double()
    sd = {k.removeprefix("block."): v for k, v in m.state_dict().items()}
    c = b.dim
    sd["attn.q.weight"], sd["attn.kv.weight"] = sd["attn.qkv.weight"][:c], sd.pop("attn.qkv.weight")[c:]
    if "attn.qkv.bias" in sd:
        sd["attn.q.bias"], sd["attn.kv.bias"] = sd["attn.qkv.bias"][:c], sd.pop("attn.qkv.bias")[c:]
    sd["mlp.temperature"] = sd.pop("mlp.gate.activation.temperature")
    for part in ("conv1", "bn", "conv2"):
        for k in [k for k in sd if k.startswith(f"mlp.mlp_v.{part}.")]:
            sd[k.replace(f"mlp.mlp_v.{part}.", f"mlp.mlp_v.dwconv.{part}.")] = sd.pop(k)
    o.load_state_dict(sd)
    return o.train(m.training)


@pytest.mark.parametrize("training", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize("kwargs", [dict(heads=2), dict(heads=4, mlp_ratio=2, channel_heads=2), dict(heads=1, qkv_bias=False)])
def test_equals_the_official_code_with_copied_weights(kwargs, training):
    m = randomised(FANBlock2d(8, **kwargs), std=0.5).train(training)
    o = official_from(m)
    x = torch.randn(3, 8, 5, 7, dtype=torch.float64)  # H != W, B equal to no other axis
    want = o(rearrange(x, "b c h w -> b (h w) c"), 5, 7)
    torch.testing.assert_close(m(x), rearrange(want, "b (h w) c -> b c h w", h=5))
    if training:  # the batch norm's statistics moved alike
        torch.testing.assert_close(m.block.mlp.mlp_v.bn.running_mean, o.mlp.mlp_v.dwconv.bn.running_mean)
    # the re-typed code can fail: a temperature off by 10 % shows
    with torch.no_grad():
        o.mlp.temperature.mul_(1.1)
    assert not torch.allclose(m(x), rearrange(o(rearrange(x, "b c h w -> b (h w) c"), 5, 7), "b (h w) c -> b c h w", h=5))


# ------------------------------------------------------- the definition, one channel at a time

def naive_channel_processing(cp: ChannelProcessing, t: torch.Tensor, size) -> torch.Tensor:
    """The equations written with loops: for every head i and channel c of it, the softmax over the
    tokens of q's channel c, the mean over the head's channels of k's softmaxes over tokens, their
    inner product over tokens, σ, times τ_i; then that gate times V's channel at every token."""
    B, N, C = t.shape
    h, d = cp.heads, C // cp.heads
    H, W = size
    mlp = cp.mlp_v
    # V = LN(fc2(u + γ ⊙ conv2(BN(GELU(conv1(u)))))), u = fc1(t), convolutions by hand
    u = t @ mlp.fc1.weight.T + mlp.fc1.bias
    um = u.reshape(B, H, W, -1)

    def dwconv(z, conv):  # 3 × 3 depthwise with zero padding, one position at a time
        out = torch.zeros_like(z)
        zp = F.pad(z, (0, 0, 1, 1, 1, 1))
        for y in range(H):
            for x in range(W):
                out[:, y, x] = (zp[:, y : y + 3, x : x + 3] * rearrange(conv.weight[:, 0], "c i j -> i j c")).sum((1, 2)) + conv.bias
        return out

    z = dwconv(um, mlp.conv1)
    z = 0.5 * z * (1 + torch.erf(z / math.sqrt(2)))  # GELU
    bn = mlp.bn
    if cp.training:
        mean, var = z.mean((0, 1, 2)), z.var((0, 1, 2), unbiased=False)
    else:
        mean, var = bn.running_mean, bn.running_var
    z = (z - mean) / torch.sqrt(var + bn.eps) * bn.weight + bn.bias
    z = dwconv(z, mlp.conv2)
    u = u + mlp.gamma * z.reshape(B, N, -1)
    v = u @ mlp.fc2.weight.T + mlp.fc2.bias
    v = F.layer_norm(v, (C,), cp.norm_v.weight, cp.norm_v.bias, cp.norm_v.eps)
    q = t @ cp.q.weight.T + (cp.q.bias if cp.q.bias is not None else 0)
    tau = cp.gate.activation.temperature.reshape(-1)
    out = torch.empty_like(t)
    for b in range(B):
        for i in range(h):
            kbar = torch.zeros(N, dtype=t.dtype)
            for c in range(d):
                kbar += torch.softmax(t[b, :, i * d + c], 0) / d
            for c in range(d):
                qbar = torch.softmax(q[b, :, i * d + c], 0)
                gate = tau[i] / (1 + torch.exp(-(qbar * kbar).sum()))
                out[b, :, i * d + c] = gate * v[b, :, i * d + c]
    return out


def naive_block(m: FANBlock2d, x: torch.Tensor) -> torch.Tensor:
    b = m.block
    B, C, H, W = x.shape
    t = rearrange(x, "b c h w -> b (h w) c")
    s = b.norm1(t)
    wq, wk, wv = b.attn.qkv.weight.split(C)
    bq, bk, bv = b.attn.qkv.bias.split(C)
    d = C // b.heads
    heads = []
    for i in range(b.heads):
        sl = slice(i * d, (i + 1) * d)
        q, k, v = s @ wq[sl].T + bq[sl], s @ wk[sl].T + bk[sl], s @ wv[sl].T + bv[sl]
        heads.append(torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(d), -1) @ v)
    t = t + b.gamma1 * b.attn.proj(torch.cat(heads, -1))
    t = t + b.gamma2 * naive_channel_processing(b.mlp, b.norm2(t), (H, W))
    return rearrange(t, "b (h w) c -> b c h w", h=H)


@pytest.mark.parametrize("training", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize("size", [(4, 6), (1, 1), (3, 1)])
def test_equals_the_definition_one_channel_at_a_time(size, training):
    m = randomised(FANBlock2d(8, heads=2, mlp_ratio=1.5), std=0.5).train(training)
    x = torch.randn(3, 8, *size, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(m(x), naive_block(m, x))


def test_channel_processing_alone_equals_its_definition():
    cp = randomised(ChannelProcessing(12, heads=3, mlp_ratio=0.5), std=0.5).eval()
    t = torch.randn(2, 20, 12, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(cp(t, (4, 5)), naive_channel_processing(cp, t, (4, 5)))


# ------------------------------------------------------- parameters, defaults, initialisation

def fan_params(c: int, r: float, h: int, bias: bool = True) -> int:
    ch = int(c * r)
    return 5 * c * c + 2 * c * ch + 24 * ch + 14 * c + h - (0 if bias else 4 * c)


@pytest.mark.parametrize("c, kwargs", [(64, {}), (32, dict(heads=4, mlp_ratio=2)), (48, dict(heads=6, mlp_ratio=3, qkv_bias=False)),
                                       (32, dict(heads=4, channel_heads=2))])
def test_parameter_count_is_the_formula(c, kwargs):
    m = FANBlock2d(c, **kwargs)
    h = kwargs.get("channel_heads") or kwargs.get("heads", 8)
    assert sum(p.numel() for p in m.parameters()) == fan_params(c, kwargs.get("mlp_ratio", 4), h, kwargs.get("qkv_bias", True))
    if not kwargs:
        assert fan_params(c, 4, 8) == 13 * c * c + 110 * c + 8


def test_defaults_and_official_initialisation():
    torch.manual_seed(0)
    m = FANBlock2d(384)  # FAN-S-ViT's width
    b = m.block
    assert (b.heads, b.channel_heads, b.mlp.heads, b.mlp.hidden) == (8, 8, 8, 4 * 384)
    assert b.attn.qkv.bias is not None and b.mlp.q.bias is not None
    assert (b.norm1.eps, b.norm2.eps, b.mlp.norm_v.eps) == (1e-6, 1e-6, 1e-5)
    for p in (b.gamma1, b.gamma2, b.mlp.gate.activation.temperature, b.mlp.mlp_v.gamma):
        assert torch.equal(p, torch.ones_like(p))  # layer scale (eta = 1), τ and the DWConv's γ start at 1
    for lin in (b.attn.qkv, b.attn.proj, b.mlp.q, b.mlp.mlp_v.fc1, b.mlp.mlp_v.fc2):
        assert 0.018 < lin.weight.std().item() < 0.022 and lin.weight.abs().max() <= 2.0
        assert torch.equal(lin.bias, torch.zeros_like(lin.bias))
    for conv in (b.mlp.mlp_v.conv1, b.mlp.mlp_v.conv2):  # normal(0, sqrt(2 / 9))
        assert abs(conv.weight.std().item() - math.sqrt(2 / 9)) < 0.02
    assert torch.equal(FANBlock2d(64, eta=0.1).block.gamma1, torch.full((64,), 0.1))


# ------------------------------------------------------- what the mechanism does

def test_gates_lie_between_one_half_and_sigmoid_of_one_times_tau():
    """Q̄ᵀk̄ is an inner product of two distributions over the tokens: in (0, max k̄] ⊂ (0, 1]."""
    cp = randomised(ChannelProcessing(16, heads=4), std=3.0).eval()
    with torch.no_grad():
        cp.gate.activation.temperature.copy_(torch.tensor([1.0, 2.0, 0.5, 3.0]).reshape(4, 1, 1))
    t = 5 * torch.randn(4, 9, 16, dtype=torch.float64)
    a = cp.attention(t) / cp.gate.activation.temperature
    assert (a > 0.5).all() and (a <= torch.sigmoid(torch.tensor(1.0))).all()
    # the bound on the logits is reached: one token holding all of q's and k's mass gives σ(1)
    spike = torch.zeros(1, 9, 16, dtype=torch.float64)
    spike[0, 4] = 60.0
    with torch.no_grad():
        cp.q.weight.copy_(torch.eye(16))
        cp.q.bias.zero_()
    torch.testing.assert_close(cp.attention(spike) / cp.gate.activation.temperature,
                               torch.full((1, 4, 4, 1), torch.sigmoid(torch.tensor(1.0)).item(), dtype=torch.float64))


def test_gates_through_the_gate_give_the_output():
    m = randomised(FANBlock2d(16, heads=4, mlp_ratio=2), std=0.5).eval()
    x = torch.randn(2, 16, 5, 3, dtype=torch.float64)
    seen = []
    hook = m.block.mlp.gate.register_forward_hook(lambda mod, inp, out: seen.append(out))
    a = m.attention(x)
    y = m(x)
    hook.remove()
    assert a.shape == (2, 4, 4, 1) and len(seen) == 2 and torch.equal(seen[0], a) and torch.equal(seen[1], a)
    b = m.block
    t = rearrange(x, "b c h w -> b (h w) c")
    t = t + b.gamma1 * b.attn(b.norm1(t))
    v = b.mlp.norm_v(b.mlp.mlp_v(b.norm2(t), (5, 3)))
    want = t + b.gamma2 * rearrange(a, "b h d 1 -> b 1 (h d)") * v
    torch.testing.assert_close(y, rearrange(want, "b (h w) c -> b c h w", h=5))
    w = m.token_attention(x)
    assert w.shape == (2, 4, 15, 15)
    torch.testing.assert_close(w.sum(-1), torch.ones(2, 4, 15, dtype=torch.float64))


def test_gradcheck_tiny():
    m = randomised(FANBlock2d(4, heads=2, mlp_ratio=1), std=0.5).eval()
    x = torch.randn(2, 4, 3, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(m, (x,))


# ------------------------------------------------------- bad input and impossible settings

@pytest.mark.parametrize(
    "kwargs, words",
    [
        (dict(channels=64, heads=6), ["FANBlock2d", "heads=6", "64"]),
        (dict(channels=64, heads=0), ["FANBlock2d", "heads"]),
        (dict(channels=64, channel_heads=3), ["FANBlock2d", "channel_heads=3"]),
        (dict(channels=64, mlp_ratio=0), ["FANBlock2d", "mlp_ratio"]),
        (dict(channels=8, heads=1, mlp_ratio=0.1), ["FANBlock2d", "mlp_ratio"]),
        (dict(channels=64, qkv_bias="yes"), ["FANBlock2d", "qkv_bias"]),
        (dict(channels=64, eta=float("nan")), ["FANBlock2d", "eta"]),
        (dict(channels=64, eta=True), ["FANBlock2d", "eta"]),
    ],
)
def test_impossible_hyperparameters(kwargs, words):
    with pytest.raises(ValueError) as info:
        FANBlock2d(**kwargs)
    assert all(w in str(info.value) for w in words), str(info.value)


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="FANBlock2d.*16"):
        FANBlock2d(16, heads=2)(torch.randn(2, 8, 4, 4))
    with pytest.raises(ValueError, match="FANBlock2d in training mode.*batch"):
        FANBlock2d(16, heads=2).train()(torch.randn(1, 16, 1, 1))
    cp = ChannelProcessing(16, heads=2)
    with pytest.raises(ValueError, match=r"ChannelProcessing expected 12 tokens to form a map of size \(H, W\) = \(3, 5\)"):
        cp(torch.randn(2, 12, 16), (3, 5))
    with pytest.raises(ValueError, match=r"ChannelProcessing expected size=\(H, W\)"):
        cp(torch.randn(2, 12, 16), 12)
    with pytest.raises(ValueError, match=r"ChannelProcessing expected .*\(B, N, 16\)"):
        cp(torch.randn(2, 12, 8), (3, 4))
    with pytest.raises(ValueError, match="DWConvMlp expected 6 tokens"):
        DWConvMlp(4, 8)(torch.randn(1, 6, 4), (2, 2))
    with pytest.raises(ValueError, match="FANBlock expected"):
        FANBlock(16, heads=2)(torch.randn(2, 12, 16), (2, 2))
