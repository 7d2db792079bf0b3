"""HAT's hybrid attention (HAB's attention half: W-MSA + α·CAB) and overlapping cross-attention
(OCAB): equal to the official code re-typed (copied weights, float64), to per-query derivations of
the definitions, their parameter formulas, defaults, input checks, gradients, and the key
property: which input pixels an output position can see."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange
from torch.export import Dim

from attncourse import count_parameters
from attncourse.local.hat import (
    ChannelAttentionBlock,
    HybridAttentionBlock2d,
    OverlappingCrossAttention2d,
    ocab_relative_index,
)
from attncourse.local.window import WindowAttention2d

from module_checks import randomised
from test_window import official_window_partition, official_window_reverse


# ------------------------------------------------------- the official code, re-typed for the test
# XPixelGroup/HAT @ 1638a9a, hat/archs/hat_arch.py: ChannelAttention and CAB (as one function on
# the module's convolutions), window_partition, window_reverse, WindowAttention.forward,
# HAB.forward without norm1, the MLP and drop_path, OCAB.forward without norm1 and the MLP, and
# HAT.calculate_rpi_sa / calculate_rpi_oca / calculate_mask (window_partition and window_reverse are
# Swin's, imported from test_window); on (B, H, W, C) maps instead of
# (B, H*W, C) tokens with x_size. torch.meshgrid gets indexing="ij" (its old default).

def official_rpi_sa(window_size):
    coords = torch.stack(torch.meshgrid([torch.arange(window_size), torch.arange(window_size)], indexing="ij"))
    coords_flatten = torch.flatten(coords, 1)
    relative_coords = coords_flatten[:, :, None] - coords_flatten[:, None, :]
    relative_coords = relative_coords.permute(1, 2, 0).contiguous()
    relative_coords[:, :, 0] += window_size - 1
    relative_coords[:, :, 1] += window_size - 1
    relative_coords[:, :, 0] *= 2 * window_size - 1
    return relative_coords.sum(-1)


def official_rpi_oca(window_size, overlap_ratio):
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


def official_mask(h, w, window_size, shift_size):
    img_mask = torch.zeros((1, h, w, 1))
    slices = (slice(0, -window_size), slice(-window_size, -shift_size), slice(-shift_size, None))
    cnt = 0
    for hs in slices:
        for ws in slices:
            img_mask[:, hs, ws, :] = cnt
            cnt += 1
    mask_windows = official_window_partition(img_mask, window_size).view(-1, window_size * window_size)
    attn_mask = mask_windows.unsqueeze(1) - mask_windows.unsqueeze(2)
    return attn_mask.masked_fill(attn_mask != 0, float(-100.0)).masked_fill(attn_mask == 0, float(0.0))


def official_cab(x, conv1, conv2, down, up):
    """CAB.forward: conv 3x3, GELU, conv 3x3, ChannelAttention (pool, conv, ReLU, conv, sigmoid, x * y)."""
    u = conv2(F.gelu(conv1(x)))
    y = torch.sigmoid(up(F.relu(down(F.adaptive_avg_pool2d(u, 1)))))
    return u * y


def official_window_attention(x, qkv, proj, table, num_heads, window_size, rpi, mask=None):
    b_, n, c = x.shape
    qkv_ = qkv(x).reshape(b_, n, 3, num_heads, c // num_heads).permute(2, 0, 3, 1, 4)
    q, k, v = qkv_[0], qkv_[1], qkv_[2]
    q = q * (c // num_heads) ** -0.5
    attn = q @ k.transpose(-2, -1)
    bias = table[rpi.view(-1)].view(window_size * window_size, window_size * window_size, -1)
    attn = attn + bias.permute(2, 0, 1).contiguous().unsqueeze(0)
    if mask is not None:
        nw = mask.shape[0]
        attn = attn.view(b_ // nw, nw, num_heads, n, n) + mask.unsqueeze(1).unsqueeze(0)
        attn = attn.view(-1, num_heads, n, n)
    attn = attn.softmax(-1)
    return proj((attn @ v).transpose(1, 2).reshape(b_, n, c))


def official_hab_attention(x, m, table):
    """HAB.forward up to ``x = shortcut + attn_x + conv_x * conv_scale`` (no norm1, no MLP); x: (B, H, W, C)."""
    b, h, w, c = x.shape
    ws, s = m.window_size, m.shift
    shortcut = x
    conv_x = official_cab(x.permute(0, 3, 1, 2), m.cab.conv1, m.cab.conv2, m.cab.down, m.cab.up).permute(0, 2, 3, 1)
    shifted_x = torch.roll(x, shifts=(-s, -s), dims=(1, 2)) if s > 0 else x
    attn_mask = official_mask(h, w, ws, s).to(x.dtype) if s > 0 else None
    x_windows = official_window_partition(shifted_x, ws).view(-1, ws * ws, c)
    attn_windows = official_window_attention(x_windows, m.attn.qkv, m.attn.proj, table, m.heads, ws, official_rpi_sa(ws), attn_mask)
    shifted_x = official_window_reverse(attn_windows.view(-1, ws, ws, c), ws, h, w)
    attn_x = torch.roll(shifted_x, shifts=(s, s), dims=(1, 2)) if s > 0 else shifted_x
    return shortcut + attn_x + conv_x * m.alpha


def official_ocab(x, qkv_layer, proj, table, num_heads, window_size, overlap_ratio):
    """OCAB.forward without norm1 and the MLP; x: (B, H, W, C)."""
    b, h, w, c = x.shape
    overlap_win_size = int(window_size * overlap_ratio) + window_size
    unfold = nn.Unfold(kernel_size=(overlap_win_size, overlap_win_size), stride=window_size,
                       padding=(overlap_win_size - window_size) // 2)
    shortcut = x
    qkv = qkv_layer(x).reshape(b, h, w, 3, c).permute(3, 0, 4, 1, 2)
    q = qkv[0].permute(0, 2, 3, 1)
    kv = torch.cat((qkv[1], qkv[2]), dim=1)
    q_windows = official_window_partition(q, window_size).view(-1, window_size * window_size, c)
    kv_windows = unfold(kv)
    kv_windows = rearrange(kv_windows, "b (nc ch owh oww) nw -> nc (b nw) (owh oww) ch", nc=2, ch=c,
                           owh=overlap_win_size, oww=overlap_win_size).contiguous()
    k_windows, v_windows = kv_windows[0], kv_windows[1]
    b_, nq, _ = q_windows.shape
    _, n, _ = k_windows.shape
    d = c // num_heads
    q = q_windows.reshape(b_, nq, num_heads, d).permute(0, 2, 1, 3)
    k = k_windows.reshape(b_, n, num_heads, d).permute(0, 2, 1, 3)
    v = v_windows.reshape(b_, n, num_heads, d).permute(0, 2, 1, 3)
    q = q * d ** -0.5
    attn = q @ k.transpose(-2, -1)
    rpi = official_rpi_oca(window_size, overlap_ratio)
    bias = table[rpi.view(-1)].view(window_size * window_size, overlap_win_size * overlap_win_size, -1)
    attn = attn + bias.permute(2, 0, 1).contiguous().unsqueeze(0)
    attn = attn.softmax(-1)
    attn_windows = (attn @ v).transpose(1, 2).reshape(b_, nq, c)
    attn_windows = attn_windows.view(-1, window_size, window_size, c)
    x = official_window_reverse(attn_windows, window_size, h, w)
    return proj(x) + shortcut


def to_official_sa_table(m):
    """WindowAttention2d's (heads, 2M-1, 2M-1) table (key - query) as the official ((2M-1)^2, heads) (query - key)."""
    return rearrange(m.relative_bias.detach().flip(1, 2), "h a b -> (a b) h")


