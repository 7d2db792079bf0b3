"""Linear attention (Katharopoulos et al., ICML 2020) on a feature map: LinearAttention2d against a
naive N x N derivation of eqs. (3)-(7), the causal forms against each other, and the numerical care
(ε, float32 accumulation for float16/bfloat16 inputs at N = 65,536)."""

import math

import pytest
import torch
import torch.nn.functional as F

import attncourse
from attncourse.cost import count_parameters
from attncourse.linear.kernel import elu_feature_map, kernel_attention, kernel_weights
from attncourse.linear.linear import LinearAttention2d

PHI = {"elu": lambda t: F.elu(t) + 1, "relu": F.relu}

# ---------------------------------------------------------------- the naive derivation


def naive_linear(x, w, b, wo, bo, heads, feature_map="elu", eps=1e-6, normalise=True):
    """x + Concat_i(V'_i) W^O with V'_n = Σ_m φ(q_n)·φ(k_m) v_m / (Σ_m φ(q_n)·φ(k_m) + ε): one image,
    one head, one query at a time, the N x N similarities written out (eqs. (3)-(4))."""
    B, C, H, W = x.shape
    d, phi = C // heads, PHI[feature_map]
    out = x.clone()
    for bi in range(B):
        t = x[bi].reshape(C, H * W).T  # tokens (N, C), positions in (h w) order
        qkv = t @ w.T + b
        heads_out = []
        for i in range(heads):
            sl = slice(i * d, (i + 1) * d)
            q, k, v = phi(qkv[:, sl]), phi(qkv[:, C:][:, sl]), qkv[:, 2 * C :][:, sl]
            rows = []
            for n in range(H * W):
                sim = torch.stack([q[n] @ k[m] for m in range(H * W)])  # sim(Q_n, K_m) = φ(Q_n)ᵀφ(K_m)
                rows.append((sim @ v) / (sim.sum() + eps) if normalise else sim @ v)
            heads_out.append(torch.stack(rows))
        out[bi] += (torch.cat(heads_out, dim=1) @ wo.T + bo).T.reshape(C, H, W)
    return out


def _random(m, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.5)
    return m


def _weights(m):
    c = m.channels
    zero = torch.zeros(3 * c, dtype=torch.float64)
    b = m.qkv.bias.detach() if m.bias else zero
    bo = m.proj.bias.detach() if m.bias else zero[:c]
    return m.qkv.weight.detach(), b, m.proj.weight.detach(), bo


def masked_quadratic(q, k, v, eps=1e-6):
    """Causal kernel attention with the N x N similarities and a lower-triangular mask (j <= i)."""
    sim = (q @ k.transpose(-2, -1)).tril()
    return (sim @ v) / (sim.sum(-1, keepdim=True) + eps)


def running_sums(q, k, v, eps=1e-6):
    """The RNN form: S_i = S_{i-1} + φ(K_i)V_iᵀ, Z_i = Z_{i-1} + φ(K_i), one step at a time."""
    s = torch.zeros(*q.shape[:-2], q.shape[-1], v.shape[-1], dtype=q.dtype)
    z = torch.zeros(*q.shape[:-2], q.shape[-1], dtype=q.dtype)
    out = []
    for i in range(q.shape[-2]):
        s = s + k[..., i, :, None] * v[..., i, None, :]
        z = z + k[..., i, :]
        out.append((q[..., i, None, :] @ s)[..., 0, :] / ((q[..., i, :] * z).sum(-1, keepdim=True) + eps))
    return torch.stack(out, dim=-2)


# ---------------------------------------------------------------- equal to the derivation


@pytest.mark.parametrize("heads", [1, 2, 4])
@pytest.mark.parametrize("feature_map", ["elu", "relu"])
@pytest.mark.parametrize("bias", [True, False])
def test_equals_the_naive_derivation(heads, feature_map, bias):
    m = _random(LinearAttention2d(8, heads=heads, bias=bias, feature_map=feature_map).double())
    x = torch.randn(2, 8, 3, 5, dtype=torch.float64)
    torch.testing.assert_close(m(x), naive_linear(x, *_weights(m), heads, feature_map))


def test_the_naive_derivation_can_fail():
    m = _random(LinearAttention2d(8, heads=2).double())
    x = torch.randn(1, 8, 3, 4, dtype=torch.float64)
    ref = naive_linear(x, *_weights(m), 2)
    assert not torch.allclose(naive_linear(x, *_weights(m), 2, feature_map="relu"), ref)  # another φ
    assert not torch.allclose(naive_linear(x, *_weights(m), 4), ref)  # wrong head split
    assert not torch.allclose(naive_linear(x, *_weights(m), 2, normalise=False), ref)  # no normaliser
    assert not torch.allclose(m(x), naive_linear(x, *_weights(m), 1))


