"""Speed figures for every registered mechanism on this machine: `make bench`.

Timings depend on the machine and its load, so they live here and never in the tests.

Three tables:

- ``costs``: parameters, counted FLOPs and the median time of one forward+backward pass for
  each mechanism at a few ResNet-like shapes, next to a 3x3 convolution of the same width.
- ``refs``: each mechanism against a *reference*, the same computation written the way
  production libraries (timm, the papers' official repositories) write it: plain PyTorch, no
  einops, no input checks, no ``Gate`` submodules. Each reference gets the module's weights
  and is checked equal to it (outputs and gradients) before it is timed; module and reference
  then run interleaved (ABBA order, blocks of passes, the minimum over blocks of each block's
  median), so that load drifting on a shared machine hits both alike.
- ``linear``: Part IV's targets at N = 16,384 tokens (``attncourse.linear.sweep.targets``): linear
  attention's step against ``scaled_dot_product_attention`` and the naive softmax, the
  ``LinearAttention2d`` module against Part III's MHSA, and how peak memory grows with N.

The references are importable (``tests/test_benchmark_refs.py`` checks every one of them
against its module, so they cannot drift): ``reference_for(module)`` returns a reference
holding a copy of ``module``'s weights. Every registered mechanism must have one.

Options: ``--threads`` (torch threads), ``--table costs|refs|linear|all``, ``--only`` names,
``--overhead`` (also time each module with its input checks and gates stripped out),
``--clock cpu`` (the process's CPU time instead of wall time; steadier on a busy machine
with ``--threads 1``, meaningless with several threads that spin while they wait).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import math
import platform
import statistics
import sys
import time
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

import attncourse
from attncourse.cost import measure, time_forward_backward
from attncourse.layers import Gate

SHAPES = [(8, 64, 56, 56), (8, 256, 28, 28), (8, 512, 14, 14)]
REF_SHAPES = [(8, 256, 28, 28), (8, 512, 14, 14)]

# ----------------------------------------------------------------------------------------------
# References: plain PyTorch, written as production code writes these blocks. Each builder takes
# the package's module, refuses configurations it does not implement, and copies the weights.
# ----------------------------------------------------------------------------------------------

REFERENCES: dict[str, Callable[[nn.Module], nn.Module]] = {}


def _reference(name: str):
    def decorate(build):
        REFERENCES[name] = build
        return build

    return decorate


def _require(module: nn.Module, **settings) -> None:
    """The reference implements only these settings of the module (its defaults)."""
    for key, want in settings.items():
        got = getattr(module, key)
        if got != want:
            raise NotImplementedError(f"the reference for {type(module).__name__} needs {key}={want!r}, got {got!r}")


def _copy(dst: nn.Module, src: nn.Module) -> None:
    """Copy src's parameters and buffers into dst's (same order; reshaped, e.g. Linear -> 1x1 conv)."""
    d, s = dict(dst.state_dict()), src.state_dict()
    if len(d) != len(s):
        raise ValueError(f"{type(dst).__name__} has {len(d)} tensors, {type(src).__name__} has {len(s)}")
    with torch.no_grad():
        for (kd, td), (ks, ts) in zip(d.items(), s.items()):
            if td.numel() != ts.numel():
                raise ValueError(f"cannot copy {ks} {tuple(ts.shape)} into {kd} {tuple(td.shape)}")
            td.copy_(ts.reshape(td.shape))


class SERef(nn.Module):
    """SE as PyTorch ports of the SE release write it (e.g. moskomule/senet.pytorch): mean, Linear,
    ReLU, Linear, sigmoid, multiply. (timm's SEModule uses 1x1 convolutions instead, which measured
    slower here on the CPU, so the faster form is the reference.)"""

    def __init__(self, channels: int, hidden: int, bias: bool) -> None:
        super().__init__()
        self.fc1 = nn.Linear(channels, hidden, bias=bias)
        self.fc2 = nn.Linear(hidden, channels, bias=bias)

    def forward(self, x):
        b, c = x.shape[:2]
        s = self.fc2(F.relu(self.fc1(x.mean((2, 3))), inplace=True))
        return x * s.sigmoid().view(b, c, 1, 1)


@_reference("se")
def _se(m):
    ref = SERef(m.channels, m.hidden, m.bias)
    _copy(ref, m)
    return ref


class ECARef(nn.Module):
    """The official ECA module (BangguWu/ECANet) and timm's EcaModule."""

    def __init__(self, k: int) -> None:
        super().__init__()
        self.conv = nn.Conv1d(1, 1, k, padding=(k - 1) // 2, bias=False)

    def forward(self, x):
        y = x.mean((2, 3)).view(x.shape[0], 1, -1)
        y = self.conv(y).view(x.shape[0], -1, 1, 1).sigmoid()
        return x * y


@_reference("eca")
def _eca(m):
    ref = ECARef(m.kernel_size)
    _copy(ref, m)
    return ref


class SKRef(nn.Module):
    """timm's SelectiveKernel (attn part) with the SKNet layout: M dilated 3x3 grouped conv-BN-ReLU
    paths, stacked, summed, pooled, FC-BN-ReLU, FC to M*C, softmax over the paths, weighted sum."""

    def __init__(self, channels: int, branches: int, groups: int, hidden: int) -> None:
        super().__init__()
        self.paths = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(channels, channels, 3, padding=m, dilation=m, groups=groups, bias=False),
                nn.BatchNorm2d(channels),
                nn.ReLU(inplace=True),
            )
            for m in range(1, branches + 1)
        )
        self.fc = nn.Linear(channels, hidden, bias=False)
        self.bn = nn.BatchNorm1d(hidden)
        self.select = nn.Linear(hidden, branches * channels, bias=False)
        self.branches = branches

    def forward(self, x):
        b, c = x.shape[:2]
        u = torch.stack([p(x) for p in self.paths], 1)
        s = u.sum(1).mean((2, 3))
        z = F.relu(self.bn(self.fc(s)), inplace=True)
        a = self.select(z).view(b, self.branches, c, 1, 1).softmax(1)
        return (u * a).sum(1)