def to_official_oca_table(m):
    """OCAB's (heads, L, L) table (key - query) as the official (L^2, heads) read by calculate_rpi_oca:
    every (query, key) pair writes its offset's value where the official index looks it up."""
    side2 = (m.window_size + m.overlap_size - 1) ** 2
    table = torch.zeros(side2, m.heads, dtype=m.relative_bias.dtype)
    rpi = official_rpi_oca(m.window_size, m.overlap_ratio).reshape(-1) % side2
    table[rpi] = m.relative_bias.detach().flatten(1)[:, m.relative_index.reshape(-1)].t()
    return table


@pytest.mark.parametrize("shift", [0, 2])
@pytest.mark.parametrize("heads", [1, 2])
def test_hab_equals_the_official_code_with_copied_weights(shift, heads):
    m = randomised(HybridAttentionBlock2d(12, window_size=4, heads=heads, shift=shift, alpha=0.3,
                                          compress_ratio=3, squeeze_factor=4), std=0.4)
    x = torch.randn(2, 12, 8, 12, dtype=torch.float64)  # 2 x 3 windows, H != W
    want = official_hab_attention(rearrange(x, "b c h w -> b h w c"), m, to_official_sa_table(m.attn))
    torch.testing.assert_close(m(x), rearrange(want, "b h w c -> b c h w"))
    # the re-typed code can fail: α on the wrong branch
    m2 = HybridAttentionBlock2d(12, window_size=4, heads=heads, shift=shift, alpha=1.0, compress_ratio=3,
                                squeeze_factor=4).double()
    m2.load_state_dict(m.state_dict())
    assert not torch.allclose(m2(x), m(x))