def test_attention_is_what_forward_applies():
    m = _random(LinearAttention2d(16, heads=4).double())
    x = torch.randn(2, 16, 4, 7, dtype=torch.float64)
    a = m.attention(x)
    assert a.shape == (2, 4, 28, 28) and (a >= 0).all()
    torch.testing.assert_close(a.sum(-1), torch.ones(2, 4, 28, dtype=torch.float64))
    _, _, v = m._features(x)  # (B, N, h, d)
    o = (a @ v.transpose(1, 2)).transpose(1, 2).reshape(2, 28, 16)  # Concat(heads)
    torch.testing.assert_close(m(x), x + m.proj(o).transpose(1, 2).reshape_as(x))


def test_identity_at_init_and_gradient_reaches_w_o():
    m = attncourse.create("linear", 32)
    assert isinstance(m, LinearAttention2d)
    x = torch.randn(2, 32, 5, 7, requires_grad=True)
    y = m(x)
    assert torch.equal(y, x)
    y.square().sum().backward()
    assert m.proj.weight.grad.abs().sum() > 0 and m.qkv.weight.grad.abs().sum() == 0


@pytest.mark.parametrize("feature_map", ["elu", "relu"])
def test_gradcheck(feature_map):
    m = _random(LinearAttention2d(4, heads=2, feature_map=feature_map).double(), seed=3)
    x = torch.randn(1, 4, 2, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(m, (x,), eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("c", [8, 16, 32, 64, 512])
def test_parameter_formula(c):
    for h in (1, 2, 8):
        assert count_parameters(LinearAttention2d(c, heads=h)) == 4 * c * c + 4 * c
        assert count_parameters(LinearAttention2d(c, heads=h, bias=False)) == 4 * c * c
    # the same count as Part III's MHSA: linear attention adds no parameter
    assert count_parameters(LinearAttention2d(c)) == count_parameters(attncourse.create("mhsa", c))


# ---------------------------------------------------------------- causal forms


def test_causal_forms_agree():
    g = torch.Generator().manual_seed(0)
    q, k = (elu_feature_map(torch.randn(2, 3, 11, 4, generator=g, dtype=torch.float64)) for _ in range(2))
    v = torch.randn(2, 3, 11, 5, generator=g, dtype=torch.float64)
    ref = masked_quadratic(q, k, v)
    torch.testing.assert_close(kernel_attention(q, k, v, causal=True), ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(running_sums(q, k, v), ref, rtol=1e-12, atol=1e-12)
    # and the causal form is not the non-causal one, except for the last query, which sees all keys
    full = kernel_attention(q, k, v)
    assert not torch.allclose(ref[..., :-1, :], full[..., :-1, :])
    torch.testing.assert_close(ref[..., -1, :], full[..., -1, :])


def test_non_causal_equals_kernel_weights():
    g = torch.Generator().manual_seed(1)
    q, k = (F.relu(torch.randn(2, 9, 4, generator=g, dtype=torch.float64)) for _ in range(2))
    v = torch.randn(2, 9, 3, generator=g, dtype=torch.float64)
    torch.testing.assert_close(kernel_attention(q, k, v), kernel_weights(q, k) @ v)


# ---------------------------------------------------------------- numerical care


def test_eps_guards_all_zero_relu_features():
    m = _random(LinearAttention2d(4, heads=1, feature_map="relu").double())
    with torch.no_grad():  # the query of every position is -1 in every channel: ReLU(Q_n) = 0
        m.qkv.weight[:4] = 0
        m.qkv.bias[:4] = -1
    x = torch.randn(1, 4, 3, 3, dtype=torch.float64)
    q, k, v = (t.transpose(1, 2) for t in m._features(x))  # (B, h, N, d)
    assert (q == 0).all()
    torch.testing.assert_close(kernel_attention(q, k, v), torch.zeros_like(v))  # 0 / ε = 0
    assert kernel_attention(q, k, v, eps=0.0).isnan().all()  # 0 / 0 without ε
    y = m(x)
    assert torch.isfinite(y).all()
    # each query's attention output is 0, so the module returns x + b^O
    torch.testing.assert_close(y, x + m.proj.bias.view(1, 4, 1, 1))


def _big(dtype, heads):
    torch.manual_seed(0)
    m = LinearAttention2d(8, heads=heads)
    with torch.no_grad():
        m.proj.weight.copy_(torch.eye(8))  # the attention output itself comes out, not x + 0
        m.proj.bias.zero_()
    x = torch.randn(1, 8, 256, 256)  # N = 65,536 positions
    return m, x


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("heads", [1, 2])
def test_half_inputs_at_65536_positions(dtype, heads):
    m, x = _big(dtype, heads)
    with torch.no_grad():
        ref = m(x) - x  # float32: the attention branch
        y = m.to(dtype)(x.to(dtype))
    assert y.dtype == dtype and torch.isfinite(y).all()
    branch = y.float() - x.to(dtype).float()
    # the branch is a convex combination of values of size ~1; half rounding of x (~1e-2) dominates
    # measured: float16 max 0.002, mean 1.5e-4; bfloat16 max 0.016, mean 1.2e-3 (the branch reaches ~0.2)
    assert (branch - ref).abs().max() < (0.01 if dtype == torch.float16 else 0.05)
    assert (branch - ref).abs().mean() < (1e-3 if dtype == torch.float16 else 5e-3)


def test_float16_sum_of_features_overflows_without_float32():
    _, x = _big(torch.float16, 1)
    k = elu_feature_map(x[0].flatten(1).T.to(torch.float16))  # (65,536, 8), φ(x) ~ 1 on average
    assert torch.isinf(k.sum(0, dtype=torch.float16)).any()  # Σφ(K) in float16: > 65,504
    assert torch.isfinite(k.sum(0, dtype=torch.float32)).all()


def test_half_elu_plus_one_rounds_to_zero():
    # -1 + e^x rounds to -1 once e^x is below half the spacing of the numbers just under 1:
    # 2^-9 in bfloat16 (x < ln 2^-9 = -6.24), 2^-12 in float16 (x < -8.32); float32 keeps it > 0
    x = torch.tensor([-6.0, -6.5, -8.0, -8.5, -10.0])
    assert (elu_feature_map(x) > 0).all()
    assert elu_feature_map(x.bfloat16()).eq(0).tolist() == [False, True, True, True, True]
    assert elu_feature_map(x.half()).eq(0).tolist() == [False, False, False, True, True]


# ---------------------------------------------------------------- bad hyperparameters


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"heads": 3}, "heads"),
        ({"heads": 0}, "heads"),
        ({"feature_map": "softmax"}, "feature_map"),
        ({"eps": 0.0}, "eps"),
        ({"eps": -1e-6}, "eps"),
        ({"bias": "yes"}, "bias"),
    ],
)
def test_bad_hyperparameters(kwargs, fragment):
    with pytest.raises(ValueError, match="LinearAttention2d") as err:
        LinearAttention2d(16, **kwargs)
    assert fragment in str(err.value)


