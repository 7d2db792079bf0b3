"""Focused linear attention (Han et al., ICCV 2023) against its equations, its official code's
options (LeapLabTHU/FLatten-Transformer, models/flatten_swin.py), and the numerical contract of
Part IV (finite in float16 and bfloat16 at N = 65,536)."""

import pytest
import torch
import torch.nn.functional as F

import attncourse
from attncourse.cost import count_flops, count_parameters
from attncourse.linear.flatten import FocusedLinearAttention2d, focusing_function
from attncourse.plot import capture_gates

# ---------------------------------------------------------------- the naive derivation


def naive_fp(x, p):
    """f_p(x) = ‖x‖ / ‖x^p‖ · x^p, one vector at a time, straight from the paper; 0 for x = 0."""
    nx, xp = x.norm(), x**p
    return torch.zeros_like(x) if nx == 0 else nx / xp.norm() * xp


def naive_flatten(m, x, p=None, dwc=True):
    """x + W^O Concat_i(Sim V + DWC(V)), loops over images, heads, queries and keys."""
    B, C, H, W = x.shape
    h, d, N = m.heads, m.head_dim, H * W
    p = m.focusing_factor if p is None else p
    wqkv = m.qkv.weight.detach()
    bqkv = m.qkv.bias.detach() if m.bias else torch.zeros(3 * C, dtype=x.dtype)
    out = x.clone()
    for b in range(B):
        t = x[b].reshape(C, N).T  # tokens (N, C), position n = y*W + w
        q_all, k_all, v_all = (t @ wqkv[i * C : (i + 1) * C].T + bqkv[i * C : (i + 1) * C] for i in range(3))
        if m.pos is not None:
            k_all = k_all + m.pos.detach()
        s = F.softplus(m.scale_param.detach()) if m.scale_param is not None else torch.ones(C, dtype=x.dtype)
        q_all, k_all = F.relu(q_all) / s, F.relu(k_all) / s
        if m.norm == "all":
            q_all = torch.stack([naive_fp(r, p) for r in q_all])
            k_all = torch.stack([naive_fp(r, p) for r in k_all])
        heads_out = []
        for i in range(h):
            sl = slice(i * d, (i + 1) * d)
            q, k, v = q_all[:, sl], k_all[:, sl], v_all[:, sl]
            if m.norm == "head":
                q = torch.stack([naive_fp(r, p) for r in q])
                k = torch.stack([naive_fp(r, p) for r in k])
            o = torch.zeros(N, d, dtype=x.dtype)
            for n in range(N):
                sims = torch.stack([q[n] @ k[j] for j in range(N)])  # Sim(Q_n, K_j)
                o[n] = sum(sims[j] * v[j] for j in range(N)) / (sims.sum() + m.eps)
            if dwc and m.dwc is not None:  # DWC(V): the same d filters for every head
                kk, wt, bt = m.kernel_size, m.dwc.weight.detach(), m.dwc.bias.detach()
                r = kk // 2
                vm = v.T.reshape(d, H, W)
                for c in range(d):
                    for yy in range(H):
                        for xx in range(W):
                            acc = bt[c].clone()
                            for dy in range(kk):
                                for dx in range(kk):
                                    sy, sx = yy + dy - r, xx + dx - r
                                    if 0 <= sy < H and 0 <= sx < W:
                                        acc = acc + wt[c, 0, dy, dx] * vm[c, sy, sx]
                            o[yy * W + xx, c] += acc
            heads_out.append(o)
        y = torch.cat(heads_out, dim=1) @ m.proj.weight.detach().T
        if m.bias:
            y = y + m.proj.bias.detach()
        out[b] += y.T.reshape(C, H, W)
    return out


def _random(m, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.5)
    return m


# ---------------------------------------------------------------- equal to the derivation


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(heads=2),
        dict(heads=1, kernel_size=3),
        dict(heads=4, kernel_size=None),
        dict(heads=2, focusing_factor=1),
        dict(heads=2, focusing_factor=2.5, bias=False),
        dict(heads=2, scale="softplus", norm="all", key_position=(3, 5)),
        dict(heads=2, norm="all"),
    ],
)
def test_equals_the_naive_derivation(kwargs):
    m = _random(FocusedLinearAttention2d(8, **kwargs).double())
    x = torch.randn(2, 8, 3, 5, dtype=torch.float64)
    torch.testing.assert_close(m(x), naive_flatten(m, x))