@pytest.mark.parametrize("window_size, overlap_ratio, heads, size", [
    (4, 0.5, 1, (8, 12)), (4, 0.5, 2, (12, 8)), (8, 0.5, 2, (16, 8)), (4, 1.0, 2, (8, 8)), (3, 0.0, 1, (6, 9))])
def test_ocab_equals_the_official_code_with_copied_weights(window_size, overlap_ratio, heads, size):
    m = randomised(OverlappingCrossAttention2d(8, window_size=window_size, overlap_ratio=overlap_ratio, heads=heads),
                   std=0.5)
    x = torch.randn(2, 8, *size, dtype=torch.float64)
    want = official_ocab(rearrange(x, "b c h w -> b h w c"), m.qkv, m.proj, to_official_oca_table(m), heads,
                         window_size, overlap_ratio)
    torch.testing.assert_close(m(x), rearrange(want, "b h w c -> b c h w"))
    # the re-typed code can fail: the module's table read with the official index as it is
    wrong = rearrange(m.relative_bias.detach(), "h a b -> (a b) h")
    bad = official_ocab(rearrange(x, "b c h w -> b h w c"), m.qkv, m.proj, wrong, heads, window_size, overlap_ratio)
    assert not torch.allclose(m(x), rearrange(bad, "b h w c -> b c h w"))


def test_the_official_oca_index_wraps_round_but_gives_each_offset_its_entry():
    """calculate_rpi_oca shifts by M - M_o + 1 instead of M - 1: at HAT's M = 16, M_o = 24 its entries
    run from -880 to 640 in a table of 39² = 1521, the negative ones read from the table's end. Still one
    entry per offset (key - query), and no two offsets share one: a relabelling of the course's index."""
    m, mo = 16, 24
    rpi = official_rpi_oca(m, 0.5)
    assert (rpi.min().item(), rpi.max().item()) == ((2 - mo) * (m + mo), m * (m + mo))  # -880, 640
    side2 = (m + mo - 1) ** 2
    ours = ocab_relative_index(m, mo)
    assert ours.min().item() == 0 and ours.max().item() == side2 - 1
    pairs = set(zip((rpi % side2).reshape(-1).tolist(), ours.reshape(-1).tolist()))
    assert len(pairs) == side2 and len({a for a, _ in pairs}) == side2  # a bijection between the two labellings


def test_the_official_unfold_fails_on_an_odd_overlap_which_the_module_handles():
    """M = 6, λ = 0.5: M_o = 9, the unfold's padding (9 - 6) // 2 = 1 gives one window too few per axis."""
    m = randomised(OverlappingCrossAttention2d(8, window_size=6, heads=2), std=0.5)
    assert (m.overlap_size, m.pad) == (9, 1)
    x = torch.randn(1, 8, 12, 12, dtype=torch.float64)
    with pytest.raises(RuntimeError):
        official_ocab(rearrange(x, "b c h w -> b h w c"), m.qkv, m.proj, to_official_oca_table(m), 2, 6, 0.5)
    torch.testing.assert_close(m(x), naive_ocab(m, x)[0])