def test_bad_input():
    m = LinearAttention2d(8, heads=2)
    with pytest.raises(ValueError, match="LinearAttention2d"):
        m(torch.randn(1, 4, 3, 3))
    assert math.isclose(m.eps, 1e-6)


def test_kernel_attention_heads_is_kernel_attention_in_the_projections_layout():
    from attncourse.linear.kernel import kernel_attention_heads

    g = torch.Generator().manual_seed(5)
    q, k = (torch.rand(2, 30, 3, 4, generator=g, dtype=torch.float64) for _ in range(2))
    k = k[:, :20]
    v = torch.randn(2, 20, 3, 5, generator=g, dtype=torch.float64)
    want = kernel_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)).transpose(1, 2)
    torch.testing.assert_close(kernel_attention_heads(q, k, v), want)
    half = kernel_attention_heads(q.half(), k.half(), v.half())
    assert half.dtype == torch.float16 and torch.isfinite(half).all()


def test_row_normalise_refuses_what_has_no_rows():
    from attncourse.linear.kernel import RowNormalise

    with pytest.raises(ValueError, match="RowNormalise.*1-D"):
        RowNormalise()(torch.ones(5))
    with pytest.raises(ValueError, match="RowNormalise.*eps"):
        RowNormalise(eps=0.0)


def test_larger_projections_take_elu_weights_to_the_relu_kernel_s():
    """φ(s x) / s → ReLU(x): elu + 1 weights tend to the ReLU kernel's as the scale s grows, and
    those do not depend on s (softmax's, by contrast, sharpen without bound)."""
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(2, 144, 16, generator=g, dtype=torch.float64).unbind(0)
    relu = kernel_weights(F.relu(q), F.relu(k), eps=0.0)
    gaps = [(kernel_weights(elu_feature_map(s * q), elu_feature_map(s * k), eps=0.0) - relu).abs().max().item()
            for s in (1, 16, 256, 4096)]
    assert all(a > b for a, b in zip(gaps, gaps[1:])) and gaps[-1] < 1e-3 < gaps[0]
    for s in (0.01, 1.0, 100.0):
        torch.testing.assert_close(kernel_weights(F.relu(s * q), F.relu(s * k), eps=0.0), relu)


def test_relu_feature_map_is_flatten_without_focusing_and_dwc():
    from attncourse.linear.flatten import FocusedLinearAttention2d

    lin = LinearAttention2d(16, heads=2, feature_map="relu").double()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in lin.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64) * 0.5)
    fla = FocusedLinearAttention2d(16, heads=2, focusing_factor=1, kernel_size=None).double()
    fla.load_state_dict(lin.state_dict())
    x = torch.randn(2, 16, 5, 7, dtype=torch.float64)
    torch.testing.assert_close(fla(x), lin(x))
    torch.testing.assert_close(fla.attention(x), lin.attention(x))

