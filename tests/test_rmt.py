"""Manhattan self-attention (RMT's MaSA): equal to the official code re-typed (full and decomposed),
to a per-query derivation of the definition, what the decomposition changes (and where it does
not), the decay before vs after the softmax, parameters, gradients, and the input checks."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from attncourse import count_parameters
from attncourse.local.rmt import ManhattanSelfAttention2d, head_decays, manhattan_distance

from module_checks import randomised


# ------------------------------------------------------- the official code, re-typed for the test
# qhfan/RMT, classfication_release/RMT.py: rotate_every_two, theta_shift, DWConv2d, RetNetRelPos2d
# (its chunkwise_recurrent and whole branches), VisionRetentionChunk.forward and
# VisionRetentionAll.forward, on (B, H, W, C). Changed: meshgrid gets indexing="ij" (its default,
# without the warning); value_factor is 1 (as RMT uses it); the unused recurrent branch is left out.

def rotate_every_two(x):
    x1 = x[:, :, :, :, ::2]
    x2 = x[:, :, :, :, 1::2]
    x = torch.stack([-x2, x1], dim=-1)
    return x.flatten(-2)


def official_theta_shift(x, sin, cos):
    return (x * cos) + (rotate_every_two(x) * sin)


class DWConv2d(nn.Module):
    def __init__(self, dim, kernel_size, stride, padding):
        super().__init__()
        self.conv = nn.Conv2d(dim, dim, kernel_size, stride, padding, groups=dim)

    def forward(self, x):
        x = x.permute(0, 3, 1, 2)
        x = self.conv(x)
        return x.permute(0, 2, 3, 1)


class RetNetRelPos2d(nn.Module):
    def __init__(self, embed_dim, num_heads, initial_value, heads_range):
        super().__init__()
        angle = 1.0 / (10000 ** torch.linspace(0, 1, embed_dim // num_heads // 2))
        angle = angle.unsqueeze(-1).repeat(1, 2).flatten()
        decay = torch.log(1 - 2 ** (-initial_value - heads_range * torch.arange(num_heads, dtype=torch.float) / num_heads))
        self.register_buffer("angle", angle)
        self.register_buffer("decay", decay)

    def generate_2d_decay(self, H, W):
        index_h = torch.arange(H).to(self.decay)
        index_w = torch.arange(W).to(self.decay)
        grid = torch.meshgrid([index_h, index_w], indexing="ij")
        grid = torch.stack(grid, dim=-1).reshape(H * W, 2)
        mask = grid[:, None, :] - grid[None, :, :]
        mask = (mask.abs()).sum(dim=-1)
        return mask * self.decay[:, None, None]

    def generate_1d_decay(self, l):
        index = torch.arange(l).to(self.decay)
        mask = (index[:, None] - index[None, :]).abs()
        return mask * self.decay[:, None, None]

    def forward(self, slen, chunkwise_recurrent=False):
        index = torch.arange(slen[0] * slen[1]).to(self.decay)
        sin = torch.sin(index[:, None] * self.angle[None, :]).reshape(slen[0], slen[1], -1)
        cos = torch.cos(index[:, None] * self.angle[None, :]).reshape(slen[0], slen[1], -1)
        if chunkwise_recurrent:
            return (sin, cos), (self.generate_1d_decay(slen[0]), self.generate_1d_decay(slen[1]))
        return (sin, cos), self.generate_2d_decay(slen[0], slen[1])


class _Retention(nn.Module):
    def __init__(self, embed_dim, num_heads):
        super().__init__()
        self.embed_dim, self.num_heads = embed_dim, num_heads
        self.key_dim = embed_dim // num_heads
        self.scaling = self.key_dim ** -0.5
        self.q_proj = nn.Linear(embed_dim, embed_dim, bias=True)
        self.k_proj = nn.Linear(embed_dim, embed_dim, bias=True)
        self.v_proj = nn.Linear(embed_dim, embed_dim, bias=True)
        self.lepe = DWConv2d(embed_dim, 5, 1, 2)
        self.out_proj = nn.Linear(embed_dim, embed_dim, bias=True)


class VisionRetentionChunk(_Retention):
    def forward(self, x, rel_pos):
        bsz, h, w, _ = x.size()
        (sin, cos), (mask_h, mask_w) = rel_pos
        q = self.q_proj(x)
        k = self.k_proj(x)
        v = self.v_proj(x)
        lepe = self.lepe(v)
        k *= self.scaling
        q = q.view(bsz, h, w, self.num_heads, self.key_dim).permute(0, 3, 1, 2, 4)
        k = k.view(bsz, h, w, self.num_heads, self.key_dim).permute(0, 3, 1, 2, 4)
        qr = official_theta_shift(q, sin, cos)
        kr = official_theta_shift(k, sin, cos)
        qr_w = qr.transpose(1, 2)
        kr_w = kr.transpose(1, 2)
        v = v.reshape(bsz, h, w, self.num_heads, -1).permute(0, 1, 3, 2, 4)
        qk_mat_w = qr_w @ kr_w.transpose(-1, -2)
        qk_mat_w = qk_mat_w + mask_w
        qk_mat_w = torch.softmax(qk_mat_w, -1)
        v = torch.matmul(qk_mat_w, v)
        qr_h = qr.permute(0, 3, 1, 2, 4)
        kr_h = kr.permute(0, 3, 1, 2, 4)
        v = v.permute(0, 3, 2, 1, 4)
        qk_mat_h = qr_h @ kr_h.transpose(-1, -2)
        qk_mat_h = qk_mat_h + mask_h
        qk_mat_h = torch.softmax(qk_mat_h, -1)
        output = torch.matmul(qk_mat_h, v)
        output = output.permute(0, 3, 1, 2, 4).flatten(-2, -1)
        output = output + lepe
        return self.out_proj(output)


class VisionRetentionAll(_Retention):
    def forward(self, x, rel_pos):
        bsz, h, w, _ = x.size()
        (sin, cos), mask = rel_pos
        assert h * w == mask.size(1)
        q = self.q_proj(x)
        k = self.k_proj(x)
        v = self.v_proj(x)
        lepe = self.lepe(v)
        k *= self.scaling
        q = q.view(bsz, h, w, self.num_heads, -1).permute(0, 3, 1, 2, 4)
        k = k.view(bsz, h, w, self.num_heads, -1).permute(0, 3, 1, 2, 4)
        qr = official_theta_shift(q, sin, cos)
        kr = official_theta_shift(k, sin, cos)
        qr = qr.flatten(2, 3)
        kr = kr.flatten(2, 3)
        vr = v.reshape(bsz, h, w, self.num_heads, -1).permute(0, 3, 1, 2, 4)
        vr = vr.flatten(2, 3)
        qk_mat = qr @ kr.transpose(-1, -2)
        qk_mat = qk_mat + mask
        qk_mat = torch.softmax(qk_mat, -1)
        output = torch.matmul(qk_mat, vr)
        output = output.transpose(1, 2).reshape(bsz, h, w, -1)
        output = output + lepe
        return self.out_proj(output)


def official(m, x, *, chunk):
    """The official retention with the module's weights, as a plug-in: x + MaSA(x) on (B, C, H, W)."""
    c, heads = m.channels, m.heads
    cls = VisionRetentionChunk if chunk else VisionRetentionAll
    ret = cls(c, heads).double()
    rel = RetNetRelPos2d(c, heads, m.init_value, m.heads_range).double()
    with torch.no_grad():
        wq, wk, wv = m.qkv.weight.split(c)
        bq, bk, bv = m.qkv.bias.split(c)
        for lin, wt, bs in [(ret.q_proj, wq, bq), (ret.k_proj, wk, bk), (ret.v_proj, wv, bv), (ret.out_proj, m.proj.weight, m.proj.bias)]:
            lin.weight.copy_(wt)
            lin.bias.copy_(bs)
        ret.lepe.conv.load_state_dict(m.lepe.state_dict())
    t = x.permute(0, 2, 3, 1)
    out = ret(t, rel((x.shape[2], x.shape[3]), chunkwise_recurrent=chunk))
    return x + out.permute(0, 3, 1, 2)


