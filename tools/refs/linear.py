"""The benchmark references of Part IV: the linear-attention modules (``attncourse.linear``).

Each class is the module's computation as its official code (or the library named in its
docstring) writes it; each ``@_reference`` builder takes the package's module, refuses settings
the reference does not implement and copies the weights. See ``tools/refs/__init__.py``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from . import _copy, _reference, _require


class ExternalAttentionRef(nn.Module):
    """The official External_attention block (MenghaoGuo/EANet, model_torch.py): 1x1 conv,
    Conv1d(C, S) as M_k, softmax over the positions, division by the sum over the memory units
    (+1e-9), Conv1d(S, C) as M_v, 1x1 conv (no bias) + BN, residual, ReLU. (The official M_v is
    a view of M_k's storage; here, as in the package, two separate weights.)"""

    def __init__(self, channels: int, units: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.conv1 = nn.Conv2d(channels, channels, 1)
        self.linear_0 = nn.Conv1d(channels, units, 1, bias=False)
        self.linear_1 = nn.Conv1d(units, channels, 1, bias=False)
        self.conv2 = nn.Sequential(nn.Conv2d(channels, channels, 1, bias=False), nn.BatchNorm2d(channels))

    def forward(self, x):
        idn = x
        x = self.conv1(x)
        b, c, h, w = x.size()
        x = x.view(b, c, h * w)
        attn = self.linear_0(x)
        attn = F.softmax(attn, dim=-1)
        attn = attn / (self.eps + attn.sum(dim=1, keepdim=True))
        x = self.linear_1(attn).view(b, c, h, w)
        x = self.conv2(x)
        return F.relu(x + idn)


@_reference("external")
def _external(m):
    _require(m, relu=True)
    ref = ExternalAttentionRef(m.channels, m.memory_units, m.eps)
    with torch.no_grad():
        ref.conv1.load_state_dict(m.conv1.state_dict())
        ref.linear_0.weight.copy_(m.m_k.unsqueeze(-1))  # M_k: (S, C, 1)
        ref.linear_1.weight.copy_(m.m_v.t().unsqueeze(-1))  # M_vᵀ: (C, S, 1)
        ref.conv2[0].load_state_dict(m.conv2.state_dict())
        ref.conv2[1].load_state_dict(m.bn.state_dict())
    return ref


class FLattenRef(nn.Module):
    """Focused linear attention in the official code's layout and calls (LeapLabTHU/FLatten-Transformer,
    ``models/flatten_swin.py``, ``FocusedLinearAttention.forward``, after commit e205a01): one qkv
    Linear on the tokens, ``reshape(B, N, 3, C).permute(2, 0, 1, 3)`` and ``unbind``, ReLU, the
    norms, ``** p``, the renormalisation on (B, N, ·), then ``reshape(B, N, heads, -1).permute(0, 2,
    1, 3)``, ``z = 1 / (q @ Σk + ε)``, ``q @ (kᵀ v) * z``, ``transpose(1, 2).reshape(B, N, C)``, and
    the depthwise conv on ``v.reshape(B * heads, H, W, -1).permute(0, 3, 1, 2)`` (a channels-last
    view, heads folded into the batch) added as ``dwc(v).reshape(B, C, N).permute(0, 2, 1)``; proj
    Linear. At the module's defaults, which are the paper's settings where the official code
    departs: no learnable scale, no positional encoding, f_p per head (the official norms run
    over all C), ReLU without + 1e-6 (an all-zero feature goes to 0 by clamping the norm, as
    the module does), the normaliser as a sum with ε = 1e-6 (the official: a mean + 1e-6, and kᵀv
    scaled by N^-0.5 twice), any H x W (the official: a square window). As a plug-in: the tokens
    are ``x.flatten(2).transpose(1, 2)`` and the residual is added back on the grid."""

    def __init__(self, channels: int, heads: int, p: float, kernel_size: int | None, bias: bool, eps: float) -> None:
        super().__init__()
        self.heads, self.p, self.eps = heads, p, eps
        d = channels // heads
        self.qkv = nn.Linear(channels, 3 * channels, bias=bias)
        self.proj = nn.Linear(channels, channels, bias=bias)
        self.dwc = None if kernel_size is None else nn.Conv2d(d, d, kernel_size, padding=kernel_size // 2, groups=d)

    def forward(self, x):
        B, C, H, W = x.shape
        N = H * W
        qkv = self.qkv(x.flatten(2).transpose(1, 2)).reshape(B, N, 3, C).permute(2, 0, 1, 3)
        q, k, v = qkv.unbind(0)
        q = F.relu(q).reshape(B, N, self.heads, -1)  # per head: the official norms run over all C
        k = F.relu(k).reshape(B, N, self.heads, -1)
        q_norm = q.norm(dim=-1, keepdim=True)
        k_norm = k.norm(dim=-1, keepdim=True)
        q = q**self.p
        k = k**self.p
        tiny = torch.finfo(q.dtype).tiny
        q = (q / q.norm(dim=-1, keepdim=True).clamp_min(tiny)) * q_norm
        k = (k / k.norm(dim=-1, keepdim=True).clamp_min(tiny)) * k_norm

        q = q.permute(0, 2, 1, 3)
        k = k.permute(0, 2, 1, 3)
        v = v.reshape(B, N, self.heads, -1).permute(0, 2, 1, 3)

        z = 1 / (q @ k.sum(dim=-2, keepdim=True).transpose(-2, -1) + self.eps)
        kv = k.transpose(-2, -1) @ v
        o = q @ kv * z

        o = o.transpose(1, 2).reshape(B, N, C)
        if self.dwc is not None:
            v = v.reshape(B * self.heads, H, W, -1).permute(0, 3, 1, 2)
            o = o + self.dwc(v).reshape(B, C, N).permute(0, 2, 1)
        o = self.proj(o)
        return x + o.transpose(1, 2).reshape(B, C, H, W)


@_reference("flatten")
def _flatten(m):
    _require(m, scale=None, norm="head", key_position=None, eps_placement="guard")
    return _copy(FLattenRef(m.channels, m.heads, m.focusing_factor, m.kernel_size, m.bias, m.eps), m)


class LinearAttentionRef(nn.Module):
    """Linear attention as fast-transformers writes it (idiap/fast-transformers,
    fast_transformers/attention/linear_attention.py): elu + 1 features, einsum for KV = Σ φ(K)Vᵀ,
    Z = 1 / (φ(Q)·Σ φ(K) + eps), and one einsum for φ(Q) KV Z; layout (batch, positions, heads, d).
    Around it: one qkv Linear on the flattened positions, the proj Linear, the residual; without a
    position code (the module's default; fast-transformers has none)."""

    def __init__(self, channels: int, heads: int, bias: bool, eps: float) -> None:
        super().__init__()
        self.heads, self.eps = heads, eps
        self.qkv = nn.Linear(channels, 3 * channels, bias=bias)
        self.proj = nn.Linear(channels, channels, bias=bias)

    def forward(self, x):
        b, c, h, w = x.shape
        qkv = self.qkv(x.flatten(2).transpose(1, 2)).reshape(b, h * w, 3, self.heads, c // self.heads)
        q, k, v = qkv.unbind(2)
        q, k = F.elu(q) + 1, F.elu(k) + 1
        kv = torch.einsum("nshd,nshm->nhmd", k, v)
        z = 1 / (torch.einsum("nlhd,nhd->nlh", q, k.sum(dim=1)) + self.eps)
        o = torch.einsum("nlhd,nhmd,nlh->nlhm", q, kv, z)
        o = self.proj(o.reshape(b, h * w, c))
        return x + o.transpose(1, 2).reshape(b, c, h, w)


@_reference("linear")
def _linear(m):
    _require(m, feature_map="elu", position=None)
    return _copy(LinearAttentionRef(m.channels, m.heads, m.bias, m.eps), m)
