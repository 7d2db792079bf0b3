"""Window attention (Swin): equal to the official code re-typed, to a per-query derivation of the
definition (windows, shift, regions, padding), its weights through the gate, and its input checks.
The module contract and the deploy contract (H, W exported static, as declared) are checked for
every registered module in test_contract.py and test_deploy.py."""

from __future__ import annotations

import math

import pytest
import torch
from einops import rearrange

from attncourse.local.window import WindowAttention2d

from module_checks import randomised


# ------------------------------------------------------- the official code, re-typed for the test
# microsoft/Swin-Transformer, models/swin_transformer.py: window_partition, window_reverse,
# WindowAttention.forward and the attention half of SwinTransformerBlock (its __init__'s mask and
# forward's roll/partition/reverse), without norm1, the MLP and dropout; on (B, H, W, C).

def official_window_partition(x, ws):
    B, H, W, C = x.shape
    x = x.view(B, H // ws, ws, W // ws, ws, C)
    return x.permute(0, 1, 3, 2, 4, 5).contiguous().view(-1, ws, ws, C)


def official_window_reverse(windows, ws, H, W):
    B = int(windows.shape[0] / (H * W / ws / ws))
    x = windows.view(B, H // ws, W // ws, ws, ws, -1)
    return x.permute(0, 1, 3, 2, 4, 5).contiguous().view(B, H, W, -1)


def official_index(ws):
    coords = torch.stack(torch.meshgrid([torch.arange(ws), torch.arange(ws)], indexing="ij"))
    flat = torch.flatten(coords, 1)
    rel = (flat[:, :, None] - flat[:, None, :]).permute(1, 2, 0).contiguous()
    rel[:, :, 0] += ws - 1
    rel[:, :, 1] += ws - 1
    rel[:, :, 0] *= 2 * ws - 1
    return rel.sum(-1)


def official_mask(H, W, ws, shift):
    img_mask = torch.zeros((1, H, W, 1))
    slices = (slice(0, -ws), slice(-ws, -shift), slice(-shift, None))
    cnt = 0
    for h in slices:
        for w in slices:
            img_mask[:, h, w, :] = cnt
            cnt += 1
    mw = official_window_partition(img_mask, ws).view(-1, ws * ws)
    mask = mw.unsqueeze(1) - mw.unsqueeze(2)
    return mask.masked_fill(mask != 0, float(-100.0)).masked_fill(mask == 0, float(0.0))


def official_wmsa(x, qkv, proj, table, heads, ws, shift):
    """x: (B, H, W, C); table: the official (2M-1)^2 x heads layout. Returns W-MSA(x) (no residual)."""
    B, H, W, C = x.shape
    if shift > 0:
        x = torch.roll(x, shifts=(-shift, -shift), dims=(1, 2))
    xw = official_window_partition(x, ws).view(-1, ws * ws, C)
    B_, N, _ = xw.shape
    qkv_ = qkv(xw).reshape(B_, N, 3, heads, C // heads).permute(2, 0, 3, 1, 4)
    q, k, v = qkv_[0], qkv_[1], qkv_[2]
    q = q * (C // heads) ** -0.5
    attn = q @ k.transpose(-2, -1)
    bias = table[official_index(ws).view(-1)].view(N, N, -1).permute(2, 0, 1).contiguous()
    attn = attn + bias.unsqueeze(0)
    if shift > 0:
        mask = official_mask(H, W, ws, shift).to(x.dtype)
        nW = mask.shape[0]
        attn = attn.view(B_ // nW, nW, heads, N, N) + mask.unsqueeze(1).unsqueeze(0)
        attn = attn.view(-1, heads, N, N)
    attn = attn.softmax(-1)
    o = proj((attn @ v).transpose(1, 2).reshape(B_, N, C))
    o = official_window_reverse(o.view(-1, ws, ws, C), ws, H, W)
    if shift > 0:
        o = torch.roll(o, shifts=(shift, shift), dims=(1, 2))
    return o


def to_official_table(m):
    """The module's (heads, 2M-1, 2M-1) table indexed by key - query, as the official
    ((2M-1)^2, heads) table indexed by query - key: both axes flipped."""
    return rearrange(m.relative_bias.detach().flip(1, 2), "h a b -> (a b) h")


@pytest.mark.parametrize("shift", [0, 2, 3])
@pytest.mark.parametrize("heads", [1, 2])
def test_equals_the_official_code_with_copied_weights(shift, heads):
    ws, c = 4, 8
    m = randomised(WindowAttention2d(c, window_size=ws, heads=heads, shift=shift), std=0.5)
    x = torch.randn(2, c, 8, 12, dtype=torch.float64)  # 2 x 3 windows, H != W
    want = official_wmsa(rearrange(x, "b c h w -> b h w c"), m.qkv, m.proj, to_official_table(m), heads, ws, shift)
    torch.testing.assert_close(m(x), x + rearrange(want, "b h w c -> b c h w"))
    # the re-typed code can fail: the table not flipped, or no mask
    wrong = official_wmsa(rearrange(x, "b c h w -> b h w c"), m.qkv, m.proj,
                          rearrange(m.relative_bias.detach(), "h a b -> (a b) h"), heads, ws, shift)
    assert not torch.allclose(m(x), x + rearrange(wrong, "b h w c -> b c h w"))


# ------------------------------------------------------- the definition, one query at a time

def naive_window_attention(m, x):
    """For each query: its keys are the real positions in its window of the rolled, padded map and in
    its region; logits q.k / sqrt(d) + B[key - query]; softmax; weighted values; W^O; residual."""
    B, C, H, W = x.shape
    M, s, heads, d = m.window_size, m.shift, m.heads, m.head_dim
    Hp, Wp = math.ceil(H / M) * M, math.ceil(W / M) * M
    wq, wk, wv = m.qkv.weight.detach().split(C)
    bq, bk, bv = m.qkv.bias.detach().split(C) if m.bias else (torch.zeros(C, dtype=x.dtype),) * 3
    table = m.relative_bias.detach()

    def region(p, n):  # the official slices on the rolled map
        return 0 if (s == 0 or p < n - M) else (1 if p < n - s else 2)

    out = x.clone()
    for b in range(B):
        for y in range(H):
            for xx in range(W):
                ry, rx = (y - s) % Hp, (xx - s) % Wp  # position in the rolled map
                keys = []
                for ky in range(H):
                    for kx in range(W):
                        sy, sx = (ky - s) % Hp, (kx - s) % Wp
                        same_window = sy // M == ry // M and sx // M == rx // M
                        same_region = region(sy, Hp) == region(ry, Hp) and region(sx, Wp) == region(rx, Wp)
                        if same_window and same_region:
                            keys.append((ky, kx, sy - ry, sx - rx))
                t = x[b, :, y, xx]
                heads_out = []
                for i in range(heads):
                    sl = slice(i * d, (i + 1) * d)
                    q = wq[sl] @ t + bq[sl]
                    logits, vals = [], []
                    for ky, kx, dy, dx in keys:
                        tk = x[b, :, ky, kx]
                        logits.append((wk[sl] @ tk + bk[sl]) @ q / math.sqrt(d) + table[i, dy + M - 1, dx + M - 1])
                        vals.append(wv[sl] @ tk + bv[sl])
                    a = torch.softmax(torch.stack(logits), 0)
                    heads_out.append((a[:, None] * torch.stack(vals)).sum(0))
                o = m.proj(torch.cat(heads_out)[None])[0].detach()
                out[b, :, y, xx] += o
    return out


@pytest.mark.parametrize("size, shift", [((8, 8), 0), ((8, 8), 2), ((7, 6), 0), ((7, 6), 2), ((3, 2), 1), ((5, 9), 3)])
def test_equals_the_definition_one_query_at_a_time(size, shift):
    m = randomised(WindowAttention2d(8, window_size=4, heads=2, shift=shift), std=0.5)
    x = torch.randn(2, 8, *size, dtype=torch.float64)
    torch.testing.assert_close(m(x), naive_window_attention(m, x))


def test_without_the_mask_shifted_windows_mix_far_positions():
    """The mask's job: in the window that wraps round, the top and bottom rows are not neighbours."""
    m = randomised(WindowAttention2d(8, window_size=4, heads=2, shift=2), std=0.5)
    x = torch.randn(1, 8, 8, 8, dtype=torch.float64, requires_grad=True)
    m(x)[0, :, 0, 0].sum().backward()  # the top-left output position
    touched = (x.grad[0].abs().sum(0) > 1e-20).nonzero().tolist()  # a masked key keeps e^-100 of a weight
    assert touched and all(r in (0, 1) and c in (0, 1) for r, c in touched)  # only its own region: rows/cols 0-1
    unmasked = WindowAttention2d(8, window_size=4, heads=2, shift=2).double()
    unmasked.load_state_dict(m.state_dict())
    unmasked._mask = lambda h, w, nh, nw, device: torch.zeros(nh * nw, 1, 16, 16)  # what goes wrong without it
    x.grad = None
    unmasked(x)[0, :, 0, 0].sum().backward()
    rows = {r for r, _ in (x.grad[0].abs().sum(0) > 1e-20).nonzero().tolist()}
    assert {6, 7} <= rows  # the bottom rows, 6 pixels away, leak in


def test_padding_does_not_reach_real_positions():
    m = randomised(WindowAttention2d(8, window_size=4, heads=2), std=0.5)
    x = torch.randn(1, 8, 6, 5, dtype=torch.float64)
    big = torch.randn(1, 8, 8, 8, dtype=torch.float64)
    big[:, :, :6, :5] = x  # the same map with other values where the padding would be
    a, b_ = m(x), m(big)[:, :, :6, :5]
    torch.testing.assert_close(a[:, :, :4, :4], b_[:, :, :4, :4])  # the full windows agree
    assert not torch.allclose(a, b_)  # the cut windows differ: the module masked padding, big had real values


def test_parameters_identity_start_and_defaults():
    m = WindowAttention2d(96)
    assert (m.heads, m.head_dim, m.window_size, m.shift) == (3, 32, 7, 0)  # Swin-T's first stage
    assert sum(p.numel() for p in m.parameters()) == 4 * 96 * 96 + 4 * 96 + 3 * 13 * 13
    x = torch.randn(2, 96, 9, 10)
    assert torch.equal(m(x), x)
    assert 0.015 < m.relative_bias.std().item() < 0.025


@pytest.mark.parametrize(
    "kwargs, words",
    [
        (dict(channels=48), ["WindowAttention2d", "32", "heads"]),
        (dict(channels=32, heads=3), ["WindowAttention2d", "heads"]),
        (dict(channels=32, shift=7), ["WindowAttention2d", "shift"]),
        (dict(channels=32, window_size=4, shift=-1), ["WindowAttention2d", "shift"]),
        (dict(channels=32, window_size=0), ["WindowAttention2d", "window_size"]),
        (dict(channels=32, bias="yes"), ["WindowAttention2d", "bias"]),
    ],
)
def test_impossible_hyperparameters(kwargs, words):
    with pytest.raises(ValueError) as info:
        WindowAttention2d(**kwargs)
    assert all(w in str(info.value) for w in words), str(info.value)


@pytest.mark.parametrize("bad", [torch.randn(2, 32, 8), torch.randn(2, 16, 8, 8), torch.ones(1, 32, 4, 4, dtype=torch.long)])
def test_bad_input_is_named(bad):
    with pytest.raises(ValueError, match="WindowAttention2d"):
        WindowAttention2d(32)(bad)


def test_compile_fullgraph_with_dynamic_shapes():
    """torch.compile captures it in one graph per shape family (torch.export with a dynamic H and W
    does not work: the module declares them static, see its docstring)."""
    m = randomised(WindowAttention2d(32, window_size=4, shift=2, identity_init=False), std=0.5).float().eval()
    torch._dynamo.reset()
    compiled = torch.compile(m, fullgraph=True, backend="eager")
    for shape in [(2, 32, 8, 12), (3, 32, 9, 5)]:
        y = torch.randn(shape)
        torch.testing.assert_close(compiled(y), m(y))
    torch._dynamo.reset()


@pytest.mark.parametrize("shift", [0, 2])
def test_attention_weights_through_the_gate_give_the_output(shift):
    """attention(x) returns the softmax rows (summing to 1, zero on masked keys) that forward uses."""
    m = randomised(WindowAttention2d(32, window_size=4, heads=2, shift=shift, identity_init=False), std=0.3).double()
    x = torch.randn(2, 32, 7, 9, dtype=torch.float64)
    a = m.attention(x)  # (B, nW, heads, M², M²)
    assert a.shape == (2, 2 * 3, 2, 16, 16)
    torch.testing.assert_close(a.sum(-1), torch.ones_like(a.sum(-1)))
    seen = []
    hook = m.gate.register_forward_hook(lambda mod, inp, out: seen.append(out))
    m.attention(x)
    hook.remove()
    assert len(seen) == 1 and torch.equal(seen[0], rearrange(a, "b n h t u -> b (n h) t u"))
    # the output from these weights, by hand: windows of the padded, rolled map
    t = torch.nn.functional.pad(rearrange(x, "b c h w -> b h w c"), (0, 0, 0, 3, 0, 1))
    t = torch.roll(t, (-shift, -shift), (1, 2))
    win = rearrange(t, "b (nh m1) (nw m2) c -> b (nh nw) (m1 m2) c", m1=4, m2=4)
    v = rearrange(m.qkv(win)[..., 64:], "b n t (h d) -> b n h t d", h=2)
    o = m.proj(rearrange(a @ v, "b n h t d -> b n t (h d)"))
    o = rearrange(o, "b (nh nw) (m1 m2) c -> b (nh m1) (nw m2) c", nh=2, m1=4)
    o = torch.roll(o, (shift, shift), (1, 2))[:, :7, :9]
    torch.testing.assert_close(m(x), x + rearrange(o, "b h w c -> b c h w"))
    if shift == 0:  # the last window's last key is padding (row 7 of 8, column 11 of 12): never attended
        assert (a[0, -1, :, :, -1] < 1e-30).all() and (a[0, -1, :, :, 0] > 1e-30).all()