@_reference("sk")
def _sk(m):
    ref = SKRef(m.channels, m.branches, m.groups, m.hidden)
    _copy(ref, m)
    return ref


class SimAMRef(nn.Module):
    """The official simam_module (ZjjConan/SimAM), with n = max(HW - 1, 1) as the package."""

    def __init__(self, e_lambda: float) -> None:
        super().__init__()
        self.e_lambda = e_lambda

    def forward(self, x):
        n = max(x.shape[2] * x.shape[3] - 1, 1)
        d = (x - x.mean(dim=[2, 3], keepdim=True)).pow(2)
        y = d / (4 * (d.sum(dim=[2, 3], keepdim=True) / n + self.e_lambda)) + 0.5
        return x * torch.sigmoid(y)


@_reference("simam")
def _simam(m):
    return SimAMRef(m.e_lambda)


class CBAMRef(nn.Module):
    """CBAM as the official code (Jongchan/attention-module) writes it, in the paper's settings
    (conv with bias and no BN, [avg; max]): pools as avg_pool2d / max_pool2d over the whole map,
    one MLP on both, channel max with torch.max."""

    def __init__(self, channels: int, hidden: int, k: int, bias: bool) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(channels, hidden, bias=bias), nn.ReLU(), nn.Linear(hidden, channels, bias=bias))
        self.spatial = nn.Conv2d(2, 1, k, padding=k // 2)

    def forward(self, x):
        b, c, h, w = x.shape
        avg = F.avg_pool2d(x, (h, w)).view(b, c)
        mx = F.max_pool2d(x, (h, w)).view(b, c)
        x = x * (self.mlp(avg) + self.mlp(mx)).sigmoid().view(b, c, 1, 1)
        pooled = torch.cat([x.mean(1, keepdim=True), torch.max(x, 1, keepdim=True)[0]], 1)
        return x * self.spatial(pooled).sigmoid()


@_reference("cbam")
def _cbam(m):
    _require(m, order="channel-spatial", spatial_norm=False, pool_order="avg-max")
    ref = CBAMRef(m.channels, m.hidden, m.kernel_size, m.bias)
    _copy(ref, m)
    return ref


class BAMRef(nn.Module):
    """BAM as the official code writes it (expand_as, att = 1 + sigmoid(.), att * x), in the paper's
    settings: sum of the branches, BN at each branch's output."""

    def __init__(self, channels: int, hidden: int, d: int) -> None:
        super().__init__()
        self.fc0 = nn.Linear(channels, hidden)
        self.fc1 = nn.Linear(hidden, channels)
        self.bn_c = nn.BatchNorm1d(channels)
        self.f0 = nn.Conv2d(channels, hidden, 1)
        self.f1 = nn.Conv2d(hidden, hidden, 3, padding=d, dilation=d)
        self.f2 = nn.Conv2d(hidden, hidden, 3, padding=d, dilation=d)
        self.f3 = nn.Conv2d(hidden, 1, 1)
        self.bn_s = nn.BatchNorm2d(1)

    def forward(self, x):
        b, c, h, w = x.shape
        mc = self.bn_c(self.fc1(F.relu(self.fc0(F.avg_pool2d(x, (h, w)).view(b, c))))).view(b, c, 1, 1)
        ms = self.bn_s(self.f3(F.relu(self.f2(F.relu(self.f1(F.relu(self.f0(x))))))))
        att = 1 + torch.sigmoid(mc.expand_as(x) + ms.expand_as(x))
        return att * x


@_reference("bam")
def _bam(m):
    _require(m, combine="sum", bn="output")
    ref = BAMRef(m.channels, m.hidden, m.dilation)
    _copy(ref, m)
    return ref


class SCSERef(nn.Module):
    """The official ChannelSpatialSELayer (ai-med/squeeze_and_excitation), with the MICCAI sum."""

    def __init__(self, channels: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(channels, hidden)
        self.fc2 = nn.Linear(hidden, channels)
        self.conv = nn.Conv2d(channels, 1, 1)

    def forward(self, x):
        b, c = x.shape[:2]
        s = x.view(b, c, -1).mean(dim=2)
        s = torch.sigmoid(self.fc2(F.relu(self.fc1(s))))
        cse = x * s.view(b, c, 1, 1)
        sse = x * torch.sigmoid(self.conv(x))
        return cse + sse


@_reference("scse")
def _scse(m):
    _require(m, aggregation="sum")
    ref = SCSERef(m.channels, m.cse.hidden)
    _copy(ref, m)
    return ref


class CoordRef(nn.Module):
    """Coordinate attention as timm's CoordAttn writes it (means along each axis, cat, conv-BN-
    h_swish, split, two 1x1 convs with sigmoids, x * a_h * a_w), with the official code's biases
    and hidden width. The official CoordAtt's adaptive pools and permutes measured slower here."""

    def __init__(self, channels: int, hidden: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, hidden, 1)
        self.bn1 = nn.BatchNorm2d(hidden)
        self.conv_h = nn.Conv2d(hidden, channels, 1)
        self.conv_w = nn.Conv2d(hidden, channels, 1)

    def forward(self, x):
        h, w = x.shape[2:]
        x_h = x.mean(3, keepdim=True)
        x_w = x.mean(2, keepdim=True).transpose(-1, -2)
        y = F.hardswish(self.bn1(self.conv1(torch.cat([x_h, x_w], dim=2))))
        y_h, y_w = torch.split(y, [h, w], dim=2)
        a_h = self.conv_h(y_h).sigmoid()
        a_w = self.conv_w(y_w.transpose(-1, -2)).sigmoid()
        return x * a_h * a_w


@_reference("coord")
def _coord(m):
    ref = CoordRef(m.channels, m.hidden)
    _copy(ref, m)
    return ref


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
    ref = MHSARef(m.channels, m.heads, m.bias)
    _copy(ref, m)
    return ref


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
    ref = GCRef(m.channels, m.hidden)
    _copy(ref, m)
    return ref


class NonLocalRef(nn.Module):
    """The embedded-Gaussian non-local block as the official code (facebookresearch/video-nonlocal-net,
    nonlocal_helper.py) and timm's NonLocalAttn write it, in 2-D: 1x1 convs θ, φ, g (φ, g after the
    optional 2x2 max-pool of x), view, bmm, softmax (optionally scaled), bmm, 1x1 conv W_z, BN, add."""

    def __init__(self, channels: int, inner: int, subsample: bool, scale: float) -> None:
        super().__init__()
        self.theta = nn.Conv2d(channels, inner, 1)
        self.phi = nn.Conv2d(channels, inner, 1)
        self.g = nn.Conv2d(channels, inner, 1)
        self.w_z = nn.Conv2d(inner, channels, 1)
        self.bn = nn.BatchNorm2d(channels)
        self.subsample, self.scale = subsample, scale

    def forward(self, x):
        b, c, h, w = x.shape
        xs = F.max_pool2d(x, 2, 2, ceil_mode=True) if self.subsample else x
        t = self.theta(x).view(b, -1, h * w).permute(0, 2, 1)
        p = self.phi(xs).flatten(2)
        g = self.g(xs).flatten(2).permute(0, 2, 1)
        att = F.softmax(torch.bmm(t, p) * self.scale, dim=2)
        y = torch.bmm(att, g).permute(0, 2, 1).reshape(b, -1, h, w)
        return x + self.bn(self.w_z(y))


@_reference("nonlocal")
def _nonlocal(m):
    _require(m, pairwise="embedded_gaussian")
    ref = NonLocalRef(m.channels, m.inner, m.subsample, m.logit_scale)
    _copy(ref, m)
    return ref


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
    """DANet's channel attention module as the official ``CAM_Module`` writes it: bmm of the
    flattened map with its transpose, ``max(energy) - energy`` (only with ``official=True``; the
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
    """The two official modules on the same input, summed, less one copy of the input (the
    package's plug-in form of DANet's head without its convolutions)."""

    def __init__(self, channels: int, width: int, official: bool) -> None:
        super().__init__()
        self.pam = DANetPAMRef(channels, width)
        self.cam = DANetCAMRef(official)

    def forward(self, x):
        return self.pam(x) + self.cam(x) - x


@_reference("pam")
def _pam(m):
    ref = DANetPAMRef(m.channels, m.width)
    _copy(ref, m)
    return ref


@_reference("cam")
def _cam(m):
    ref = DANetCAMRef(m.channel_affinity == "official")
    _copy(ref, m)
    return ref


@_reference("danet")
def _danet(m):
    ref = DANetDualRef(m.channels, m.position.width, m.channel_affinity == "official")
    _copy(ref, m)
    return ref


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
    """Focused linear attention as the official code writes it (LeapLabTHU/FLatten-Transformer,
    models/flatten_swin.py ``FocusedLinearAttention.forward`` after commit e205a01: qkv Linear,
    reshape/permute, ReLU, norms, ``** p``, renormalise, ``q @ (kᵀ v) * z``, a depthwise conv on v
    with the heads folded into the batch, proj Linear), at the paper's settings that are the
    module's defaults: no learnable scale, no positional encoding, norms per head, ReLU without
    + 1e-6 (an all-zero feature is mapped to 0 by clamping the norm, as the module does), the sum
    form of the normaliser with ε = 1e-6, any H x W; plus the residual."""

    def __init__(self, channels: int, heads: int, p: float, kernel_size: int | None, bias: bool, eps: float) -> None:
        super().__init__()
        self.heads, self.p, self.eps = heads, p, eps
        d = channels // heads
        self.qkv = nn.Linear(channels, 3 * channels, bias=bias)
        self.proj = nn.Linear(channels, channels, bias=bias)
        self.dwc = None if kernel_size is None else nn.Conv2d(d, d, kernel_size, padding=kernel_size // 2, groups=d)

    def forward(self, x):
        b, c, h, w = x.shape
        n, heads = h * w, self.heads
        qkv = self.qkv(x.flatten(2).transpose(1, 2)).reshape(b, n, 3, heads, c // heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        q, k = F.relu(q), F.relu(k)
        q_norm, k_norm = q.norm(dim=-1, keepdim=True), k.norm(dim=-1, keepdim=True)
        q, k = q**self.p, k**self.p
        tiny = torch.finfo(q.dtype).tiny
        q = q / q.norm(dim=-1, keepdim=True).clamp_min(tiny) * q_norm
        k = k / k.norm(dim=-1, keepdim=True).clamp_min(tiny) * k_norm
        z = 1 / (q @ k.sum(dim=-2, keepdim=True).transpose(-2, -1) + self.eps)
        o = q @ (k.transpose(-2, -1) @ v) * z
        if self.dwc is not None:
            o = o + self.dwc(v.transpose(-2, -1).reshape(b * heads, -1, h, w)).reshape(b, heads, -1, n).transpose(-2, -1)
        o = self.proj(o.transpose(1, 2).reshape(b, n, c))
        return x + o.transpose(1, 2).reshape(b, c, h, w)


@_reference("flatten")
def _flatten(m):
    _require(m, scale=None, norm="head", key_position=None)
    ref = FLattenRef(m.channels, m.heads, m.focusing_factor, m.kernel_size, m.bias, m.eps)
    _copy(ref, m)
    return ref


class LinearAttentionRef(nn.Module):
    """Linear attention as fast-transformers writes it (idiap/fast-transformers,
    fast_transformers/attention/linear_attention.py): elu + 1 features, einsum for KV = Σ φ(K)Vᵀ,
    Z = 1 / (φ(Q)·Σ φ(K) + eps), and one einsum for φ(Q) KV Z; layout (batch, positions, heads, d).
    Around it: one qkv Linear on the flattened positions, the proj Linear, the residual."""

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
    _require(m, feature_map="elu")
    ref = LinearAttentionRef(m.channels, m.heads, m.bias, m.eps)
    _copy(ref, m)
    return ref


class GAMRef(nn.Module):
    """GAM as the widely copied GAM_Attention writes it (no official code exists): permute + view,
    Linear-ReLU-Linear, permute back, sigmoid (absent in the (in_channels, out_channels) copies),
    multiply; conv-BN-ReLU-conv-BN, sigmoid, multiply."""

    def __init__(self, channels: int, hidden: int, k: int, channel_sigmoid: bool) -> None:
        super().__init__()
        self.channel_attention = nn.Sequential(
            nn.Linear(channels, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, channels)
        )
        self.spatial_attention = nn.Sequential(
            nn.Conv2d(channels, hidden, k, padding=k // 2),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, channels, k, padding=k // 2),
            nn.BatchNorm2d(channels),
        )
        self.channel_sigmoid = channel_sigmoid

    def forward(self, x):
        b, c, h, w = x.shape
        att = self.channel_attention(x.permute(0, 2, 3, 1).view(b, -1, c)).view(b, h, w, c).permute(0, 3, 1, 2)
        x = x * (att.sigmoid() if self.channel_sigmoid else att)
        return x * self.spatial_attention(x).sigmoid()


@_reference("gam")
def _gam(m):
    ref = GAMRef(m.channels, m.hidden, m.kernel_size, m.channel_sigmoid)
    _copy(ref, m)
    return ref


class ShuffleRef(nn.Module):
    """SA-Net's sa_layer as the official code writes it (wofmanaf/SA-Net models/sa_resnet.py): reshape to
    (B*G, C/G, H, W), chunk, pool-affine-sigmoid and GN-affine-sigmoid, cat, reshape, channel shuffle."""

    def __init__(self, channels: int, groups: int, affine: bool) -> None:
        super().__init__()
        self.groups = groups
        k = channels // (2 * groups)
        self.cweight = nn.Parameter(torch.zeros(1, k, 1, 1))
        self.cbias = nn.Parameter(torch.ones(1, k, 1, 1))
        self.sweight = nn.Parameter(torch.zeros(1, k, 1, 1))
        self.sbias = nn.Parameter(torch.ones(1, k, 1, 1))
        self.gn = nn.GroupNorm(k, k, affine=affine)

    def forward(self, x):
        b, c, h, w = x.shape
        x = x.reshape(b * self.groups, -1, h, w)
        x_0, x_1 = x.chunk(2, dim=1)
        xn = x_0 * torch.sigmoid(self.cweight * F.adaptive_avg_pool2d(x_0, 1) + self.cbias)
        xs = x_1 * torch.sigmoid(self.sweight * self.gn(x_1) + self.sbias)
        out = torch.cat([xn, xs], dim=1).reshape(b, -1, h, w)
        return out.reshape(b, 2, -1, h, w).permute(0, 2, 1, 3, 4).reshape(b, -1, h, w)


@_reference("sa")
def _sa(m):
    ref = ShuffleRef(m.channels, m.groups, m.norm_affine)
    _copy(ref, m)
    return ref


class EMARef(nn.Module):
    """EMA as the official code writes it (YOLOonMe/EMA-attention-module, EMA_attention_module):
    reshape to (B*G, C/G, H, W), adaptive pools along H and W, permute, cat, shared 1x1 conv, split,
    sigmoids, GroupNorm(C/G, C/G); 3x3 conv; softmax of the pooled branches, two matmuls, sigmoid."""

    def __init__(self, channels: int, factor: int) -> None:
        super().__init__()
        self.groups = factor
        c = channels // factor
        self.softmax = nn.Softmax(-1)
        self.agp = nn.AdaptiveAvgPool2d((1, 1))
        self.pool_h = nn.AdaptiveAvgPool2d((None, 1))
        self.pool_w = nn.AdaptiveAvgPool2d((1, None))
        self.gn = nn.GroupNorm(c, c)
        self.conv1x1 = nn.Conv2d(c, c, kernel_size=1)
        self.conv3x3 = nn.Conv2d(c, c, kernel_size=3, padding=1)

    def forward(self, x):
        b, c, h, w = x.size()
        group_x = x.reshape(b * self.groups, -1, h, w)
        x_h = self.pool_h(group_x)
        x_w = self.pool_w(group_x).permute(0, 1, 3, 2)
        hw = self.conv1x1(torch.cat([x_h, x_w], dim=2))
        x_h, x_w = torch.split(hw, [h, w], dim=2)
        x1 = self.gn(group_x * x_h.sigmoid() * x_w.permute(0, 1, 3, 2).sigmoid())
        x2 = self.conv3x3(group_x)
        x11 = self.softmax(self.agp(x1).reshape(b * self.groups, -1, 1).permute(0, 2, 1))
        x12 = x2.reshape(b * self.groups, c // self.groups, -1)
        x21 = self.softmax(self.agp(x2).reshape(b * self.groups, -1, 1).permute(0, 2, 1))
        x22 = x1.reshape(b * self.groups, c // self.groups, -1)
        weights = (torch.matmul(x11, x12) + torch.matmul(x21, x22)).reshape(b * self.groups, 1, h, w)
        return (group_x * weights.sigmoid()).reshape(b, c, h, w)


@_reference("ema")
def _ema(m):
    ref = EMARef(m.channels, m.factor)
    ref.load_state_dict(m.state_dict())  # same names (gn, conv1x1, conv3x3), another order
    return ref


class TripletGateRef(nn.Module):
    """The official AttentionGate (landskape-ai/triplet-attention, triplet_attention.py): ZPool
    [max; mean] over dim 1, conv k x k without bias, BN (eps 1e-5, momentum 0.01), sigmoid, x * scale."""

    def __init__(self, k: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 1, k, padding=(k - 1) // 2, bias=False)
        self.bn = nn.BatchNorm2d(1, eps=1e-5, momentum=0.01)

    def forward(self, x):
        z = torch.cat((torch.max(x, 1)[0].unsqueeze(1), torch.mean(x, 1).unsqueeze(1)), dim=1)
        return x * torch.sigmoid(self.bn(self.conv(z)))


class TripletRef(nn.Module):
    """TripletAttention as the official code writes it: permute, contiguous, gate, permute back,
    average of the three (or two, no_spatial) outputs."""

    def __init__(self, k: int) -> None:
        super().__init__()
        self.hc = TripletGateRef(k)
        self.cw = TripletGateRef(k)
        self.hw = TripletGateRef(k)

    def forward(self, x):
        x_out1 = self.cw(x.permute(0, 2, 1, 3).contiguous()).permute(0, 2, 1, 3).contiguous()
        x_out2 = self.hc(x.permute(0, 3, 2, 1).contiguous()).permute(0, 3, 2, 1).contiguous()
        return 1 / 3 * (self.hw(x) + x_out1 + x_out2)


@_reference("triplet")
def _triplet(m):
    _require(m, no_spatial=False)
    ref = TripletRef(m.kernel_size)
    ref.load_state_dict(m.state_dict())  # same names (hc, cw, hw; conv, bn): the official code's
    return ref


def _name_of(module: nn.Module) -> str:
    for name in attncourse.available():
        if type(module) is attncourse.get(name):
            return name
    raise ValueError(f"{type(module).__name__} is not a registered mechanism")


def reference_for(module: nn.Module) -> nn.Module:
    """A plain-PyTorch reference of ``module``'s computation, holding a copy of its weights,
    in the same training mode. Raises ``KeyError`` if the mechanism has no reference."""
    name = _name_of(module)
    if name not in REFERENCES:
        raise KeyError(f"no benchmark reference for {name!r}: add one to tools/benchmark.py")
    ref = REFERENCES[name](module)
    return ref.to(next(iter(module.parameters()), torch.empty(0)).dtype).train(module.training)


def check_reference(module: nn.Module, ref: nn.Module, x: torch.Tensor, **tolerances) -> None:
    """Assert that ``ref`` computes what ``module`` computes: output and input gradient, on
    copies of both (so that batch-norm running statistics are left as they were)."""
    module, ref = copy.deepcopy(module), copy.deepcopy(ref)
    g = torch.randn_like(x)
    outs = []
    for m in (module, ref):
        xi = x.detach().clone().requires_grad_(True)
        y = m(xi)
        y.backward(g)
        outs.append((y.detach(), xi.grad))
    torch.testing.assert_close(outs[1][0], outs[0][0], **tolerances)
    torch.testing.assert_close(outs[1][1], outs[0][1], **tolerances)


# ----------------------------------------------------------------------------------------------
# Stripped modules: the same module without its input checks and gates, to measure their cost.
# ----------------------------------------------------------------------------------------------


class _Stripped(nn.Module):
    """``module`` with every ``Gate`` replaced by its activation and ``check_input`` made a no-op."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.inner = copy.deepcopy(module)
        for parent in list(self.inner.modules()):
            for key, child in list(parent.named_children()):
                if isinstance(child, Gate):
                    setattr(parent, key, child.activation)
        # every module file whose forward may run here, base classes' included (scSE's cSE runs
        # SqueezeExcite.forward, which looks check_input up in se.py)
        self._namespaces = {
            sys.modules[cls.__module__]
            for m in self.inner.modules()
            for cls in type(m).__mro__
            if hasattr(sys.modules.get(cls.__module__), "check_input")
        }

    @contextlib.contextmanager
    def _no_checks(self):
        saved = [(ns, ns.check_input) for ns in self._namespaces]
        for ns, _ in saved:
            ns.check_input = lambda module, x, *args, **kwargs: x
        try:
            yield
        finally:
            for ns, f in saved:
                ns.check_input = f

    def forward(self, x):
        with self._no_checks():
            return self.inner(x)


# ----------------------------------------------------------------------------------------------
# Interleaved timing.
# ----------------------------------------------------------------------------------------------


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
_clock = time.perf_counter


def _one_pass(m: nn.Module, x: torch.Tensor, g: torch.Tensor) -> float:
    x.grad = None
    for p in m.parameters():
        p.grad = None
    start = _clock()
    m(x).backward(g)
    return _clock() - start


def time_interleaved(
    modules: list[nn.Module], x: torch.Tensor, *, blocks: int = 5, per_block: int = 6, warmup: int = 2
) -> list[float]:
    """Seconds of one forward+backward pass of each module on ``x``: the passes alternate
    (forward order, then reversed, within every round), and each module's figure is the minimum
    over ``blocks`` of the median of its ``per_block`` passes in that block."""
    x = x.detach().clone().requires_grad_(True)
    g = torch.randn_like(x)
    for _ in range(warmup):
        for m in modules:
            _one_pass(m, x, g)
    best = [math.inf] * len(modules)
    for _ in range(blocks):
        times: list[list[float]] = [[] for _ in modules]
        for r in range(per_block):
            order = range(len(modules)) if r % 2 == 0 else reversed(range(len(modules)))
            for i in order:
                times[i].append(_one_pass(modules[i], x, g))
        best = [min(b, statistics.median(t)) for b, t in zip(best, times)]
    return best


def compare(names: list[str], shapes, *, blocks: int, per_block: int, overhead: bool) -> None:
    print(f"{'module':<8} {'input (B, C, H, W)':<20} {'ms module':>10} {'ms reference':>13} {'ratio':>7}"
          + (f" {'ms stripped':>12} {'checks+gates':>13}" if overhead else ""))
    ratios = []
    for shape in shapes:
        torch.manual_seed(0)
        x = torch.randn(shape)
        for name in names:
            module = attncourse.create(name, shape[1])
            ref = reference_for(module)
            check_reference(copy.deepcopy(module).double(), copy.deepcopy(ref).double(), x[:2].double())
            candidates = [module, ref] + ([_Stripped(module)] if overhead else [])
            t = time_interleaved(candidates, x, blocks=blocks, per_block=per_block)
            ratios.append(t[0] / t[1])
            line = f"{name:<8} {str(shape):<20} {1e3 * t[0]:>10.2f} {1e3 * t[1]:>13.2f} {t[0] / t[1]:>7.3f}"
            if overhead:
                line += f" {1e3 * t[2]:>12.2f} {100 * (t[0] / t[2] - 1):>+12.1f}%"
            print(line, flush=True)
    gm = math.exp(sum(math.log(r) for r in ratios) / len(ratios))
    print(f"\ngeometric mean of the ratios: {gm:.3f}  (worst: {max(ratios):.3f}; target: each <= 1.05, mean <= 1.0)")


def overhead_micro() -> None:
    """The absolute cost of one input check and of one Gate (against the bare activation)."""
    import timeit

    from attncourse._checks import check_input

    m, x, t = attncourse.create("se", 256), torch.randn(8, 256, 28, 28), torch.randn(8, 256)
    gate, bare = Gate(nn.Sigmoid()), nn.Sigmoid()
    rows = {"check_input": lambda: check_input(m, x, 256), "Gate(Sigmoid) on (8, 256)": lambda: gate(t),
            "nn.Sigmoid on (8, 256)": lambda: bare(t)}
    for label, f in rows.items():
        best = min(timeit.repeat(f, number=5000, repeat=5)) / 5000
        print(f"{label:<28} {1e6 * best:7.2f} us per call")
    print()


def costs(names: list[str], repeats: int) -> None:
    print(f"{'module':<10} {'input (B, C, H, W)':<22} {'params':>10} {'MFLOPs':>10} {'ms':>9} {'ms 3x3 conv':>12}")
    for shape in SHAPES:
        x = torch.randn(shape)
        conv = nn.Conv2d(shape[1], shape[1], 3, padding=1, bias=False)
        t_conv = time_forward_backward(conv, x, repeats=repeats)
        for name in names:
            c = measure(attncourse.create(name, shape[1]), x, repeats=repeats)
            print(f"{name:<10} {str(shape):<22} {c.parameters:>10,} {c.flops / 1e6:>10.2f} "
                  f"{1e3 * c.seconds:>9.2f} {1e3 * t_conv:>12.2f}")
        print()


def linear_targets(repeats: int) -> None:
    """Part IV's targets (issue 10) at N = 16,384 tokens, d = 64, one head, batch 1, float32, forward."""
    from attncourse.linear.sweep import targets

    t = targets(repeats=repeats)
    s, m, sp = t["step_seconds"], t["module_seconds"], t["speedup"]
    rows = [
        ("attention step: linear vs sdpa", f"{1e3 * s['linear']:.2f} vs {1e3 * s['sdpa']:.1f} ms", sp["linear_vs_sdpa"], 20),
        ("attention step: linear vs naive", f"{1e3 * s['linear']:.2f} vs {1e3 * s['naive']:.1f} ms", sp["linear_vs_naive"], 50),
        ("module: LinearAttention2d vs MHSA (h=1)", f"{1e3 * m['linear']:.2f} vs {1e3 * m['mhsa']:.1f} ms",
         sp["module_linear_vs_mhsa"], 10),
    ]
    print(f"{'':<42} {'measured':>24} {'speed-up':>9} {'target':>7}")
    for label, figures, ratio, target in rows:
        print(f"{label:<42} {figures:>24} {ratio:>8.1f}x {'>= ' + str(target) + 'x':>7}  {'ok' if ratio >= target else 'MISSED'}")
    print(f"\npeak memory of the step at N = {', '.join(f'{n:,}' for n in t['memory_ns'])} (MiB), growth per doubling:")
    for form, want in (("linear", "about 2x"), ("naive", "4x")):
        mib = ", ".join(f"{b / 2**20:.2f}" for b in t["memory_bytes"][form])
        growth = ", ".join(f"{g:.2f}x" for g in t["memory_growth"][form])
        print(f"  {form:<7} {mib:<30} {growth:<16} (target {want})")
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10, help="passes per figure in the costs table")
    parser.add_argument("--blocks", type=int, default=5, help="blocks of interleaved passes (refs table)")
    parser.add_argument("--per-block", type=int, default=6, help="passes of each module per block (refs table)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="wall",
                        help="wall time (default), or the process's CPU time: with --threads 1 on a busy "
                             "machine, CPU time leaves out the time the process waits for a core")
    parser.add_argument("--table", choices=["costs", "refs", "linear", "all"], default="all")
    parser.add_argument("--overhead", action="store_true", help="also time each module without checks and gates")
    parser.add_argument("--only", nargs="*", default=None, help="mechanism names (default: all)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    global _clock
    _clock = CLOCKS[args.clock]
    names = args.only or attncourse.available()
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, {args.threads} threads, "
          f"{args.clock} clock\n")
    if args.table in ("costs", "all"):
        print(f"Costs: median of {args.repeats} forward+backward passes\n")
        costs(names, args.repeats)
    if args.table in ("refs", "all"):
        print(f"Module against its plain-PyTorch reference: forward+backward, float32, interleaved, "
              f"min over {args.blocks} blocks of the median of {args.per_block} passes\n")
        if args.overhead:
            overhead_micro()
        compare(names, REF_SHAPES, blocks=args.blocks, per_block=args.per_block, overhead=args.overhead)
    if args.table in ("linear", "all"):
        print("Part IV targets: N = 16,384 tokens (128 x 128), d = 64, one head, batch 1, float32, forward; "
              "median of 5 passes\n")
        linear_targets(repeats=5)


if __name__ == "__main__":
    main()