def test_ocab_without_overlap_and_with_masked_borders_is_window_attention():
    """λ = 0 (M_o = M, p = 0) with border="masked": each window attends to itself, padding keys left
    out, and the (2M - 1)^2 table is read at key - query, as WindowAttention2d (shift 0) does."""
    ocab = randomised(OverlappingCrossAttention2d(8, window_size=3, overlap_ratio=0.0, heads=2, border="masked"), std=0.5)
    window = WindowAttention2d(8, window_size=3, heads=2).double()
    window.load_state_dict({"qkv.weight": ocab.qkv.weight, "qkv.bias": ocab.qkv.bias, "proj.weight": ocab.proj.weight,
                            "proj.bias": ocab.proj.bias, "relative_bias": ocab.relative_bias})
    for size in [(6, 9), (7, 5), (2, 2)]:
        x = torch.randn(2, 8, *size, dtype=torch.float64)
        torch.testing.assert_close(ocab(x), window(x))


# ------------------------------------------------------- the definitions, one query at a time

def naive_ocab(m, x):
    """For each query (y, x) in window (i, j) = (y // M, x // M): its keys are the M_o x M_o positions
    from (iM - p, jM - p); one outside the map is a zero key with a zero value (border "zeros") or is
    left out ("masked"); logit q.k / sqrt(d) + B[key - query]; softmax; weighted values; W^O; residual.
    Returns the output and the weights (B, heads, H*W, M_o^2), keys in (o1 o2) order."""
    B, C, H, W = x.shape
    M, Mo, p, heads, d = m.window_size, m.overlap_size, m.pad, m.heads, m.head_dim
    wq, wk, wv = m.qkv.weight.detach().split(C)
    bq, bk, bv = m.qkv.bias.detach().split(C)
    table = m.relative_bias.detach()
    out = x.clone()
    weights = torch.zeros(B, heads, H * W, Mo * Mo, dtype=x.dtype)
    for b in range(B):
        for y in range(H):
            for xx in range(W):
                i, j = y // M, xx // M
                t = x[b, :, y, xx]
                heads_out = []
                for h in range(heads):
                    sl = slice(h * d, (h + 1) * d)
                    q = wq[sl] @ t + bq[sl]
                    logits, vals, slots = [], [], []
                    for a in range(Mo):
                        for c in range(Mo):
                            ky, kx = i * M - p + a, j * M - p + c
                            inside = 0 <= ky < H and 0 <= kx < W
                            if not inside and m.border == "masked":
                                continue
                            tk = x[b, :, ky, kx] if inside else None
                            k = wk[sl] @ tk + bk[sl] if inside else torch.zeros(d, dtype=x.dtype)
                            v = wv[sl] @ tk + bv[sl] if inside else torch.zeros(d, dtype=x.dtype)
                            dy, dx = ky - y, kx - xx
                            logits.append(q @ k / math.sqrt(d) + table[h, dy + p + M - 1, dx + p + M - 1])
                            vals.append(v)
                            slots.append(a * Mo + c)
                    a_ = torch.softmax(torch.stack(logits), 0)
                    weights[b, h, y * W + xx, slots] = a_
                    heads_out.append((a_[:, None] * torch.stack(vals)).sum(0))
                out[b, :, y, xx] += m.proj(torch.cat(heads_out)[None])[0].detach()
    return out, weights


@pytest.mark.parametrize("size, window_size, overlap_ratio, border", [
    ((8, 8), 4, 0.5, "zeros"), ((7, 6), 4, 0.5, "zeros"), ((7, 6), 4, 0.5, "masked"), ((5, 9), 3, 0.5, "zeros"),
    ((3, 2), 4, 0.5, "zeros"), ((3, 2), 4, 0.5, "masked"), ((6, 7), 2, 1.0, "masked"), ((4, 5), 1, 2.0, "zeros")])
def test_ocab_equals_the_definition_one_query_at_a_time(size, window_size, overlap_ratio, border):
    m = randomised(OverlappingCrossAttention2d(8, window_size=window_size, overlap_ratio=overlap_ratio, heads=2,
                                               border=border), std=0.5)
    x = torch.randn(2, 8, *size, dtype=torch.float64)
    out, weights = naive_ocab(m, x)
    torch.testing.assert_close(m(x), out)
    a = m.attention(x)
    torch.testing.assert_close(a, weights, atol=1e-12, rtol=0)  # masked keys keep e^-100 of a weight
    torch.testing.assert_close(a.sum(-1), torch.ones_like(a[..., 0]))


