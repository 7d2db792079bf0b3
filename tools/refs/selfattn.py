"""The benchmark references of Part III: the self-attention modules (``attncourse.selfattn``).

Each class is the module's computation as its official code (or the library named in its
docstring) writes it; each ``@_reference`` builder takes the package's module, refuses settings
the reference does not implement and copies the weights. See ``tools/refs/__init__.py``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from . import _copy, _reference, _require


class CCNetRef(nn.Module):
    """Criss-cross attention as the official code writes it (speedinghzl/CCNet, pure-python branch:
    permutes and bmm over (B*W, H, H) and (B*H, W, W), -inf on the vertical diagonal, one softmax
    over the concatenated energies), its -inf matrix built on the input's device instead of
    ``.cuda()``, applied ``recurrence`` times with shared weights as RCCAModule's loop does."""

    def __init__(self, channels: int, inner: int, recurrence: int) -> None:
        super().__init__()
        self.query = nn.Conv2d(channels, inner, 1)
        self.key = nn.Conv2d(channels, inner, 1)
        self.value = nn.Conv2d(channels, channels, 1)
        self.gamma = nn.Parameter(torch.zeros(1))
        self.recurrence = recurrence

    def cca(self, x):
        b, _, h, w = x.shape
        q, k, v = self.query(x), self.key(x), self.value(x)
        q_h = q.permute(0, 3, 1, 2).reshape(b * w, -1, h).permute(0, 2, 1)
        q_w = q.permute(0, 2, 1, 3).reshape(b * h, -1, w).permute(0, 2, 1)
        k_h = k.permute(0, 3, 1, 2).reshape(b * w, -1, h)
        k_w = k.permute(0, 2, 1, 3).reshape(b * h, -1, w)
        v_h = v.permute(0, 3, 1, 2).reshape(b * w, -1, h)
        v_w = v.permute(0, 2, 1, 3).reshape(b * h, -1, w)
        inf = torch.diag(torch.full((h,), float("-inf"), dtype=x.dtype, device=x.device))  # the official INF()
        energy_h = (torch.bmm(q_h, k_h) + inf).view(b, w, h, h).permute(0, 2, 1, 3)
        energy_w = torch.bmm(q_w, k_w).view(b, h, w, w)
        att = torch.softmax(torch.cat([energy_h, energy_w], 3), dim=3)
        att_h = att[:, :, :, :h].permute(0, 2, 1, 3).reshape(b * w, h, h)
        att_w = att[:, :, :, h:].reshape(b * h, w, w)
        out_h = torch.bmm(v_h, att_h.permute(0, 2, 1)).view(b, w, -1, h).permute(0, 2, 3, 1)
        out_w = torch.bmm(v_w, att_w.permute(0, 2, 1)).view(b, h, -1, w).permute(0, 2, 1, 3)
        return self.gamma * (out_h + out_w) + x

    def forward(self, x):
        for _ in range(self.recurrence):
            x = self.cca(x)
        return x


@_reference("ccnet")
def _ccnet(m):
    ref = CCNetRef(m.channels, m.inner, m.recurrence)
    ref.load_state_dict(m.state_dict())
    return ref


class MHSARef(nn.Module):
    """Multi-head self-attention on a feature map as timm's ViT ``Attention`` writes it (one qkv
    Linear, reshape/permute, ``F.scaled_dot_product_attention``, proj Linear), on the flattened
    positions, plus the residual; without a position code (the module's default)."""

    def __init__(self, channels: int, heads: int, bias: bool) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(channels, 3 * channels, bias=bias)
        self.proj = nn.Linear(channels, channels, bias=bias)

    def forward(self, x):
        b, c, h, w = x.shape
        t = x.flatten(2).transpose(1, 2)
        qkv = self.qkv(t).reshape(b, h * w, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        o = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])
        o = self.proj(o.transpose(1, 2).reshape(b, h * w, c))
        return x + o.transpose(1, 2).reshape(b, c, h, w)


@_reference("mhsa")
def _mhsa(m):
    _require(m, position=None)
    return _copy(MHSARef(m.channels, m.heads, m.bias), m)


class GCRef(nn.Module):
    """The official ContextBlock (xvjiarui/GCNet, mmdet/ops/gcb/context_block.py) with attention
    pooling and channel_add fusion: view, conv_mask, softmax, matmul, conv-LN-ReLU-conv, add."""

    def __init__(self, channels: int, hidden: int) -> None:
        super().__init__()
        self.conv_mask = nn.Conv2d(channels, 1, kernel_size=1)
        self.channel_add_conv = nn.Sequential(
            nn.Conv2d(channels, hidden, kernel_size=1),
            nn.LayerNorm([hidden, 1, 1]),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, channels, kernel_size=1),
        )

    def forward(self, x):
        b, c, h, w = x.shape
        mask = F.softmax(self.conv_mask(x).view(b, 1, h * w), dim=2).unsqueeze(-1)
        context = torch.matmul(x.view(b, 1, c, h * w), mask).view(b, c, 1, 1)
        return x + self.channel_add_conv(context)


@_reference("gc")
def _gc(m):
    _require(m, pooling="att", fusion="add")
    return _copy(GCRef(m.channels, m.hidden), m)