@pytest.mark.parametrize("size", [(6, 7), (4, 4), (1, 5), (5, 1)])
@pytest.mark.parametrize("heads, init_value, heads_range", [(2, 2.0, 4.0), (4, 1.0, 6.0), (1, 3.0, 0.0)])
@pytest.mark.parametrize("decomposed", [False, True], ids=["all", "chunk"])
def test_equals_the_official_code_with_copied_weights(decomposed, heads, init_value, heads_range, size):
    m = randomised(ManhattanSelfAttention2d(16, heads=heads, decomposed=decomposed, init_value=init_value,
                                            heads_range=heads_range), std=0.5)
    x = torch.randn(2, 16, *size, dtype=torch.float64)
    torch.testing.assert_close(m(x), official(m, x, chunk=decomposed))


def test_the_official_decays_and_the_re_typed_code_can_fail():
    rel = RetNetRelPos2d(64, 4, 2, 4)
    assert torch.equal(rel.decay, head_decays(4, 2.0, 4.0))
    torch.testing.assert_close(rel.decay.exp(), torch.tensor([0.75, 0.875, 0.9375, 0.96875]))
    torch.testing.assert_close(rel.generate_2d_decay(3, 5), rel.decay[:, None, None] * manhattan_distance(3, 5).float())
    m = randomised(ManhattanSelfAttention2d(16, heads=2), std=0.5)
    x = torch.randn(2, 16, 5, 6, dtype=torch.float64)
    assert not torch.allclose(m(x), official(m, x, chunk=True))  # the full form is not the chunk form
    for wrong in (dict(theta_shift=False), dict(decay="product"), dict(init_value=2.5)):
        w = ManhattanSelfAttention2d(16, heads=2, **wrong).double()
        w.load_state_dict(m.state_dict())
        assert not torch.allclose(w(x), official(m, x, chunk=False)), wrong