def test_the_naive_derivation_can_fail():
    m = _random(FocusedLinearAttention2d(8, heads=2).double())
    x = torch.randn(1, 8, 3, 4, dtype=torch.float64)
    ref = naive_flatten(m, x)
    assert not torch.allclose(naive_flatten(m, x, p=1), ref)  # no focusing
    assert not torch.allclose(naive_flatten(m, x, dwc=False), ref)  # no DWC
    m.norm = "all"
    assert not torch.allclose(naive_flatten(m, x), ref)  # norms over all channels


def test_focusing_function_keeps_the_norm_sharpens_and_guards_zero():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(50, 6, generator=g, dtype=torch.float64)
    for p in (1, 2, 3, 7.5):
        y = focusing_function(x, p)
        torch.testing.assert_close(y, torch.stack([naive_fp(r, p) for r in x]))
        torch.testing.assert_close(y.norm(dim=-1), x.norm(dim=-1))  # the norm is kept
    torch.testing.assert_close(focusing_function(x, 1), x)  # p = 1: the identity
    # cosine with the largest axis grows with p
    cos = [(focusing_function(x, p).amax(-1) / x.norm(dim=-1)) for p in (1, 2, 3)]
    assert (cos[1] >= cos[0] - 1e-12).all() and (cos[2] >= cos[1] - 1e-12).all()
    z = torch.zeros(2, 4, requires_grad=True)
    y = focusing_function(z, 3)
    assert torch.equal(y, torch.zeros(2, 4))  # 0, not the paper's 0/0
    y.sum().backward()
    assert torch.isfinite(z.grad).all()
    # no overflow in float16 where x**3 alone would overflow
    big = torch.tensor([[60.0, 50.0, 1.0]], dtype=torch.float16)
    assert torch.isinf(big**3).any() and torch.isfinite(focusing_function(big, 3)).all()
    torch.testing.assert_close(focusing_function(big, 3), naive_fp(big[0].double(), 3)[None].float(), rtol=1e-3, atol=1e-3)


def test_an_all_zero_relu_feature_gives_zero_attention_not_nan():
    m = _random(FocusedLinearAttention2d(8, heads=2, kernel_size=None).double())
    with torch.no_grad():
        m.qkv.weight[:8] = 0
        m.qkv.bias[:8] = -1  # every query: ReLU(-1) = 0
    x = torch.randn(1, 8, 3, 4, dtype=torch.float64)
    torch.testing.assert_close(m(x), x + m.proj.bias.detach()[None, :, None, None].expand_as(x))
    assert torch.equal(m.attention(x), torch.zeros(1, 2, 12, 12, dtype=torch.float64))


def test_attention_is_what_forward_applies_without_the_dwc():
    m = _random(FocusedLinearAttention2d(16, heads=4).double())
    x = torch.randn(2, 16, 4, 7, dtype=torch.float64)
    a = m.attention(x)
    assert a.shape == (2, 4, 28, 28)
    sums = a.sum(-1)  # 1, or 0 for a query whose ReLU feature is all zero (d = 4: it happens)
    assert ((sums - 1).abs() < 1e-5).logical_or(sums == 0).all() and (sums > 0.5).float().mean() > 0.7
    _, _, v = m._features(x)
    dwc = m.dwc(v.reshape(8, 28, 4).transpose(1, 2).reshape(8, 4, 4, 7)).reshape(2, 4, 4, 28).transpose(-1, -2)
    o = (a @ v + dwc).transpose(1, 2).reshape(2, 28, 16)
    torch.testing.assert_close(m(x), x + m.proj(o).transpose(1, 2).reshape_as(x))
    assert capture_gates(m, x) == {}  # forward never forms the weights


