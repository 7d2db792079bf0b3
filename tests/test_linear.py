"""Linear attention (Katharopoulos et al., ICML 2020) on a feature map: LinearAttention2d against a
naive N x N derivation of eqs. (3)-(7), the causal forms against each other, and the numerical care
(ε, float32 accumulation for float16/bfloat16 inputs at N = 65,536); the course's sine position
option (not the paper's) against the same derivation with DETR's code added to the queries' and
keys' tokens, and its deployment (torch.export, torch.compile fullgraph, ONNX)."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch.export import Dim

import attncourse
from attncourse.cost import count_parameters
from attncourse.linear.kernel import elu_feature_map, kernel_attention, kernel_weights
from attncourse.linear.linear import LinearAttention2d
from attncourse.selfattn.mhsa import MultiHeadSelfAttention2d

from module_checks import assert_onnx_equals_eager, naive_sine

PHI = {"elu": lambda t: F.elu(t) + 1, "relu": F.relu}

# ---------------------------------------------------------------- the naive derivation


def naive_linear(x, w, b, wo, bo, heads, feature_map="elu", eps=1e-6, normalise=True, pos=None):
    """x + Concat_i(V'_i) W^O with V'_n = Σ_m φ(q_n)·φ(k_m) v_m / (Σ_m φ(q_n)·φ(k_m) + ε): one image,
    one head, one query at a time, the N x N similarities written out (eqs. (3)-(4)). ``pos``: a
    position code (N, C) added to the tokens that make the queries and keys, not the values."""
    B, C, H, W = x.shape
    d, phi = C // heads, PHI[feature_map]
    out = x.clone()
    for bi in range(B):
        t = x[bi].reshape(C, H * W).T  # tokens (N, C), positions in (h w) order
        tqk = t if pos is None else t + pos  # DETR: the code goes into queries and keys, not values
        qk = tqk @ w[: 2 * C].T + b[: 2 * C]
        v_all = t @ w[2 * C :].T + b[2 * C :]
        heads_out = []
        for i in range(heads):
            sl = slice(i * d, (i + 1) * d)
            q, k, v = phi(qk[:, sl]), phi(qk[:, C:][:, sl]), v_all[:, sl]
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


@pytest.mark.parametrize("heads", [1, 2, 4])
@pytest.mark.parametrize("feature_map", ["elu", "relu"])
@pytest.mark.parametrize("bias", [True, False])
def test_with_sine_equals_the_naive_derivation_with_the_code_on_queries_and_keys(heads, feature_map, bias):
    m = _random(LinearAttention2d(8, heads=heads, bias=bias, feature_map=feature_map, position="sine").double())
    x = torch.randn(2, 8, 3, 5, dtype=torch.float64)
    pos = naive_sine(3, 5, 8)
    torch.testing.assert_close(m(x), naive_linear(x, *_weights(m), heads, feature_map, pos=pos))
    # and not the derivation without the code, nor with the code on the values too
    assert not torch.allclose(m(x), naive_linear(x, *_weights(m), heads, feature_map))
    with_values = naive_linear(x, *_weights(m), heads, feature_map, pos=pos)
    assert not torch.allclose(with_values, _naive_code_everywhere(x, m, heads, feature_map, pos))


def _naive_code_everywhere(x, m, heads, feature_map, pos):
    """The wrong placement: the code added to the input itself, so it reaches the values too."""
    B, C, H, W = x.shape
    xp = x + pos.T.reshape(1, C, H, W)
    return naive_linear(xp, *_weights(m), heads, feature_map) - pos.T.reshape(1, C, H, W)


def test_default_position_is_none_and_unchanged():
    torch.manual_seed(0)
    a = LinearAttention2d(16, heads=2)
    torch.manual_seed(0)
    b = LinearAttention2d(16, heads=2, position=None)
    assert a.position is None and "position=None" in repr(a)
    _random(a.double()), _random(b.double())
    x = torch.randn(2, 16, 4, 3, dtype=torch.float64)
    assert torch.equal(a(x), b(x)) and torch.equal(a.attention(x), b.attention(x))
    torch.testing.assert_close(a(x), naive_linear(x, *_weights(a), 2))
    assert "position='sine'" in repr(LinearAttention2d(16, position="sine"))


def test_the_naive_derivation_can_fail():
    m = _random(LinearAttention2d(8, heads=2).double())
    x = torch.randn(1, 8, 3, 4, dtype=torch.float64)
    ref = naive_linear(x, *_weights(m), 2)
    assert not torch.allclose(naive_linear(x, *_weights(m), 2, feature_map="relu"), ref)  # another φ
    assert not torch.allclose(naive_linear(x, *_weights(m), 4), ref)  # wrong head split
    assert not torch.allclose(naive_linear(x, *_weights(m), 2, normalise=False), ref)  # no normaliser
    assert not torch.allclose(m(x), naive_linear(x, *_weights(m), 1))


@pytest.mark.parametrize("position", [None, "sine"])
def test_attention_is_what_forward_applies(position):
    m = _random(LinearAttention2d(16, heads=4, position=position).double())
    x = torch.randn(2, 16, 4, 7, dtype=torch.float64)
    a = m.attention(x)
    assert a.shape == (2, 4, 28, 28) and (a >= 0).all()
    torch.testing.assert_close(a.sum(-1), torch.ones(2, 4, 28, dtype=torch.float64))
    _, _, v = m._features(x)  # (B, N, h, d)
    o = (a @ v.transpose(1, 2)).transpose(1, 2).reshape(2, 28, 16)  # Concat(heads)
    torch.testing.assert_close(m(x), x + m.proj(o).transpose(1, 2).reshape_as(x))


@pytest.mark.parametrize("position", [None, "sine"])
def test_identity_at_init_and_gradient_reaches_w_o(position):
    m = attncourse.create("linear", 32, position=position)
    assert isinstance(m, LinearAttention2d)
    x = torch.randn(2, 32, 5, 7, requires_grad=True)
    y = m(x)
    assert torch.equal(y, x)
    y.square().sum().backward()
    assert m.proj.weight.grad.abs().sum() > 0 and m.qkv.weight.grad.abs().sum() == 0


@pytest.mark.parametrize("feature_map", ["elu", "relu"])
@pytest.mark.parametrize("position", [None, "sine"])
def test_gradcheck(feature_map, position):
    m = _random(LinearAttention2d(4, heads=2, feature_map=feature_map, position=position).double(), seed=3)
    x = torch.randn(1, 4, 2, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(m, (x,), eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("c", [8, 16, 32, 64, 512])
def test_parameter_formula(c):
    for h in (1, 2, 8):
        assert count_parameters(LinearAttention2d(c, heads=h)) == 4 * c * c + 4 * c
        assert count_parameters(LinearAttention2d(c, heads=h, bias=False)) == 4 * c * c
        assert count_parameters(LinearAttention2d(c, heads=h, position="sine")) == 4 * c * c + 4 * c
    # the same count as Part III's MHSA: linear attention adds no parameter
    assert count_parameters(LinearAttention2d(c)) == count_parameters(attncourse.create("mhsa", c))


# ---------------------------------------------------------------- positions (the course's option)


def _shuffle(perm):
    return lambda t: t.flatten(2)[:, :, perm].reshape_as(t)


def test_without_positions_permuting_the_positions_permutes_the_output():
    m = _random(LinearAttention2d(16, heads=4).double())
    x = torch.randn(2, 16, 5, 6, dtype=torch.float64)
    shuffle = _shuffle(torch.randperm(30, generator=torch.Generator().manual_seed(1)))
    torch.testing.assert_close(m(shuffle(x)), shuffle(m(x)))
    perm = torch.randperm(30, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(m.attention(shuffle(x)), m.attention(x)[:, :, perm][:, :, :, perm])


def test_with_sine_permuting_no_longer_permutes_the_output():
    m = _random(LinearAttention2d(16, heads=4, position="sine").double())
    x = torch.randn(2, 16, 5, 6, dtype=torch.float64)
    shuffle = _shuffle(torch.randperm(30, generator=torch.Generator().manual_seed(1)))
    gap = (m(shuffle(x)) - shuffle(m(x))).abs().max().item()
    assert gap > 0.1 * m(x).abs().max().item()  # not rounding: a change of the order of the output


def test_sine_adds_to_q_and_k_as_mhsa_does():
    """The same P W^Q, P W^K as MHSA's position="sine": with the same qkv, the pre-feature queries
    and keys of the two modules agree."""
    lin = _random(LinearAttention2d(16, heads=4, position="sine", feature_map="relu").double())
    mh = MultiHeadSelfAttention2d(16, heads=4, position="sine").double()
    mh.load_state_dict(lin.state_dict(), strict=False)
    x = torch.randn(2, 16, 3, 5, dtype=torch.float64)
    q, k, v = mh._qkv(x)  # (B, h, N, d)
    lq, lk, lv = lin._features(x)  # (B, N, h, d), after ReLU
    torch.testing.assert_close(lq, F.relu(q).transpose(1, 2))
    torch.testing.assert_close(lk, F.relu(k).transpose(1, 2))
    torch.testing.assert_close(lv, v.transpose(1, 2))


def test_export_with_sine_keeps_b_h_and_w_dynamic():
    m = _random(LinearAttention2d(16, heads=2, position="sine")).eval()
    x = torch.randn(2, 16, 6, 5)
    dims = {0: Dim("B", min=1, max=64), 2: Dim("H", min=1, max=256), 3: Dim("W", min=1, max=256)}
    ep = torch.export.export(m, (x,), dynamic_shapes=(dims,))
    for shape in [(3, 16, 9, 4), (1, 16, 1, 1)]:
        y = torch.randn(shape)
        torch.testing.assert_close(ep.module()(y), m(y))


def test_compile_fullgraph_with_sine_one_graph_for_two_shapes():
    m = _random(LinearAttention2d(16, heads=2, position="sine")).eval()
    graphs = []

    def eager_counting(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    torch._dynamo.reset()
    compiled = torch.compile(m, fullgraph=True, backend=eager_counting, dynamic=True)
    for shape in [(2, 16, 6, 5), (3, 16, 9, 4)]:
        y = torch.randn(shape)
        torch.testing.assert_close(compiled(y), m(y))
    assert len(graphs) == 1


def test_onnx_with_sine_keeps_b_h_and_w_dynamic(tmp_path):
    m = _random(LinearAttention2d(16, heads=2, position="sine")).eval()
    assert_onnx_equals_eager(m, torch.randn(2, 16, 6, 5), {0: Dim("B"), 2: Dim("H"), 3: Dim("W")},
                             [(3, 16, 9, 4), (1, 16, 1, 1)], tmp_path / "linear_sine.onnx")


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


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_inputs_with_sine(dtype):
    """P and P W run in float32 with φ: finite, and close to float32, on a map with rows past 256
    (where bfloat16 positions would round to one another)."""
    torch.manual_seed(0)
    m = LinearAttention2d(8, heads=2, position="sine")
    with torch.no_grad():
        m.proj.weight.copy_(torch.eye(8))  # the attention output itself comes out
        m.proj.bias.zero_()
    x = torch.randn(1, 8, 320, 12)
    with torch.no_grad():
        ref = m(x) - x
        y = m.to(dtype)(x.to(dtype))
    assert y.dtype == dtype and torch.isfinite(y).all()
    branch = y.float() - x.to(dtype).float()
    # measured: float16 max 0.0016, bfloat16 max 0.013 (the branch reaches ~0.23)
    assert (branch - ref).abs().max() < (0.01 if dtype == torch.float16 else 0.05)


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
        ({"position": "learned"}, "position"),
        ({"position": "Sine"}, "position"),
        ({"position": "relative"}, "position"),  # MHSA's option, not this module's
    ],
)
def test_bad_hyperparameters(kwargs, fragment):
    with pytest.raises(ValueError, match="LinearAttention2d") as err:
        LinearAttention2d(16, **kwargs)
    assert fragment in str(err.value)


def test_sine_needs_channels_divisible_by_four():
    with pytest.raises(ValueError, match="LinearAttention2d.*divisible by 4"):
        LinearAttention2d(6, heads=2, position="sine")
    LinearAttention2d(6, heads=2)  # without the code, 6 channels are fine


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

