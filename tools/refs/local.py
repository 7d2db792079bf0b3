"""The benchmark references of Part V: the local-attention modules (``attncourse.local``).

Each class is the module's computation as its official code writes it; each ``@_reference``
builder takes the package's module, refuses settings the reference does not implement and copies
the weights. See ``tools/refs/__init__.py``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from . import _copy, _reference, _require

# ------------------------------------------------------------- Swin's window attention (chapters/local/window.md)
def _window_partition(x, ws):
    B, H, W, C = x.shape
    x = x.view(B, H // ws, ws, W // ws, ws, C)
    return x.permute(0, 1, 3, 2, 4, 5).contiguous().view(-1, ws, ws, C)


def _window_reverse(windows, ws, H, W):
    B = int(windows.shape[0] / (H * W / ws / ws))
    x = windows.view(B, H // ws, W // ws, ws, ws, -1)
    return x.permute(0, 1, 3, 2, 4, 5).contiguous().view(B, H, W, -1)


class WindowAttentionRef(nn.Module):
    """Swin's W-MSA / SW-MSA as the official code writes it (microsoft/Swin-Transformer,
    ``models/swin_transformer.py``: ``window_partition``, ``window_reverse``,
    ``WindowAttention.forward`` with its ``((2M-1)^2, heads)`` table and ``relative_position_index``,
    and the roll, partition, mask and reverse of ``SwinTransformerBlock``, without norm and MLP),
    on (B, C, H, W) with the module's residual. Padding as Swin's detection code (``F.pad`` to a
    multiple of M, the mask built for the padded size), plus the module's masking of padding keys
    (-100), which the detection code does not do; the mask is built once per size and cached."""

    def __init__(self, channels: int, ws: int, heads: int, shift: int, bias: bool) -> None:
        super().__init__()
        self.ws, self.heads, self.shift = ws, heads, shift
        self.scale = (channels // heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * ws - 1) * (2 * ws - 1), heads))
        coords = torch.stack(torch.meshgrid([torch.arange(ws), torch.arange(ws)], indexing="ij"))
        flat = torch.flatten(coords, 1)
        rel = (flat[:, :, None] - flat[:, None, :]).permute(1, 2, 0).contiguous()
        rel[:, :, 0] += ws - 1
        rel[:, :, 1] += ws - 1
        rel[:, :, 0] *= 2 * ws - 1
        self.register_buffer("relative_position_index", rel.sum(-1), persistent=False)
        self.qkv = nn.Linear(channels, channels * 3, bias=bias)
        self.proj = nn.Linear(channels, channels, bias=bias)
        self._masks: dict = {}

    def _mask(self, H, W, Hp, Wp, device):
        key = (H, W, Hp, Wp, device)
        if key not in self._masks:
            ws, s = self.ws, self.shift
            img_mask = torch.zeros((1, Hp, Wp, 1), device=device)
            if s > 0:
                slices = (slice(0, -ws), slice(-ws, -s), slice(-s, None))
                cnt = 0
                for h in slices:
                    for w in slices:
                        img_mask[:, h, w, :] = cnt
                        cnt += 1
            pad = torch.zeros((1, Hp, Wp, 1), device=device)
            pad[:, H:], pad[:, :, W:] = 1, 1
            pad = torch.roll(pad, shifts=(-s, -s), dims=(1, 2)) if s > 0 else pad
            mw = _window_partition(img_mask, ws).view(-1, ws * ws)
            pw = _window_partition(pad, ws).view(-1, ws * ws)
            mask = mw.unsqueeze(1) - mw.unsqueeze(2)
            mask = mask.masked_fill(mask != 0, float(-100.0)).masked_fill(mask == 0, float(0.0))
            self._masks[key] = mask.masked_fill(pw.unsqueeze(1) > 0, float(-100.0))
        return self._masks[key]

    def forward(self, x):
        B, C, H, W = x.shape
        shortcut = x
        x = x.permute(0, 2, 3, 1)
        ws = self.ws
        pad_b, pad_r = (ws - H % ws) % ws, (ws - W % ws) % ws
        x = F.pad(x, (0, 0, 0, pad_r, 0, pad_b))
        Hp, Wp = H + pad_b, W + pad_r
        if self.shift > 0:
            x = torch.roll(x, shifts=(-self.shift, -self.shift), dims=(1, 2))
        xw = _window_partition(x, ws).view(-1, ws * ws, C)
        B_, N, _ = xw.shape
        qkv = self.qkv(xw).reshape(B_, N, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        q = q * self.scale
        attn = q @ k.transpose(-2, -1)
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)].view(N, N, -1)
        attn = attn + bias.permute(2, 0, 1).contiguous().unsqueeze(0)
        mask = self._mask(H, W, Hp, Wp, x.device).to(x.dtype)
        nW = mask.shape[0]
        attn = attn.view(B_ // nW, nW, self.heads, N, N) + mask.unsqueeze(1).unsqueeze(0)
        attn = attn.view(-1, self.heads, N, N).softmax(dim=-1)
        x = (attn @ v).transpose(1, 2).reshape(B_, N, C)
        x = self.proj(x)
        x = _window_reverse(x.view(-1, ws, ws, C), ws, Hp, Wp)
        if self.shift > 0:
            x = torch.roll(x, shifts=(self.shift, self.shift), dims=(1, 2))
        x = x[:, :H, :W, :].contiguous()
        return shortcut + x.permute(0, 3, 1, 2)


@_reference("window")
def _window(m):
    ref = WindowAttentionRef(m.channels, m.window_size, m.heads, m.shift, m.bias)
    with torch.no_grad():
        # the module's (heads, 2M-1, 2M-1) table, key - query, as the official ((2M-1)^2, heads), query - key
        ref.relative_position_bias_table.copy_(m.relative_bias.flip(1, 2).flatten(1).t())
        ref.qkv.load_state_dict(m.qkv.state_dict())
        ref.proj.load_state_dict(m.proj.state_dict())
    return ref

# ------------------------------------------------------------- VOLO's outlook attention (chapters/local/outlook.md)


class OutlookAttentionRef(nn.Module):
    """Outlook attention as the official code writes it (sail-sg/volo, ``models/volo.py``, class
    ``OutlookAttention.forward``; timm's ``timm/models/volo.py`` is the same): tokens (B, H, W, C),
    ``v`` Linear, ``nn.Unfold(K, padding, stride)`` reshaped to (B, heads, N, K², d), weights from
    ``nn.AvgPool2d(stride, stride, ceil_mode=True)`` through the ``attn`` Linear reshaped to
    (B, heads, N, K², K²), ``* scale``, softmax, ``attn @ v``, ``F.fold`` back to (H, W), ``proj``
    Linear; dropout (0 in VOLO) left out. As a plug-in: ``x.permute(0, 2, 3, 1)`` in, the residual
    added back on (B, C, H, W), as the Outlooker adds it (without its LayerNorm and MLP)."""

    def __init__(self, dim: int, num_heads: int, kernel_size: int, padding: int, stride: int, qkv_bias: bool,
                 qk_scale: float) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.kernel_size = kernel_size
        self.padding = padding
        self.stride = stride
        self.scale = qk_scale
        self.v = nn.Linear(dim, dim, bias=qkv_bias)
        self.attn = nn.Linear(dim, kernel_size**4 * num_heads)
        self.proj = nn.Linear(dim, dim)
        self.unfold = nn.Unfold(kernel_size=kernel_size, padding=padding, stride=stride)
        self.pool = nn.AvgPool2d(kernel_size=stride, stride=stride, ceil_mode=True)

    def forward(self, x0):
        x = x0.permute(0, 2, 3, 1)
        B, H, W, C = x.shape
        v = self.v(x).permute(0, 3, 1, 2)  # B, C, H, W
        h, w = math.ceil(H / self.stride), math.ceil(W / self.stride)
        v = self.unfold(v).reshape(B, self.num_heads, C // self.num_heads, self.kernel_size * self.kernel_size,
                                   h * w).permute(0, 1, 4, 3, 2)  # B, heads, N, kxk, C/heads
        attn = self.pool(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        attn = self.attn(attn).reshape(B, h * w, self.num_heads, self.kernel_size * self.kernel_size,
                                       self.kernel_size * self.kernel_size).permute(0, 2, 1, 3, 4)  # B, heads, N, kxk, kxk
        attn = attn * self.scale
        attn = attn.softmax(dim=-1)
        x = (attn @ v).permute(0, 1, 4, 3, 2).reshape(B, C * self.kernel_size * self.kernel_size, h * w)
        x = F.fold(x, output_size=(H, W), kernel_size=self.kernel_size, padding=self.padding, stride=self.stride)
        x = self.proj(x.permute(0, 2, 3, 1))
        return x0 + x.permute(0, 3, 1, 2)


@_reference("outlook")
def _outlook(m):
    return _copy(OutlookAttentionRef(m.channels, m.heads, m.kernel_size, m.kernel_size // 2, m.stride, m.qkv_bias,
                                     m.scale), m)

# ------------------------------------------------------------- CoTNet's contextual transformer (chapters/local/cot.md)
class CotLayerRef(nn.Module):
    """The official CoT block (JDAI-CV/CoTNet, ``models/cotnet.py``, class ``CotLayer``) in its
    layout and calls: ``key_embed``, ``torch.cat([x, k])``, ``embed`` (1×1, BN, ReLU, 1×1,
    GroupNorm), ``w.view(b, 1, -1, k*k, h, w)``, ``conv1x1``, the local aggregation, BN, swish, the
    radix-2 ``se`` on ``(B, C, 1, 1)`` (1×1 convolutions and ``BatchNorm2d``), ``view(B, C, radix)``,
    softmax, weighted sum. The local aggregation is the CuPy kernel of
    ``cupy_layers/aggregation_zeropad.py`` replaced by the unfold form that file's own test
    (``test_aggregation_zeropad``) checks it against: ``Unfold(x).view(n, c // c_w, c_w, k*k, h, w)``,
    ``(w.unsqueeze(2) * x2.unsqueeze(1)).sum(-3)``. The hard-coded numbers of the code (groups 4,
    share_planes 8, factor 2, reduction_factor 4, min 32) are the module's settings."""

    def __init__(self, dim: int, kernel_size: int, groups: int, share_planes: int, factor: int,
                 reduction_factor: int, min_dim: int) -> None:
        super().__init__()
        self.dim, self.kernel_size = dim, kernel_size
        self.key_embed = nn.Sequential(
            nn.Conv2d(dim, dim, kernel_size, stride=1, padding=kernel_size // 2, groups=groups, bias=False),
            nn.BatchNorm2d(dim),
            nn.ReLU(inplace=True),
        )
        self.embed = nn.Sequential(
            nn.Conv2d(2 * dim, dim // factor, 1, bias=False),
            nn.BatchNorm2d(dim // factor),
            nn.ReLU(inplace=True),
            nn.Conv2d(dim // factor, pow(kernel_size, 2) * dim // share_planes, kernel_size=1),
            nn.GroupNorm(num_groups=dim // share_planes, num_channels=pow(kernel_size, 2) * dim // share_planes),
        )
        self.conv1x1 = nn.Sequential(nn.Conv2d(dim, dim, kernel_size=1, bias=False), nn.BatchNorm2d(dim))
        self.unfold = nn.Unfold(kernel_size=kernel_size, dilation=1, padding=(kernel_size - 1) // 2, stride=1)
        self.bn = nn.BatchNorm2d(dim)
        self.act = nn.SiLU(inplace=True)
        self.radix = 2
        attn_chs = max(dim * self.radix // reduction_factor, min_dim)
        self.se = nn.Sequential(
            nn.Conv2d(dim, attn_chs, 1), nn.BatchNorm2d(attn_chs), nn.ReLU(inplace=True), nn.Conv2d(attn_chs, self.radix * dim, 1)
        )

    def local_conv(self, x, w):  # aggregation_zeropad, as the kernel file's test computes it
        n, c_x, h, w_ = x.shape
        c_w = w.shape[2]
        x2 = self.unfold(x).view(n, c_x // c_w, c_w, pow(self.kernel_size, 2), h, w_)
        return (w.unsqueeze(2) * x2.unsqueeze(1)).sum(-3).view(n, w.shape[1] * c_x, h, w_)

    def forward(self, x):
        k = self.key_embed(x)
        qk = torch.cat([x, k], dim=1)
        b, c, qk_hh, qk_ww = qk.size()
        w = self.embed(qk)
        w = w.view(b, 1, -1, self.kernel_size * self.kernel_size, qk_hh, qk_ww)
        x = self.conv1x1(x)
        x = self.local_conv(x, w)
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


@_reference("cot")
def _cot(m):
    ref = CotLayerRef(m.channels, m.kernel_size, m.groups, m.share_planes, m.factor, m.reduction, m.min_dim)
    return _copy(ref, m)  # same tensors in the same order (the fusion's Linear/BatchNorm1d as 1x1 conv/BatchNorm2d)

# ------------------------------------------------------------- HAT's HAB and OCAB (chapters/local/hat.md)
class HATChannelAttentionRef(nn.Module):
    """RCAN's channel attention as HAT writes it (XPixelGroup/HAT, ``hat/archs/hat_arch.py``,
    ``ChannelAttention``): AdaptiveAvgPool2d, 1x1 conv, ReLU, 1x1 conv, Sigmoid, ``x * y``."""

    def __init__(self, num_feat: int, squeezed: int) -> None:
        super().__init__()
        self.attention = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Conv2d(num_feat, squeezed, 1, padding=0), nn.ReLU(inplace=True),
            nn.Conv2d(squeezed, num_feat, 1, padding=0), nn.Sigmoid())

    def forward(self, x):
        y = self.attention(x)
        return x * y


class HABRef(nn.Module):
    """The attention half of HAT's HAB as the official code writes it (XPixelGroup/HAT,
    ``hat/archs/hat_arch.py``, ``HAB.forward`` without ``norm1`` and the MLP: ``shortcut +
    attn_x + conv_x * conv_scale``, with ``CAB`` as an ``nn.Sequential`` of conv 3x3, GELU, conv 3x3
    and ``ChannelAttention``). HAT's ``WindowAttention`` is Swin's, so its W-MSA (with the roll,
    partition, mask and reverse) is ``WindowAttentionRef`` above, which also pads to a multiple of M
    and masks the padding keys as the module does (HAT itself needs H, W divisible by M). The
    hidden widths are the module's (``C // β`` and ``C // γ`` floored at 1; HAT writes the
    divisions)."""

    def __init__(self, dim: int, window_size: int, num_heads: int, shift_size: int, conv_scale: float,
                 hidden: int, squeezed: int) -> None:
        super().__init__()
        self.conv_scale = conv_scale
        self.attn = WindowAttentionRef(dim, window_size, num_heads, shift_size, True)  # returns shortcut + attn_x
        self.conv_block = nn.Sequential(
            nn.Conv2d(dim, hidden, 3, 1, 1), nn.GELU(), nn.Conv2d(hidden, dim, 3, 1, 1),
            HATChannelAttentionRef(dim, squeezed))

    def forward(self, x):
        conv_x = self.conv_block(x)
        return self.attn(x) + conv_x * self.conv_scale


@_reference("hab")
def _hab(m):
    ref = HABRef(m.channels, m.window_size, m.heads, m.shift, m.alpha, m.cab.hidden, m.cab.squeezed)
    ref.attn = _window(m.attn)  # W-MSA: the window reference's own weight copy
    with torch.no_grad():
        for dst, src in [(ref.conv_block[0], m.cab.conv1), (ref.conv_block[2], m.cab.conv2),
                         (ref.conv_block[3].attention[1], m.cab.down), (ref.conv_block[3].attention[3], m.cab.up)]:
            dst.load_state_dict(src.state_dict())
    return ref


# HAT's window_partition and window_reverse are Swin's: _window_partition and _window_reverse above


def _hat_rpi_oca(window_size, overlap_ratio):
    """``HAT.calculate_rpi_oca`` (``hat/archs/hat_arch.py``), as written there (its negative
    entries index the table from its end)."""
    window_size_ori = window_size
    window_size_ext = window_size + int(overlap_ratio * window_size)
    coords_ori = torch.stack(torch.meshgrid([torch.arange(window_size_ori), torch.arange(window_size_ori)], indexing="ij"))
    coords_ori_flatten = torch.flatten(coords_ori, 1)
    coords_ext = torch.stack(torch.meshgrid([torch.arange(window_size_ext), torch.arange(window_size_ext)], indexing="ij"))
    coords_ext_flatten = torch.flatten(coords_ext, 1)
    relative_coords = coords_ext_flatten[:, None, :] - coords_ori_flatten[:, :, None]
    relative_coords = relative_coords.permute(1, 2, 0).contiguous()
    relative_coords[:, :, 0] += window_size_ori - window_size_ext + 1
    relative_coords[:, :, 1] += window_size_ori - window_size_ext + 1
    relative_coords[:, :, 0] *= window_size_ori + window_size_ext - 1
    return relative_coords.sum(-1)


class OCABRef(nn.Module):
    """HAT's OCAB as the official code writes it (XPixelGroup/HAT, ``hat/archs/hat_arch.py``,
    ``OCAB.forward`` without ``norm1`` and the MLP; its ``((M + M_o - 1)^2, heads)`` table read with
    ``HAT.calculate_rpi_oca``): qkv Linear on (b, h, w, c), ``permute(3, 0, 4, 1, 2)``, queries by
    ``window_partition``, keys and values by ``nn.Unfold(M_o, stride=M, padding=(M_o - M) // 2)``
    (its einops ``rearrange`` written as ``view`` and ``permute``), ``q * scale @ k^T`` + bias,
    softmax, ``@ v``, ``window_reverse``, proj, + shortcut; on (B, C, H, W). For sizes that M does
    not divide, the projected q, k, v are zero-padded at the bottom and right (the module's rule:
    every key outside the map is a zero key with a zero value, as the unfold's own padding)."""

    def __init__(self, dim: int, window_size: int, overlap_ratio: float, num_heads: int) -> None:
        super().__init__()
        self.dim, self.window_size, self.num_heads = dim, window_size, num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.overlap_win_size = int(window_size * overlap_ratio) + window_size
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.unfold = nn.Unfold(kernel_size=(self.overlap_win_size, self.overlap_win_size), stride=window_size,
                                padding=(self.overlap_win_size - window_size) // 2)
        self.relative_position_bias_table = nn.Parameter(
            torch.zeros((window_size + self.overlap_win_size - 1) * (window_size + self.overlap_win_size - 1), num_heads))
        self.register_buffer("rpi", _hat_rpi_oca(window_size, overlap_ratio), persistent=False)
        self.softmax = nn.Softmax(dim=-1)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        b, c, h0, w0 = x.shape
        shortcut = x
        ws = self.window_size
        qkv = self.qkv(x.permute(0, 2, 3, 1))  # b, h, w, 3c
        qkv = F.pad(qkv, (0, 0, 0, (ws - w0 % ws) % ws, 0, (ws - h0 % ws) % ws))  # zeros beyond the map
        h, w = qkv.shape[1], qkv.shape[2]
        qkv = qkv.reshape(b, h, w, 3, c).permute(3, 0, 4, 1, 2)  # 3, b, c, h, w
        q = qkv[0].permute(0, 2, 3, 1)  # b, h, w, c
        kv = torch.cat((qkv[1], qkv[2]), dim=1)  # b, 2*c, h, w
        q_windows = _window_partition(q, ws).view(-1, ws * ws, c)
        ow = self.overlap_win_size
        kv_windows = self.unfold(kv)  # b, 2*c*ow*ow, nw
        nw = kv_windows.shape[-1]
        kv_windows = kv_windows.view(b, 2, c, ow, ow, nw).permute(1, 0, 5, 3, 4, 2).reshape(2, b * nw, ow * ow, c)
        k_windows, v_windows = kv_windows[0], kv_windows[1]
        b_, nq, _ = q_windows.shape
        _, n, _ = k_windows.shape
        d = self.dim // self.num_heads
        q = q_windows.reshape(b_, nq, self.num_heads, d).permute(0, 2, 1, 3)
        k = k_windows.reshape(b_, n, self.num_heads, d).permute(0, 2, 1, 3)
        v = v_windows.reshape(b_, n, self.num_heads, d).permute(0, 2, 1, 3)
        q = q * self.scale
        attn = q @ k.transpose(-2, -1)
        relative_position_bias = self.relative_position_bias_table[self.rpi.view(-1)].view(ws * ws, ow * ow, -1)
        attn = attn + relative_position_bias.permute(2, 0, 1).contiguous().unsqueeze(0)
        attn = self.softmax(attn)
        attn_windows = (attn @ v).transpose(1, 2).reshape(b_, nq, self.dim)
        attn_windows = attn_windows.view(-1, ws, ws, self.dim)
        x = _window_reverse(attn_windows, ws, h, w)[:, :h0, :w0]  # b h w c, cropped
        x = self.proj(x)
        return x.permute(0, 3, 1, 2) + shortcut


@_reference("ocab")
def _ocab(m):
    _require(m, border="zeros")
    if (m.overlap_size - m.window_size) % 2:
        raise NotImplementedError(f"the reference for {type(m).__name__} needs an even M_o - M (the official unfold's "
                                  f"symmetric padding), got M = {m.window_size}, M_o = {m.overlap_size}")
    ref = OCABRef(m.channels, m.window_size, m.overlap_ratio, m.heads)
    side2 = (m.window_size + m.overlap_size - 1) ** 2
    with torch.no_grad():
        # each offset's entry: the module's table at its index, key - query; the official at its own index
        table = ref.relative_position_bias_table
        table[ref.rpi.reshape(-1) % side2] = m.relative_bias.flatten(1)[:, m.relative_index.reshape(-1)].t().to(table.dtype)
        ref.qkv.load_state_dict(m.qkv.state_dict())
        ref.proj.load_state_dict(m.proj.state_dict())
    return ref

# ------------------------------------------------------------- RMT's Manhattan self-attention (chapters/local/rmt.md)
class MaSARef(nn.Module):
    """RMT's Manhattan self-attention as the official code writes it (qhfan/RMT,
    ``classfication_release/RMT.py``): ``RetNetRelPos2d`` (the per-head log γ, the sin/cos of the
    raster index, the 2-D decay mask ``generate_2d_decay`` or the two 1-D masks
    ``generate_1d_decay``) and ``VisionRetentionAll.forward`` (or, decomposed,
    ``VisionRetentionChunk.forward``): separate q/k/v Linears on (B, H, W, C), the 5 x 5
    ``DWConv2d`` on v, k scaled by d^-0.5, ``theta_shift`` on q and k, logits + mask, softmax,
    matmul, + lepe, out_proj. As a plug-in: the input permuted to (B, H, W, C) and back, plus the
    residual. The masks and sin/cos are rebuilt at every call, as ``BasicLayer.forward`` does once
    per stage."""

    def __init__(self, channels: int, heads: int, init_value: float, heads_range: float, chunk: bool) -> None:
        super().__init__()
        self.num_heads, self.chunk = heads, chunk
        self.key_dim = channels // heads
        self.scaling = self.key_dim ** -0.5
        self.q_proj = nn.Linear(channels, channels)
        self.k_proj = nn.Linear(channels, channels)
        self.v_proj = nn.Linear(channels, channels)
        self.lepe = nn.Conv2d(channels, channels, 5, 1, 2, groups=channels)
        self.out_proj = nn.Linear(channels, channels)
        angle = 1.0 / (10000 ** torch.linspace(0, 1, channels // heads // 2))
        self.register_buffer("angle", angle.unsqueeze(-1).repeat(1, 2).flatten(), persistent=False)
        decay = torch.log(1 - 2 ** (-init_value - heads_range * torch.arange(heads, dtype=torch.float) / heads))
        self.register_buffer("decay", decay, persistent=False)

    @staticmethod
    def _rotate_every_two(x):
        x1 = x[:, :, :, :, ::2]
        x2 = x[:, :, :, :, 1::2]
        return torch.stack([-x2, x1], dim=-1).flatten(-2)

    def _theta_shift(self, x, sin, cos):
        return (x * cos) + (self._rotate_every_two(x) * sin)

    def _decay_1d(self, n):
        index = torch.arange(n).to(self.decay)
        return (index[:, None] - index[None, :]).abs() * self.decay[:, None, None]

    def _decay_2d(self, h, w):
        grid = torch.meshgrid([torch.arange(h).to(self.decay), torch.arange(w).to(self.decay)], indexing="ij")
        grid = torch.stack(grid, dim=-1).reshape(h * w, 2)
        mask = (grid[:, None, :] - grid[None, :, :]).abs().sum(dim=-1)
        return mask * self.decay[:, None, None]

    def forward(self, inp):
        x = inp.permute(0, 2, 3, 1)
        bsz, h, w, _ = x.size()
        index = torch.arange(h * w).to(self.decay)
        sin = torch.sin(index[:, None] * self.angle[None, :]).reshape(h, w, -1)
        cos = torch.cos(index[:, None] * self.angle[None, :]).reshape(h, w, -1)
        q = self.q_proj(x)
        k = self.k_proj(x)
        v = self.v_proj(x)
        lepe = self.lepe(v.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        k = k * self.scaling
        q = q.view(bsz, h, w, self.num_heads, self.key_dim).permute(0, 3, 1, 2, 4)
        k = k.view(bsz, h, w, self.num_heads, self.key_dim).permute(0, 3, 1, 2, 4)
        qr = self._theta_shift(q, sin, cos)
        kr = self._theta_shift(k, sin, cos)
        if self.chunk:
            qr_w, kr_w = qr.transpose(1, 2), kr.transpose(1, 2)
            v = v.reshape(bsz, h, w, self.num_heads, -1).permute(0, 1, 3, 2, 4)
            qk_mat_w = torch.softmax(qr_w @ kr_w.transpose(-1, -2) + self._decay_1d(w), -1)
            v = torch.matmul(qk_mat_w, v)
            qr_h, kr_h = qr.permute(0, 3, 1, 2, 4), kr.permute(0, 3, 1, 2, 4)
            v = v.permute(0, 3, 2, 1, 4)
            qk_mat_h = torch.softmax(qr_h @ kr_h.transpose(-1, -2) + self._decay_1d(h), -1)
            output = torch.matmul(qk_mat_h, v).permute(0, 3, 1, 2, 4).flatten(-2, -1)
        else:
            qr, kr = qr.flatten(2, 3), kr.flatten(2, 3)
            vr = v.reshape(bsz, h, w, self.num_heads, -1).permute(0, 3, 1, 2, 4).flatten(2, 3)
            qk_mat = torch.softmax(qr @ kr.transpose(-1, -2) + self._decay_2d(h, w), -1)
            output = torch.matmul(qk_mat, vr).transpose(1, 2).reshape(bsz, h, w, -1)
        output = self.out_proj(output + lepe)
        return inp + output.permute(0, 3, 1, 2)


@_reference("masa")
def _masa(m):
    _require(m, decay="logits", lepe_kernel=5, theta_shift=True)
    c = m.channels
    ref = MaSARef(c, m.heads, m.init_value, m.heads_range, m.decomposed)
    with torch.no_grad():
        for lin, w, b in zip((ref.q_proj, ref.k_proj, ref.v_proj), m.qkv.weight.split(c), m.qkv.bias.split(c)):
            lin.weight.copy_(w)
            lin.bias.copy_(b)
        ref.lepe.load_state_dict(m.lepe.state_dict())
        ref.out_proj.load_state_dict(m.proj.state_dict())
    return ref