def naive_cab(cab, x):
    """CAB from its equations: each 3x3 convolution as a sum over its nine taps of the zero-padded map."""
    def conv3(conv, z):
        zp = F.pad(z, (1, 1, 1, 1))
        out = conv.bias.detach()[None, :, None, None].expand(z.shape[0], -1, z.shape[2], z.shape[3]).clone()
        for dy in range(3):
            for dx in range(3):
                tap = zp[:, :, dy:dy + z.shape[2], dx:dx + z.shape[3]]
                out = out + torch.einsum("oc,bchw->bohw", conv.weight.detach()[:, :, dy, dx], tap)
        return out

    u = conv3(cab.conv2, F.gelu(conv3(cab.conv1, x)))
    z = u.mean(dim=(2, 3))  # GAP: (B, C)
    s = torch.sigmoid(F.relu(z @ cab.down.weight.detach()[:, :, 0, 0].T + cab.down.bias.detach())
                      @ cab.up.weight.detach()[:, :, 0, 0].T + cab.up.bias.detach())
    return u * s[:, :, None, None]


@pytest.mark.parametrize("size, shift", [((8, 8), 0), ((7, 6), 2), ((3, 5), 1)])
def test_hab_is_window_attention_plus_alpha_cab(size, shift):
    m = randomised(HybridAttentionBlock2d(6, window_size=4, heads=2, shift=shift, compress_ratio=3, squeeze_factor=3,
                                          alpha=0.5), std=0.5)
    x = torch.randn(2, 6, *size, dtype=torch.float64)
    torch.testing.assert_close(m.cab(x), naive_cab(m.cab, x))
    window = WindowAttention2d(6, window_size=4, heads=2, shift=shift).double()
    window.load_state_dict(m.attn.state_dict())
    torch.testing.assert_close(m(x), window(x) + 0.5 * naive_cab(m.cab, x))
    torch.testing.assert_close(m.attention(x), window.attention(x))


# ------------------------------------------------------- what an output position can see

def _support(module, x, y0, x0):
    """The input pixels whose gradient reaches output position (y0, x0), as a set of (row, col)."""
    x = x.clone().requires_grad_(True)
    module(x)[0, :, y0, x0].sum().backward()
    return {tuple(p) for p in (x.grad[0].abs().sum(0) > 1e-30).nonzero().tolist()}


def test_ocab_sees_its_overlapping_window_and_window_attention_only_its_own():
    """At M = 4, λ = 0.5 (M_o = 6, p = 1) on 12 x 12, the query (5, 6) is in window (1, 1): W-MSA reads
    rows and columns 4..7, OCAB rows and columns 3..8, across the borders of the neighbouring windows."""
    x = torch.randn(1, 8, 12, 12, dtype=torch.float64)
    window = randomised(WindowAttention2d(8, window_size=4, heads=2), std=0.5)
    ocab = randomised(OverlappingCrossAttention2d(8, window_size=4, heads=2), std=0.5)
    assert _support(window, x, 5, 6) == {(r, c) for r in range(4, 8) for c in range(4, 8)}
    assert _support(ocab, x, 5, 6) == {(r, c) for r in range(3, 9) for c in range(3, 9)}
    # at the corner, the key window is cut by the map: rows and columns 0..4 of it exist
    assert _support(ocab, x, 0, 0) == {(r, c) for r in range(5) for c in range(5)}


def test_hab_sees_the_whole_map_through_cab_s_pooling():
    """CAB's global average pooling makes every output position depend on every pixel (weakly, through α)."""
    m = randomised(HybridAttentionBlock2d(6, window_size=4, heads=2, compress_ratio=3, squeeze_factor=3), std=0.5)
    x = torch.randn(1, 6, 8, 8, dtype=torch.float64)
    assert len(_support(m, x, 1, 1)) == 64
    m.alpha = 0.0
    assert _support(m, x, 1, 1) == {(r, c) for r in range(4) for c in range(4)}  # W-MSA alone: its window