# ------------------------------------------------------- the definition, one query at a time

def naive_lepe(m, v):
    """LCE(V): each output channel at (y, x) is the bias plus the k x k neighbourhood of its own channel, zero-padded."""
    if m.lepe is None:
        return torch.zeros_like(v)
    k, r = m.lepe_kernel, m.lepe_kernel // 2
    H, W, C = v.shape
    out = m.lepe.bias.detach().expand(H, W, C).clone()
    wt = m.lepe.weight.detach()[:, 0]  # (C, k, k)
    for y in range(H):
        for x in range(W):
            for i in range(k):
                for j in range(k):
                    yy, xx = y + i - r, x + j - r
                    if 0 <= yy < H and 0 <= xx < W:
                        out[y, x] += wt[:, i, j] * v[yy, xx]
    return out


def rope(vec, n, d):
    """Rotate each pair (2j, 2j+1) of vec by n θ_j, θ_j = 10000^(-j / (d/2 - 1)) (θ_0 = 1 if d = 2)."""
    out = vec.clone()
    for j in range(d // 2):
        theta = 10000 ** (-j / (d // 2 - 1)) if d > 2 else 1.0
        c, s = math.cos(n * theta), math.sin(n * theta)
        a, b = vec[2 * j], vec[2 * j + 1]
        out[2 * j], out[2 * j + 1] = a * c - b * s, b * c + a * s
    return out


def naive_masa(m, x):
    """Per query n = (y, x), per head: logits (R q_n) . (R k_m) / sqrt(d) [+ dist log γ]; softmax [⊙ γ^dist];
    sum of values; decomposed: first along the row with |Δx|, then along the column with |Δy|."""
    B, C, H, W = x.shape
    heads, d = m.heads, m.head_dim
    gammas = m.log_gamma.exp().tolist()
    wq, wk, wv = m.qkv.weight.detach().split(C)
    bq, bk, bv = m.qkv.bias.detach().split(C)
    out = x.clone()
    for b in range(B):
        t = x[b].permute(1, 2, 0)  # (H, W, C)
        q, k, v = t @ wq.T + bq, t @ wk.T + bk, t @ wv.T + bv

        def qk(y, xx, head, rotate=m.theta_shift):
            sl = slice(head * d, (head + 1) * d)
            qv, kv = q[y, xx, sl], k[y, xx, sl]
            return (rope(qv, y * W + xx, d), rope(kv, y * W + xx, d)) if rotate else (qv, kv)

        def attend(query, keys, head, values):  # keys: [(pos, distance)]; one softmax [⊙ decay]
            qv = qk(*query, head)[0]
            logits = torch.stack([qv @ qk(*p, head)[1] / math.sqrt(d) for p, _ in keys])
            dist = torch.tensor([float(dd) for _, dd in keys], dtype=x.dtype)
            g = gammas[head]
            if m.decay == "logits":
                a = torch.softmax(logits + dist * math.log(g), 0)
            else:
                a = torch.softmax(logits, 0) * g**dist
            return sum(a[i] * values[i] for i in range(len(keys)))

        o = torch.zeros(H, W, C, dtype=x.dtype)
        for head in range(heads):
            sl = slice(head * d, (head + 1) * d)
            for y in range(H):
                for xx in range(W):
                    if not m.decomposed:
                        keys = [((yy, x2), abs(yy - y) + abs(x2 - xx)) for yy in range(H) for x2 in range(W)]
                        o[y, xx, sl] = attend((y, xx), keys, head, [v[p][sl] for p, _ in keys])
                    else:  # the column pass reads the row pass's outputs at (y', xx)
                        row_out = [attend((yy, xx), [((yy, x2), abs(x2 - xx)) for x2 in range(W)], head,
                                          [v[yy, x2, sl] for x2 in range(W)]) for yy in range(H)]
                        o[y, xx, sl] = attend((y, xx), [((yy, xx), abs(yy - y)) for yy in range(H)], head, row_out)
        o = o + naive_lepe(m, v)
        out[b] += (o @ m.proj.weight.detach().T + m.proj.bias.detach()).permute(2, 0, 1)
    return out


@pytest.mark.parametrize(
    "kwargs, size",
    [
        (dict(), (3, 4)),
        (dict(decomposed=True), (3, 4)),
        (dict(decay="product"), (4, 3)),
        (dict(decomposed=True, decay="product"), (2, 5)),
        (dict(theta_shift=False, lepe_kernel=3), (3, 3)),
        (dict(decomposed=True, lepe_kernel=None, heads_range=6.0), (4, 2)),
    ],
)
def test_equals_the_definition_one_query_at_a_time(kwargs, size):
    m = randomised(ManhattanSelfAttention2d(8, heads=2, **kwargs), std=0.5)
    x = torch.randn(2, 8, *size, dtype=torch.float64)
    torch.testing.assert_close(m(x), naive_masa(m, x))


# ------------------------------------------------------- what the weights are

def _forward_from(m, x, a):
    """forward rebuilt from attention(x): A V + LePE, W^O, residual."""
    B, C, H, W = x.shape
    v = (x.permute(0, 2, 3, 1) @ m.qkv.weight[2 * C:].T + m.qkv.bias[2 * C:])  # (B, H, W, C)
    vh = v.reshape(B, H * W, m.heads, m.head_dim).transpose(1, 2)
    o = (a @ vh).transpose(1, 2).reshape(B, H, W, C)
    if m.lepe is not None:
        o = o + m.lepe(v.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
    return x + m.proj(o).permute(0, 3, 1, 2)


@pytest.mark.parametrize("decomposed", [False, True])
@pytest.mark.parametrize("decay", ["logits", "product"])
def test_attention_returns_the_weights_forward_applies(decomposed, decay):
    m = randomised(ManhattanSelfAttention2d(16, heads=2, decomposed=decomposed, decay=decay), std=0.5)
    x = torch.randn(3, 16, 4, 5, dtype=torch.float64)
    a = m.attention(x)
    assert a.shape == (3, 2, 20, 20)
    torch.testing.assert_close(_forward_from(m, x, a), m(x))
    rows = a.sum(-1)
    if decay == "logits":
        torch.testing.assert_close(rows, torch.ones_like(rows))
    else:  # the paper's product: rows sum to less than 1 (every off-diagonal weight is damped)
        assert (rows < 1).all() and (rows > 0).all()


def test_the_official_decay_is_the_paper_s_product_renormalised():
    """softmax(s + log D) = (softmax(s) ⊙ D) / row sums (qhfan/RMT issue #21), in both forms."""
    x = torch.randn(2, 16, 5, 4, dtype=torch.float64)
    for decomposed in (False, True):
        logits = randomised(ManhattanSelfAttention2d(16, heads=2, decomposed=decomposed), std=0.5)
        product = ManhattanSelfAttention2d(16, heads=2, decomposed=decomposed, decay="product").double()
        product.load_state_dict(logits.state_dict())
        if not decomposed:
            p = product.attention(x)
            torch.testing.assert_close(logits.attention(x), p / p.sum(-1, keepdim=True))
        assert not torch.allclose(logits(x), product(x))


def test_content_free_weights_are_the_normalised_decay():
    """With q = 0 the weights are D normalised per row: γ^(|Δy| + |Δx|) / Σ γ^(...), one γ per head."""
    m = randomised(ManhattanSelfAttention2d(16, heads=4), std=0.5)
    with torch.no_grad():
        m.qkv.weight[:16].zero_()
        m.qkv.bias[:16].zero_()
    a = m.attention(torch.randn(1, 16, 5, 6, dtype=torch.float64))[0]
    dist = manhattan_distance(5, 6).double()
    for i, g in enumerate([0.75, 0.875, 0.9375, 0.96875]):
        d = torch.tensor(g, dtype=torch.float64) ** dist
        torch.testing.assert_close(a[i], d / d.sum(-1, keepdim=True), rtol=1e-6, atol=1e-9)  # γ from float32


# ------------------------------------------------------- full vs decomposed

def _tv(a, b):
    """Mean total-variation distance between matching rows of two weight tensors (0: equal, 1: disjoint)."""
    return 0.5 * (a - b).abs().sum(-1).mean().item()


def _pair(seed=0, **kwargs):
    torch.manual_seed(seed)
    full = ManhattanSelfAttention2d(64, identity_init=False, **kwargs).double()
    dec = ManhattanSelfAttention2d(64, decomposed=True, identity_init=False, **kwargs).double()
    dec.load_state_dict(full.state_dict())
    return full, dec


def test_the_decomposed_form_is_not_the_full_one():
    """At the official start the content logits are small and the two forms' weights are close (a
    mean total variation of about 0.02 on a random 14 x 14 map); with W^Q and W^K 4 times larger,
    about 0.28 (the chapter measures both). Asserted loosely."""
    x = torch.randn(2, 64, 14, 14, dtype=torch.float64)
    far = {}
    for scale in (1, 4):
        full, dec = _pair()
        with torch.no_grad():
            for m in (full, dec):
                m.qkv.weight[:128] *= scale  # W^Q and W^K
        far[scale] = _tv(full.attention(x), dec.attention(x))
        assert not torch.allclose(full(x), dec(x))
    assert 0.005 < far[1] < 0.05 and 0.15 < far[4] < 0.45, far


@pytest.mark.parametrize("size", [(1, 9), (7, 1), (1, 1)])
def test_one_row_or_one_column_the_two_forms_agree(size):
    full, dec = _pair(seed=1)
    x = torch.randn(2, 64, *size, dtype=torch.float64)
    torch.testing.assert_close(dec(x), full(x))
    torch.testing.assert_close(dec.attention(x), full.attention(x))


@pytest.mark.parametrize("decay", ["logits", "product"])
def test_without_content_the_two_forms_agree(decay):
    """q = 0: the logits are 0, and D = D^H D^W factorises, so both passes' product is the full weights."""
    full, dec = _pair(seed=2, decay=decay)
    with torch.no_grad():
        for m in (full, dec):
            m.qkv.weight[:64].zero_()
            m.qkv.bias[:64].zero_()
    x = torch.randn(2, 64, 6, 9, dtype=torch.float64)
    torch.testing.assert_close(dec.attention(x), full.attention(x))
    torch.testing.assert_close(dec(x), full(x))


# ------------------------------------------------------- parameters, defaults, gradients, checks

@pytest.mark.parametrize("c, k", [(64, 5), (32, 3), (48, None)])
def test_parameter_formula(c, k):
    m = ManhattanSelfAttention2d(c, lepe_kernel=k)
    lepe = 0 if k is None else k * k * c + c
    assert count_parameters(m) == 4 * c * c + 4 * c + lepe
    if k == 5:
        assert count_parameters(m) == 4 * c * c + 30 * c


def test_defaults_identity_start_and_official_start():
    m = ManhattanSelfAttention2d(64)
    assert (m.heads, m.head_dim, m.decomposed, m.decay, m.lepe_kernel, m.theta_shift) == (4, 16, False, "logits", 5, True)
    torch.testing.assert_close(m.log_gamma.exp(), torch.tensor([0.75, 0.875, 0.9375, 0.96875]))
    assert not hasattr(m, "gate_h") and hasattr(ManhattanSelfAttention2d(64, decomposed=True), "gate_h")
    x = torch.randn(2, 64, 5, 7)
    assert torch.equal(m(x), x) and torch.equal(ManhattanSelfAttention2d(64, decomposed=True)(x), x)
    assert ManhattanSelfAttention2d(96).heads == 6
    torch.manual_seed(0)
    off = ManhattanSelfAttention2d(64, identity_init=False)
    assert not torch.allclose(off(x), x)
    std = 2**-2.5 * math.sqrt(2 / 128)  # Xavier-normal with gain 2^-2.5 on a 64 x 64 weight
    for w in off.qkv.weight.split(64):
        assert 0.9 * std < w.std().item() < 1.1 * std
    assert 0.9 * math.sqrt(2 / 128) < off.proj.weight.std().item() < 1.1 * math.sqrt(2 / 128)
    assert not off.qkv.bias.any() and not off.proj.bias.any()


@pytest.mark.parametrize("kwargs", [dict(), dict(decomposed=True), dict(decay="product"), dict(decomposed=True, decay="product")])
def test_gradcheck(kwargs):
    m = randomised(ManhattanSelfAttention2d(4, heads=2, lepe_kernel=3, **kwargs), std=0.5)
    x = torch.randn(2, 4, 3, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(m, (x,))


def test_the_decay_keeps_far_keys_small_but_non_zero():
    """Global but local-leaning: every key gets a weight (no window), far keys much less."""
    m = ManhattanSelfAttention2d(64)  # the content logits at the start are small
    a = m.attention(torch.randn(1, 64, 12, 12))[0]  # (heads, N, N)
    corner = a[:, 0]  # the query at (0, 0)
    assert (corner > 0).all()
    ratio = corner[:, 1] / corner[:, -1]  # the neighbour vs the far corner, 21 steps further: about γ^-21
    assert ratio[0] > 100 and (ratio > 1.5).all() and (ratio.diff() < 0).all()
    spread = (corner * manhattan_distance(12, 12)[0].float()).sum(-1)  # mean distance attended, per head
    assert (spread.diff() > 0).all()  # larger γ, wider reach


@pytest.mark.parametrize(
    "kwargs, words",
    [
        (dict(channels=40), ["ManhattanSelfAttention2d", "16", "heads"]),
        (dict(channels=32, heads=3), ["ManhattanSelfAttention2d", "heads"]),
        (dict(channels=12, heads=4), ["even head width", "3"]),
        (dict(channels=32, decay="after"), ["decay", "after"]),
        (dict(channels=32, decomposed="yes"), ["decomposed"]),
        (dict(channels=32, init_value=0), ["init_value", "> 0"]),
        (dict(channels=32, heads_range=-1), ["heads_range", ">= 0"]),
        (dict(channels=32, init_value=True), ["init_value"]),
        (dict(channels=32, lepe_kernel=4), ["lepe_kernel", "odd"]),
        (dict(channels=32, lepe_kernel=0), ["lepe_kernel"]),
        (dict(channels=32, theta_shift=None), ["theta_shift"]),
    ],
)
def test_impossible_hyperparameters(kwargs, words):
    with pytest.raises(ValueError) as info:
        ManhattanSelfAttention2d(**kwargs)
    assert all(w in str(info.value) for w in words), str(info.value)


def test_odd_head_width_without_the_rotation_is_fine():
    m = ManhattanSelfAttention2d(12, heads=4, theta_shift=False, identity_init=False)
    assert m(torch.randn(2, 12, 3, 5)).shape == (2, 12, 3, 5)


@pytest.mark.parametrize("bad", [torch.randn(2, 32, 8), torch.randn(2, 16, 8, 8), torch.ones(1, 32, 4, 4, dtype=torch.long)])
def test_bad_input_is_named(bad):
    for dec in (False, True):
        m = ManhattanSelfAttention2d(32, decomposed=dec)
        for f in (m, m.attention):
            with pytest.raises(ValueError, match="ManhattanSelfAttention2d"):
                f(bad)


def test_float32_forward_equals_the_explicit_weights():
    """forward in float32 equals the weights of attention(x) applied by hand."""
    for dec in (False, True):
        torch.manual_seed(3)
        m = ManhattanSelfAttention2d(32, decomposed=dec, identity_init=False)
        x = torch.randn(2, 32, 9, 11)
        torch.testing.assert_close(m(x), _forward_from(m, x, m.attention(x)), rtol=1e-4, atol=1e-5)


# ------------------------------------------------------- deploy: the options the contract tests do not build

def _exportable(**kwargs):
    torch.manual_seed(4)
    return ManhattanSelfAttention2d(16, identity_init=False, **kwargs).eval()


@pytest.mark.parametrize("kwargs", [dict(decomposed=True), dict(decay="product"), dict(decomposed=True, decay="product")])
def test_export_with_dynamic_batch_and_size(kwargs):
    from torch.export import Dim

    m = _exportable(**kwargs)
    dims = {"x": {0: Dim("b", min=1), 2: Dim("h", min=1), 3: Dim("w", min=1)}}
    ep = torch.export.export(m, (torch.randn(2, 16, 6, 5),), dynamic_shapes=dims)
    for shape in [(3, 16, 9, 4), (1, 16, 1, 1), (2, 16, 1, 7)]:
        y = torch.randn(shape)
        torch.testing.assert_close(ep.module()(y), m(y))


def test_decomposed_onnx_and_compile(tmp_path):
    from torch.export import Dim

    from module_checks import assert_onnx_equals_eager

    m = _exportable(decomposed=True)
    dims = {0: Dim("b", min=1), 2: Dim("h", min=1), 3: Dim("w", min=1)}
    assert_onnx_equals_eager(m, torch.randn(2, 16, 6, 5), dims, [(3, 16, 9, 4), (1, 16, 1, 1)], tmp_path / "masa.onnx")
    graphs = []

    def counting(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    torch._dynamo.reset()
    compiled = torch.compile(m, fullgraph=True, backend=counting, dynamic=True)
    for shape in [(2, 16, 6, 5), (3, 16, 9, 4)]:
        y = torch.randn(shape)
        torch.testing.assert_close(compiled(y), m(y))
    assert len(graphs) == 1
    torch._dynamo.reset()