def test_official_forward_of_a_square_window():
    """The official FocusedLinearAttention.forward (after e205a01), re-typed as its steps, on a
    square 4x4 window, with the options that the code has: scale, norm over all C, key encoding."""
    c, heads, side = 8, 2, 4
    n = side * side
    m = _random(FocusedLinearAttention2d(c, heads=heads, scale="softplus", norm="all", key_position=(side, side)))
    m = m.double()
    with torch.no_grad():
        m.qkv.bias[: 2 * c] += 3  # no all-zero ReLU feature: there the two differ on purpose (see the docstring)
    x = torch.randn(2, c, side, side, dtype=torch.float64)
    t = x.flatten(2).transpose(1, 2)
    q, k, v = m.qkv(t).reshape(2, n, 3, c).permute(2, 0, 1, 3).unbind(0)
    k = k + m.pos
    q, k = F.relu(q) + 1e-6, F.relu(k) + 1e-6
    s = F.softplus(m.scale_param)
    q, k = q / s, k / s
    qn, kn = q.norm(dim=-1, keepdim=True), k.norm(dim=-1, keepdim=True)
    q, k = q**3, k**3
    q, k = q / q.norm(dim=-1, keepdim=True) * qn, k / k.norm(dim=-1, keepdim=True) * kn
    q, k, v = (u.reshape(2, n, heads, -1).permute(0, 2, 1, 3) for u in (q, k, v))
    z = 1 / (q @ k.mean(dim=-2, keepdim=True).transpose(-2, -1) + 1e-6)
    o = q @ ((k.transpose(-2, -1) * n**-0.5) @ (v * n**-0.5)) * z
    o = o.transpose(1, 2).reshape(2, n, c)
    o = o + m.dwc(v.reshape(2 * heads, side, side, -1).permute(0, 3, 1, 2)).reshape(2, c, n).permute(0, 2, 1)
    official = x + m.proj(o).transpose(1, 2).reshape_as(x)
    # equal up to the two places where they differ: ReLU + 1e-6 and the ε of the normaliser
    torch.testing.assert_close(m(x), official, rtol=1e-4, atol=1e-5)


def official_forward(m, x):
    """The official FocusedLinearAttention.forward (after e205a01), re-typed, on a square window,
    with ``m``'s weights: ReLU + 1e-6, softplus scale, f_p over all C, ``q·mean(k) + 1e-6``."""
    b, c, side, _ = x.shape
    n, heads = side * side, m.heads
    t = x.flatten(2).transpose(1, 2)
    q, k, v = m.qkv(t).reshape(b, n, 3, c).permute(2, 0, 1, 3).unbind(0)
    k = k + m.pos
    q, k = F.relu(q) + 1e-6, F.relu(k) + 1e-6
    s = F.softplus(m.scale_param)
    q, k = q / s, k / s
    qn, kn = q.norm(dim=-1, keepdim=True), k.norm(dim=-1, keepdim=True)
    q, k = q ** m.focusing_factor, k ** m.focusing_factor
    q, k = q / q.norm(dim=-1, keepdim=True) * qn, k / k.norm(dim=-1, keepdim=True) * kn
    q, k, v = (u.reshape(b, n, heads, -1).permute(0, 2, 1, 3) for u in (q, k, v))
    z = 1 / (q @ k.mean(dim=-2, keepdim=True).transpose(-2, -1) + 1e-6)
    o = q @ ((k.transpose(-2, -1) * n**-0.5) @ (v * n**-0.5)) * z
    o = o.transpose(1, 2).reshape(b, n, c)
    o = o + m.dwc(v.reshape(b * heads, side, side, -1).permute(0, 3, 1, 2)).reshape(b, c, n).permute(0, 2, 1)
    return x + m.proj(o).transpose(1, 2).reshape_as(x)