def test_zero_keys_take_part_at_the_border_and_the_border_option_leaves_them_out():
    """border="zeros" (official): keys outside the map get weight; "masked": none. Interior windows agree."""
    zeros = randomised(OverlappingCrossAttention2d(8, window_size=4, heads=2), std=0.5)
    masked = OverlappingCrossAttention2d(8, window_size=4, heads=2, border="masked").double()
    masked.load_state_dict(zeros.state_dict())
    x = torch.randn(2, 8, 12, 12, dtype=torch.float64)
    outside = torch.ones(6, 6, dtype=torch.bool)
    outside[1:, 1:] = False  # the key window of window (0, 0): its first row and column lie outside
    corner = zeros.attention(x)[:, :, 0].reshape(2, 2, 6, 6)
    assert (corner[..., outside] > 1e-3).all()  # a zero key's logit is its bias alone: it takes weight
    assert (masked.attention(x)[:, :, 0].reshape(2, 2, 6, 6)[..., outside] < 1e-40).all()
    torch.testing.assert_close(zeros(x)[:, :, 4:8, 4:8], masked(x)[:, :, 4:8, 4:8])  # window (1, 1): all keys inside
    assert not torch.allclose(zeros(x)[:, :, :4, :4], masked(x)[:, :, :4, :4])


# ------------------------------------------------------- parameters, defaults, checks