class NonLocalRef(nn.Module):
    """The embedded-Gaussian non-local block in the official code's layout and calls, in 2-D: the
    Caffe2 original (facebookresearch/video-nonlocal-net, ``lib/models/nonlocal_helper.py``,
    ``spacetime_nonlocal``) and its PyTorch port by the same group (facebookresearch/SlowFast,
    ``slowfast/models/nonlocal_helper.py``, ``Nonlocal``) keep every tensor (B, C, positions):
    1x1 convs θ, φ, g on NCHW maps (φ, g after the optional 2x2 max-pool of x), ``view(B, d, -1)``,
    affinity ``θᵀ φ`` (BatchMatMul trans_a), softmax over the keys (optionally scaled), ``g pᵀ``
    (BatchMatMul trans_b) giving (B, d, N), ``view`` back to (B, d, H, W), 1x1 conv W_z, BN, sum.
    (timm's NonLocalAttn computes ``bmm(att, g)`` and permutes back instead.) The pool keeps a
    last odd row or column (``ceil_mode``), as the module; on even sizes it is the official pool."""

    def __init__(self, channels: int, inner: int, subsample: bool, scale: float) -> None:
        super().__init__()
        self.theta = nn.Conv2d(channels, inner, 1)
        self.phi = nn.Conv2d(channels, inner, 1)
        self.g = nn.Conv2d(channels, inner, 1)
        self.w_z = nn.Conv2d(inner, channels, 1)
        self.bn = nn.BatchNorm2d(channels)
        self.subsample, self.scale, self.inner = subsample, scale, inner

    def forward(self, x):
        b, c, h, w = x.shape
        theta = self.theta(x)
        xs = F.max_pool2d(x, 2, 2, ceil_mode=True) if self.subsample else x
        phi = self.phi(xs)
        g = self.g(xs)
        theta = theta.view(b, self.inner, -1)
        phi = phi.view(b, self.inner, -1)
        g = g.view(b, self.inner, -1)
        theta_phi = torch.bmm(theta.transpose(1, 2), phi)  # (B, N, M)
        if self.scale != 1.0:
            theta_phi = theta_phi * self.scale
        p = F.softmax(theta_phi, dim=2)
        t = torch.bmm(g, p.transpose(1, 2))  # (B, d, N)
        y = self.w_z(t.view(b, self.inner, h, w))
        return x + self.bn(y)


@_reference("nonlocal")
def _nonlocal(m):
    _require(m, pairwise="embedded_gaussian")
    return _copy(NonLocalRef(m.channels, m.inner, m.subsample, m.logit_scale), m)


class DANetPAMRef(nn.Module):
    """DANet's position attention module as the official code writes it (junfu1115/DANet,
    ``encoding/nn/da_att.py``, ``PAM_Module``): 1x1 query/key convs to C/8, value conv to C,
    bmm energies, softmax over the last axis, bmm with the transposed attention, gamma * out + x."""

    def __init__(self, channels: int, width: int) -> None:
        super().__init__()
        self.query_conv = nn.Conv2d(channels, width, 1)
        self.key_conv = nn.Conv2d(channels, width, 1)
        self.value_conv = nn.Conv2d(channels, channels, 1)
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        b, c, h, w = x.shape
        q = self.query_conv(x).view(b, -1, h * w).permute(0, 2, 1)
        k = self.key_conv(x).view(b, -1, h * w)
        attention = torch.softmax(torch.bmm(q, k), dim=-1)
        v = self.value_conv(x).view(b, -1, h * w)
        out = torch.bmm(v, attention.permute(0, 2, 1)).view(b, c, h, w)
        return self.gamma * out + x


class DANetCAMRef(nn.Module):
    """DANet's channel attention module as the official code writes it (junfu1115/DANet,
    ``encoding/nn/da_att.py``, ``CAM_Module``): bmm of the flattened map with its transpose, ``max(energy) - energy`` (only with ``official=True``; the
    paper's form is the plain softmax of the energies), softmax, bmm, gamma * out + x."""

    def __init__(self, official: bool) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.zeros(1))
        self.official = official

    def forward(self, x):
        b, c, h, w = x.shape
        a = x.view(b, c, -1)
        energy = torch.bmm(a, a.permute(0, 2, 1))
        if self.official:
            energy = torch.max(energy, -1, keepdim=True)[0].expand_as(energy) - energy
        out = torch.bmm(torch.softmax(energy, dim=-1), a).view(b, c, h, w)
        return self.gamma * out + x


class DANetDualRef(nn.Module):
    """The two official modules (``encoding/nn/da_att.py``, ``PAM_Module`` and ``CAM_Module``) on
    the same input, summed, less one copy of the input (the package's plug-in form of DANet's
    head, ``encoding/models/sseg/danet.py``, without its convolutions)."""

    def __init__(self, channels: int, width: int, official: bool) -> None:
        super().__init__()
        self.pam = DANetPAMRef(channels, width)
        self.cam = DANetCAMRef(official)

    def forward(self, x):
        return self.pam(x) + self.cam(x) - x


@_reference("pam")
def _pam(m):
    return _copy(DANetPAMRef(m.channels, m.width), m)


@_reference("cam")
def _cam(m):
    return _copy(DANetCAMRef(m.channel_affinity == "official"), m)


@_reference("danet")
def _danet(m):
    return _copy(DANetDualRef(m.channels, m.position.width, m.channel_affinity == "official"), m)