def test_official_eps_placement_equals_the_official_forward():
    """eps_placement="official" gives the official outputs within 1e-6 (float64), including the rows
    whose q·Σk is small, where the default placement differs from them."""
    c, heads, side = 8, 2, 4
    kw = dict(heads=heads, scale="softplus", norm="all", key_position=(side, side))
    official_m = _random(FocusedLinearAttention2d(c, eps_placement="official", **kw)).double()
    guard_m = FocusedLinearAttention2d(c, **kw).double()
    guard_m.load_state_dict(official_m.state_dict())
    x = torch.randn(8, c, side, side, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        official = official_forward(official_m, x)
        torch.testing.assert_close(official_m(x), official, rtol=0, atol=1e-6)
        assert (guard_m(x) - official).abs().max() > 1e-3  # the default does not: this test can fail


def test_official_eps_placement_attention_is_what_forward_applies():
    m = _random(FocusedLinearAttention2d(8, heads=4, kernel_size=None, eps_placement="official")).double()
    x = torch.randn(2, 8, 3, 5, dtype=torch.float64)
    a = m.attention(x)
    _, _, v = m._features(x)
    o = (a @ v).transpose(1, 2).reshape(2, 15, 8)
    torch.testing.assert_close(m(x), x + m.proj(o).transpose(1, 2).reshape_as(x))
    assert "eps_placement='official'" in repr(m)


@pytest.mark.parametrize(
    "c, heads, side, batch, rows, largest",
    [(32, 2, 12, 8, (0.0, 0.0), (0.0, 2e-4)),  # d = 16: no row, at most 1.2e-4
     (96, 3, 56, 2, (0.0, 0.0), (0.0, 2e-5)),  # d = 32: no row, at most 1e-5
     (32, 4, 12, 8, (0.004, 0.012), (0.2, 0.5)),  # d = 8: 0.8 % of the rows, up to 0.34
     (32, 8, 12, 8, (0.06, 0.10), (0.4, 0.7))],  # d = 4: 8 %, up to 0.55
)
def test_the_measured_effect_of_the_eps_placement(c, heads, side, batch, rows, largest):
    """The docstring's figures: the (query, head) rows where the official N·ε exceeds 1 % of q·Σk,
    and the largest output difference between the two placements (norm="all", p = 3, softplus
    scale, no DWC, W^O = I, the module's initialisation, N(0, 1) inputs, float64)."""
    ms = {}
    for place in ("guard", "official"):
        torch.manual_seed(1)
        ms[place] = FocusedLinearAttention2d(c, heads=heads, kernel_size=None, norm="all", scale="softplus",
                                             eps_placement=place).double()
        with torch.no_grad():
            ms[place].proj.weight.copy_(torch.eye(c))
            ms[place].proj.bias.zero_()
    ms["official"].load_state_dict(ms["guard"].state_dict())
    torch.manual_seed(3)
    x = torch.randn(batch, c, side, side, dtype=torch.float64)
    with torch.no_grad():
        q, k, _ = ms["official"]._features(x)
        small = (side * side * 1e-6 > 0.01 * (q @ k.sum(-2, keepdim=True).transpose(-2, -1))).double().mean()
        diff = (ms["official"](x) - ms["guard"](x)).abs().max()
    assert rows[0] <= small <= rows[1] and largest[0] <= diff <= largest[1]


# ---------------------------------------------------------------- the plug-in


def test_identity_at_initialisation_and_learns():
    m = attncourse.create("flatten", 64)
    x = torch.randn(2, 64, 6, 5, requires_grad=True)
    y = m(x)
    assert torch.equal(y, x)
    y.square().sum().backward()
    assert m.proj.weight.grad.abs().sum() > 0
    assert torch.equal(FocusedLinearAttention2d(16, heads=2, kernel_size=None, scale="softplus")(x[:, :16]), x[:, :16])


def flatten_parameters(c, heads, k=5, bias=True, scale=None, key_position=None):
    d = c // heads
    n = 4 * c * c + (4 * c if bias else 0)
    n += 0 if k is None else d * k * k + d
    n += c if scale == "softplus" else 0
    n += 0 if key_position is None else key_position[0] * key_position[1] * c
    return n


@pytest.mark.parametrize("c, heads", [(64, 8), (32, 4), (96, 3), (256, 1), (8, 2)])
def test_parameter_count(c, heads):
    assert count_parameters(FocusedLinearAttention2d(c, heads=heads)) == flatten_parameters(c, heads)
    assert count_parameters(FocusedLinearAttention2d(c, heads=heads)) == 4 * c * c + 4 * c + 26 * (c // heads)
    for kw in [dict(bias=False), dict(k=None), dict(k=3), dict(scale="softplus"), dict(key_position=(7, 7))]:
        mk = {("kernel_size" if key == "k" else key): v for key, v in kw.items()}
        assert count_parameters(FocusedLinearAttention2d(c, heads=heads, **mk)) == flatten_parameters(c, heads, **kw)
    # the protocol's variants: C = 32, 2 heads of 16
    assert count_parameters(FocusedLinearAttention2d(32, heads=2)) == 4 * 32 * 32 + 4 * 32 + 16 * 26 == 4640
    assert count_parameters(FocusedLinearAttention2d(32, heads=2, kernel_size=None)) == 4224


def test_flops():
    c, heads, h, w = 16, 2, 6, 5
    n, d = h * w, c // heads
    m = FocusedLinearAttention2d(c, heads=heads)
    x = torch.randn(1, c, h, w)
    # projections 4NC², state φ(K)ᵀV and its read-out φ(Q)S: 2·N·d·d per head, normaliser φ(Q)·Z: N·d per
    # head, the DWC N·d·k² per head (multiply-adds; FlopCounterMode counts 2 each)
    macs = 4 * n * c * c + heads * (2 * n * d * d + n * d) + heads * n * d * 25
    assert count_flops(m, x) == 2 * macs
    assert count_flops(FocusedLinearAttention2d(c, heads=heads, kernel_size=None), x) == 2 * (macs - heads * n * d * 25)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_at_65536_positions_is_finite(dtype):
    torch.manual_seed(0)
    m = FocusedLinearAttention2d(8, heads=2)
    torch.nn.init.normal_(m.proj.weight)
    m = m.to(dtype)
    x = (torch.randn(1, 8, 256, 256) * 20).to(dtype)
    y = m(x)
    assert y.dtype == dtype and torch.isfinite(y).all()
    ref = FocusedLinearAttention2d(8, heads=2)
    ref.load_state_dict({k: v.float() for k, v in m.state_dict().items()})
    yr = ref(x.float())
    assert (y.float() - yr).abs().max() < 0.05 * yr.abs().max()  # close to float32, relative to the scale


@pytest.mark.parametrize(
    "kwargs, words",
    [
        (dict(heads=3), ["FocusedLinearAttention2d", "channels=64", "heads=3"]),
        (dict(heads=0), ["FocusedLinearAttention2d", "heads"]),
        (dict(focusing_factor=0.5), ["FocusedLinearAttention2d", "focusing_factor"]),
        (dict(focusing_factor=True), ["FocusedLinearAttention2d", "focusing_factor"]),
        (dict(kernel_size=4), ["FocusedLinearAttention2d", "odd kernel_size"]),
        (dict(kernel_size=0), ["FocusedLinearAttention2d", "kernel_size"]),
        (dict(scale="learned"), ["FocusedLinearAttention2d", "scale"]),
        (dict(norm="token"), ["FocusedLinearAttention2d", "norm"]),
        (dict(key_position=7), ["FocusedLinearAttention2d", "key_position"]),
        (dict(key_position=(7, 0)), ["FocusedLinearAttention2d", "key_position"]),
        (dict(eps=0), ["FocusedLinearAttention2d", "eps"]),
        (dict(bias="yes"), ["FocusedLinearAttention2d", "bias"]),
    ],
)
def test_impossible_hyperparameters(kwargs, words):
    with pytest.raises(ValueError) as info:
        FocusedLinearAttention2d(64, **kwargs)
    for w in words:
        assert w in str(info.value)


def test_key_position_fixes_the_map_size():
    m = FocusedLinearAttention2d(16, heads=2, key_position=(4, 6))
    assert m(torch.randn(1, 16, 4, 6)).shape == (1, 16, 4, 6)
    with pytest.raises(ValueError, match=r"FocusedLinearAttention2d.*key_position=\(4, 6\).*6x4"):
        m(torch.randn(1, 16, 6, 4))


@pytest.mark.parametrize("kwargs", [dict(), dict(kernel_size=None, scale="softplus", norm="all")])
def test_gradcheck(kwargs):
    m = _random(FocusedLinearAttention2d(4, heads=2, **kwargs).double())
    x = torch.randn(1, 4, 2, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(m, (x,))