@pytest.mark.parametrize("c, beta, gamma", [(180, 3, 30), (64, 3, 30), (32, 3, 30), (16, 3, 30), (2, 3, 30)])
def test_cab_parameters(c, beta, gamma):
    cb, cg = max(1, c // beta), max(1, c // gamma)
    assert count_parameters(ChannelAttentionBlock(c, compress_ratio=beta, squeeze_factor=gamma)) == (
        18 * c * cb + 2 * c * cg + cb + cg + 2 * c)
    if c % beta == 0 and c % gamma == 0:  # the paper's formula, with its fractions
        assert count_parameters(ChannelAttentionBlock(c)) == 18 * c * c / beta + 2 * c * c / gamma + c / beta + c / gamma + 2 * c


@pytest.mark.parametrize("c, m, heads", [(96, 8, None), (64, 7, 4), (180, 16, 6)])
def test_hab_and_ocab_parameters(c, m, heads):
    h = heads or c // 32
    cb, cg = max(1, c // 3), max(1, c // 30)
    assert count_parameters(HybridAttentionBlock2d(c, window_size=m, heads=heads)) == (
        4 * c * c + 4 * c + h * (2 * m - 1) ** 2 + 18 * c * cb + 2 * c * cg + cb + cg + 2 * c)
    mo = m + int(0.5 * m)
    assert count_parameters(OverlappingCrossAttention2d(c, window_size=m, heads=heads)) == (
        4 * c * c + 4 * c + h * (m + mo - 1) ** 2)


def test_defaults_and_identity_start():
    hab, ocab = HybridAttentionBlock2d(64), OverlappingCrossAttention2d(64)
    assert (hab.window_size, hab.heads, hab.shift, hab.alpha) == (8, 2, 0, 0.01)
    assert (hab.cab.compress_ratio, hab.cab.squeeze_factor, hab.cab.hidden, hab.cab.squeezed) == (3, 30, 21, 2)
    assert (ocab.window_size, ocab.overlap_ratio, ocab.overlap_size, ocab.pad, ocab.heads, ocab.border) == (
        8, 0.5, 12, 2, 2, "zeros")
    assert ocab.relative_bias.shape == (2, 19, 19) and 0.015 < ocab.relative_bias.std().item() < 0.025
    assert HybridAttentionBlock2d(32).cab.squeezed == 1  # 32 // 30
    x = torch.randn(2, 64, 9, 10)
    assert torch.equal(hab(x), x) and torch.equal(ocab(x), x)
    assert not torch.allclose(HybridAttentionBlock2d(64, identity_init=False)(x), x)
    assert not torch.allclose(OverlappingCrossAttention2d(64, identity_init=False)(x), x)


@pytest.mark.parametrize("cls, kwargs, words", [
    (HybridAttentionBlock2d, dict(channels=48), ["HybridAttentionBlock2d", "32", "heads"]),
    (HybridAttentionBlock2d, dict(channels=32, heads=3), ["HybridAttentionBlock2d", "heads"]),
    (HybridAttentionBlock2d, dict(channels=32, shift=8), ["HybridAttentionBlock2d", "shift"]),
    (HybridAttentionBlock2d, dict(channels=32, alpha=-0.1), ["HybridAttentionBlock2d", "alpha"]),
    (HybridAttentionBlock2d, dict(channels=32, alpha=float("nan")), ["HybridAttentionBlock2d", "alpha"]),
    (HybridAttentionBlock2d, dict(channels=32, alpha=True), ["HybridAttentionBlock2d", "alpha"]),
    (HybridAttentionBlock2d, dict(channels=32, compress_ratio=0), ["ChannelAttentionBlock", "compress_ratio"]),
    (HybridAttentionBlock2d, dict(channels=32, squeeze_factor=2.5), ["ChannelAttentionBlock", "squeeze_factor"]),
    (HybridAttentionBlock2d, dict(channels=32, window_size=0), ["HybridAttentionBlock2d", "window_size"]),
    (HybridAttentionBlock2d, dict(channels=32, identity_init="yes"), ["HybridAttentionBlock2d", "identity_init"]),
    (OverlappingCrossAttention2d, dict(channels=40), ["OverlappingCrossAttention2d", "32", "heads"]),
    (OverlappingCrossAttention2d, dict(channels=32, heads=5), ["OverlappingCrossAttention2d", "heads"]),
    (OverlappingCrossAttention2d, dict(channels=32, overlap_ratio=-0.5), ["OverlappingCrossAttention2d", "overlap_ratio"]),
    (OverlappingCrossAttention2d, dict(channels=32, overlap_ratio="0.5"), ["OverlappingCrossAttention2d", "overlap_ratio"]),
    (OverlappingCrossAttention2d, dict(channels=32, border="reflect"), ["OverlappingCrossAttention2d", "border"]),
    (OverlappingCrossAttention2d, dict(channels=32, window_size=-2), ["OverlappingCrossAttention2d", "window_size"]),
])
def test_impossible_hyperparameters(cls, kwargs, words):
    with pytest.raises(ValueError) as info:
        cls(**kwargs)
    assert all(w in str(info.value) for w in words), str(info.value)


@pytest.mark.parametrize("cls", [HybridAttentionBlock2d, OverlappingCrossAttention2d])
@pytest.mark.parametrize("bad", [torch.randn(2, 32, 8), torch.randn(2, 16, 8, 8), torch.ones(1, 32, 4, 4, dtype=torch.long)])
def test_bad_input_is_named(cls, bad):
    with pytest.raises(ValueError, match=cls.__name__):
        cls(32)(bad)
    if cls is OverlappingCrossAttention2d:
        with pytest.raises(ValueError, match=cls.__name__):
            cls(32).attention(bad)


def test_gradcheck_on_a_tiny_input():
    hab = randomised(HybridAttentionBlock2d(4, window_size=2, heads=2, shift=1, compress_ratio=2, squeeze_factor=2), std=0.5)
    ocab = randomised(OverlappingCrossAttention2d(4, window_size=2, heads=2), std=0.5)
    for m in (hab, ocab):
        x = torch.randn(1, 4, 3, 4, dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradcheck(m, (x,))


def test_ocab_exports_with_a_dynamic_size_even_with_one_window():
    """The exported program is right on maps of one window (where forward computes a dropped second
    window), of several, and on sizes that M does not divide."""
    m = randomised(OverlappingCrossAttention2d(32, window_size=4, heads=2, border="masked"), std=0.2).float().eval()
    dims = {"x": {0: Dim("b", min=1), 2: Dim("h", min=1), 3: Dim("w", min=1)}}
    program = torch.export.export(m, (torch.randn(2, 32, 6, 5),), dynamic_shapes=dims).module()
    for shape in [(1, 32, 1, 1), (3, 32, 4, 4), (2, 32, 3, 9), (1, 32, 13, 8)]:
        x = torch.randn(shape)
        torch.testing.assert_close(program(x), m(x))


def test_hab_still_needs_its_static_size_for_export():
    """HAB declares H and W static because WindowAttention2d does not export with them dynamic. When
    this test fails, WindowAttention2d exports: remove HybridAttentionBlock2d.export_static_dims."""
    m = HybridAttentionBlock2d(32, window_size=4).eval()
    dims = {"x": {0: Dim("b", min=1), 2: Dim("h", min=1), 3: Dim("w", min=1)}}
    with pytest.raises(Exception, match="Constraints violated"):
        torch.export.export(m, (torch.randn(2, 32, 6, 5),), dynamic_shapes=dims)
