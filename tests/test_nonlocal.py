"""The non-local block against the paper's equations (Wang et al., CVPR 2018) and the official code's options."""

import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from einops import rearrange
from torch.export import Dim
from torch.nn.attention import SDPBackend, sdpa_kernel

import attncourse
from attncourse.cost import count_flops, count_parameters, peak_memory
from attncourse.plot import capture_gates
from attncourse.selfattn.nonlocal_ import PAIRWISE, SOFTMAX_FORMS, NonLocalBlock
from module_checks import randomised

# every (pairwise, subsample, scale) the module accepts
OPTIONS = [
    (p, s, sc)
    for p, s, sc in itertools.product(PAIRWISE, [False, True], [False, True])
    if not (sc and p not in SOFTMAX_FORMS)
]


# ---------------------------------------------------------------- the naive derivation


def naive_keys(xb, subsample):
    """The positions j: every x_j in (h w) order, or each 2×2 window's max (ceil: a last odd row/column alone)."""
    C, H, W = xb.shape
    if not subsample:
        return [xb[:, i, j] for i in range(H) for j in range(W)]
    # a window that reaches past the map keeps the positions inside it
    return [xb[:, 2 * i : 2 * i + 2, 2 * j : 2 * j + 2].amax((1, 2)) for i in range((H + 1) // 2) for j in range((W + 1) // 2)]


def naive_nonlocal(x, m, *, training=False, pool_after_projections=False, divide_by_hw=False):
    """Eqs. (1)-(6) one query i and one key j at a time, with the weights of ``m``.

    The two flags are wrong variants for ``test_the_naive_reference_can_fail``: the paper's text
    pools after φ and g (the official code before them), and C(x) = H W instead of the number of keys.
    """
    B, C, H, W = x.shape
    lin = lambda layer, v: layer.weight @ v + layer.bias  # noqa: E731  (a 1×1 convolution at one position)
    scale = m.logit_scale
    y = torch.zeros(B, m.inner, H, W, dtype=x.dtype)
    for b in range(B):
        keys = naive_keys(x[b], m.subsample and not pool_after_projections)
        if pool_after_projections and m.subsample:  # max-pool of φ(x) and g(x) instead of φ, g of the pooled x
            proj = lambda layer: naive_keys(  # noqa: E731
                torch.stack([lin(layer, x[b, :, i, j]) for i in range(H) for j in range(W)], 1).view(-1, H, W), True
            )
            phis, gs = proj(m.phi), proj(m.g)
        else:
            phis = [lin(m.phi, xj) for xj in keys] if m.phi is not None else keys
            gs = [lin(m.g, xj) for xj in keys]  # g(x̂_j) = W_g x̂_j
        for i in range(H):
            for j in range(W):
                xi = x[b, :, i, j]
                theta_i = lin(m.theta, xi) if m.theta is not None else xi
                fs = []
                for phi_j in phis:
                    if m.pairwise == "gaussian":
                        f = torch.exp(scale * (xi @ phi_j))  # (2)
                    elif m.pairwise == "embedded_gaussian":
                        f = torch.exp(scale * (theta_i @ phi_j))  # (3)
                    elif m.pairwise == "dot_product":
                        f = theta_i @ phi_j  # (4)
                    else:
                        f = torch.relu(m.w_f @ torch.cat([theta_i, phi_j]))  # (5)
                    fs.append(f)
                if m.pairwise in SOFTMAX_FORMS:
                    c_x = sum(fs)  # C(x) = Σ_j f
                else:
                    c_x = H * W if divide_by_hw else len(fs)  # C(x) = N, the positions summed over
                y[b, :, i, j] = sum(f * g for f, g in zip(fs, gs)) / c_x  # (1)
    u = torch.einsum("cd,bdhw->bchw", m.w_z.weight, y) + m.w_z.bias[:, None, None]  # W_z y_i
    bn = m.bn
    if training:  # batch statistics over (B, H, W), biased variance
        mean, var = u.mean((0, 2, 3)), u.var((0, 2, 3), unbiased=False)
    else:
        mean, var = bn.running_mean, bn.running_var
    u = (u - mean[:, None, None]) / torch.sqrt(var[:, None, None] + bn.eps) * bn.weight[:, None, None] + bn.bias[:, None, None]
    return x + u  # (6)


def randomised(m, seed=0, std=0.4):
    """Random weights everywhere (BN weight too: otherwise the branch is 0), random running statistics; float64."""
    g = torch.Generator().manual_seed(seed)
    m = m.double()
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * std)
        m.bn.running_mean.copy_(torch.randn(m.channels, generator=g, dtype=torch.float64) * 0.1)
        m.bn.running_var.copy_(torch.rand(m.channels, generator=g, dtype=torch.float64) + 0.5)
    return m


def nonlocal_params(C, reduction=2, pairwise="embedded_gaussian"):
    d = C // reduction
    projections = 1 if pairwise == "gaussian" else 3  # g only, or θ, φ, g
    return projections * (C * d + d) + (d * C + C) + 2 * C + (2 * d if pairwise == "concatenation" else 0)


def n_keys(H, W, subsample):
    return math.ceil(H / 2) * math.ceil(W / 2) if subsample else H * W


# ---------------------------------------------------------------- equality with the equations


@pytest.mark.parametrize("pairwise, subsample, scale", OPTIONS)
@pytest.mark.parametrize("training", [False, True], ids=["eval", "train"])
def test_matches_the_naive_derivation(pairwise, subsample, scale, training):
    m = randomised(NonLocalBlock(8, pairwise=pairwise, subsample=subsample, scale=scale)).train(training)
    x = torch.randn(2, 8, 5, 6, dtype=torch.float64)
    torch.testing.assert_close(m(x), naive_nonlocal(x, m, training=training))


@pytest.mark.parametrize("pairwise", PAIRWISE)
@pytest.mark.parametrize("shape", [(1, 8, 3, 7), (2, 8, 1, 1), (2, 8, 1, 4), (1, 8, 4, 2)])
def test_matches_on_odd_and_tiny_sizes_with_subsampling(pairwise, shape):
    m = randomised(NonLocalBlock(8, pairwise=pairwise, subsample=True)).eval()
    x = torch.randn(shape, dtype=torch.float64)
    torch.testing.assert_close(m(x), naive_nonlocal(x, m))


def test_the_naive_reference_can_fail():
    """Plausible wrong variants must not match: the check is not vacuous."""
    x = torch.randn(2, 8, 4, 6, dtype=torch.float64)
    m = randomised(NonLocalBlock(8, subsample=True)).eval()
    out = m(x)
    assert not torch.allclose(out, naive_nonlocal(x, m, pool_after_projections=True))  # the paper's text: pool after φ, g
    dot = randomised(NonLocalBlock(8, pairwise="dot_product", subsample=True)).eval()
    assert not torch.allclose(dot(x), naive_nonlocal(x, dot, divide_by_hw=True))  # C(x) = H W, not the 6 keys
    scaled = randomised(NonLocalBlock(8, scale=True)).eval()
    plain = NonLocalBlock(8).double().eval()
    plain.load_state_dict(scaled.state_dict())
    assert not torch.allclose(scaled(x), plain(x))  # d^-1/2 changes the weights
    concat = randomised(NonLocalBlock(8, pairwise="concatenation")).eval()
    a = concat.attention(x)
    assert (a == 0).any() and (a >= 0).all()  # the ReLU of (5) is there: some f are cut to 0


def test_embedded_gaussian_is_self_attention():
    """The paper's remark: with (3), eq. (1) is softmax(θφᵀ) g, i.e. scaled dot-product attention with scale 1."""
    m = randomised(NonLocalBlock(8, scale=False)).eval()
    x = torch.randn(2, 8, 5, 3, dtype=torch.float64)
    t = rearrange(x, "b c h w -> b (h w) c")
    q = t @ m.theta.weight.T + m.theta.bias  # θ(x_i): (B, N, d)
    k = t @ m.phi.weight.T + m.phi.bias  # φ(x_j)
    v = t @ m.g.weight.T + m.g.bias  # g(x_j)
    y = F.scaled_dot_product_attention(q[:, None], k[:, None], v[:, None], scale=1.0)[:, 0]  # one head
    torch.testing.assert_close(y, torch.softmax(q @ k.transpose(1, 2), -1) @ v)
    torch.testing.assert_close(m.attention(x)[:, 0] @ v, y)  # the weights the module reports
    wz = rearrange(y @ m.w_z.weight.T + m.w_z.bias, "b (h w) c -> b c h w", h=5)
    torch.testing.assert_close(m(x), x + m.bn(wz))  # (6)
    # the official scale is SDPA's default 1/sqrt(d) on the same tokens
    m.use_scale, m.logit_scale = True, m.inner**-0.5
    ys = F.scaled_dot_product_attention(q[:, None], k[:, None], v[:, None])[:, 0]
    torch.testing.assert_close(m(x), x + m.bn(rearrange(ys @ m.w_z.weight.T + m.w_z.bias, "b (h w) c -> b c h w", h=5)))


# ---------------------------------------------------------------- the weights attention() reports


@pytest.mark.parametrize("pairwise, subsample, scale", OPTIONS)
def test_attention_is_what_forward_applies(pairwise, subsample, scale):
    m = randomised(NonLocalBlock(8, pairwise=pairwise, subsample=subsample, scale=scale)).eval()
    x = torch.randn(2, 8, 5, 7, dtype=torch.float64)
    a = m.attention(x)
    assert a.shape == (2, 1, 35, n_keys(5, 7, subsample))
    if pairwise in SOFTMAX_FORMS:
        torch.testing.assert_close(a.sum(-1), torch.ones(2, 1, 35, dtype=torch.float64))
    _, _, v = m._tokens(x)
    y = a[:, 0] @ v  # (1) with the reported weights
    expected = x + m.bn(rearrange(m.w_z(y), "b (h w) c -> b c h w", h=5))
    torch.testing.assert_close(m(x), expected)
    # queries in (h w) order: query i = (row, column) = divmod(i, W)
    row, col = 3, 4
    single = m.attention(x)[:, 0, row * 7 + col]
    torch.testing.assert_close(single, a[:, 0, row * 7 + col])


@pytest.mark.parametrize("pairwise", ["dot_product", "concatenation"])
def test_gate_in_forward_records_the_weights(pairwise):
    m = randomised(NonLocalBlock(8, pairwise=pairwise)).float()
    x = torch.randn(2, 8, 4, 5)
    gates = capture_gates(m, x)
    assert set(gates) == {"gate"}
    torch.testing.assert_close(gates["gate"], m.eval().attention(x)[:, 0])


def test_attention_rows_of_the_gaussian_forms_sum_to_one_at_init():
    m = NonLocalBlock(16)
    a = m.attention(torch.randn(2, 16, 6, 6))
    torch.testing.assert_close(a.sum(-1), torch.ones(2, 1, 36))
    # the official init (std 0.01) makes θ, φ tiny: the first weights are nearly uniform
    assert (a - 1 / 36).abs().max() < 1e-3


# ---------------------------------------------------------------- identity at initialisation


@pytest.mark.parametrize("pairwise, subsample, scale", OPTIONS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_identity_at_initialisation_in_train_and_eval(pairwise, subsample, scale, dtype):
    m = NonLocalBlock(16, pairwise=pairwise, subsample=subsample, scale=scale).to(dtype)
    assert torch.all(m.bn.weight == 0) and torch.all(m.bn.bias == 0)
    x = torch.randn(3, 16, 7, 5, dtype=dtype) * 3
    for training in (True, False):
        m.train(training)
        assert torch.equal(m(x), x)


def test_reset_parameters_follows_the_official_init():
    torch.manual_seed(0)
    m = NonLocalBlock(256, pairwise="concatenation")
    for layer in (m.theta, m.phi, m.g, m.w_z):
        assert abs(layer.weight.std().item() - 0.01) < 1e-3 and torch.all(layer.bias == 0)
    assert abs(m.w_f.std().item() - 0.01) < 3e-3


# ---------------------------------------------------------------- parameters and FLOPs


def test_issue_figures():
    """papers.md: 3(C·C/2 + C/2) + (C/2·C + C) + 2C = 2C² + 4.5C; C = 1024 -> 2.10M."""
    assert count_parameters(attncourse.create("nonlocal", 1024)) == 2 * 1024**2 + 4.5 * 1024 == 2_101_760
    assert count_parameters(attncourse.create("nonlocal", 64)) == 8480


@pytest.mark.parametrize("C", [8, 64, 100, 256, 33])
@pytest.mark.parametrize("reduction", [1, 2, 4])
@pytest.mark.parametrize("pairwise", PAIRWISE)
def test_parameter_formula(C, reduction, pairwise):
    m = NonLocalBlock(C, pairwise=pairwise, reduction=reduction, subsample=True)
    assert count_parameters(m) == nonlocal_params(C, reduction, pairwise)


@pytest.mark.parametrize("pairwise", PAIRWISE)
@pytest.mark.parametrize("subsample", [False, True])
def test_flops_match_the_derivation(pairwise, subsample):
    """2 FLOPs per multiply-add: projections, the N x M logits, the weighted sum, W_z (BN, pool, softmax: 0)."""
    B, C, H, W = 2, 32, 6, 7
    d = C // 2
    N, M = H * W, n_keys(H, W, subsample)
    m = NonLocalBlock(C, pairwise=pairwise, subsample=subsample)
    macs = N * C * d + M * C * d if pairwise != "gaussian" else 0  # θ on N queries, φ on M keys
    macs += M * C * d  # g on the M keys
    if pairwise == "concatenation":
        macs += N * d + M * d  # w_θᵀθ_i and w_φᵀφ_j (the N x M sum is an addition)
    else:
        macs += N * M * (C if pairwise == "gaussian" else d)  # θ_iᵀφ_j (or x_iᵀx̂_j)
    macs += N * M * d  # Σ_j (f / C(x)) g_j
    macs += N * d * C  # W_z
    x = torch.randn(B, C, H, W)
    # FlopCounterMode has no formula for the CPU flash kernel of scaled_dot_product_attention
    # (it counts 0 there); the math backend computes the same with two counted matrix products.
    with sdpa_kernel(SDPBackend.MATH):
        assert count_flops(m, x) == 2 * B * macs
    if pairwise == "embedded_gaussian":  # the fused kernel (q, k, v of one width d): its products count 0
        assert count_flops(m, x) == 2 * B * (macs - 2 * N * M * d)


# ---------------------------------------------------------------- memory of the attention step


def test_fused_forward_never_materialises_the_n_by_n_weights():
    B, C, H, W = 2, 32, 32, 32
    x = torch.randn(B, C, H, W)
    for subsample in (False, True):
        m = NonLocalBlock(C, subsample=subsample).eval()
        weights_bytes = B * H * W * n_keys(H, W, subsample) * 4
        with torch.no_grad():
            explicit = peak_memory(lambda: m.attention(x))
            fused = peak_memory(lambda: m(x))
        assert explicit >= weights_bytes
        assert fused < weights_bytes
    with torch.no_grad():
        full = peak_memory(lambda: NonLocalBlock(C).eval().attention(x))
        sub = peak_memory(lambda: NonLocalBlock(C, subsample=True).eval().attention(x))
    assert 3.5 < full / sub <= 4.0  # 4× fewer keys: the N × M weights dominate


# ---------------------------------------------------------------- shapes, gradients, errors


def test_half_max_pool_is_ceil_mode():
    from attncourse.selfattn.nonlocal_ import HalfMaxPool

    for shape in [(2, 3, 7, 5), (1, 3, 1, 1), (2, 3, 6, 8), (1, 3, 1, 4)]:
        x = torch.randn(shape, dtype=torch.float64)
        assert torch.equal(HalfMaxPool()(x), F.max_pool2d(x, 2, 2, ceil_mode=True))


@pytest.mark.parametrize("pairwise, subsample, scale", OPTIONS)
@pytest.mark.parametrize("shape", [(2, 16, 7, 5), (1, 16, 9, 16), (3, 16, 1, 1), (2, 16, 1, 3)])
def test_shapes_on_odd_sizes(pairwise, subsample, scale, shape):
    m = randomised(NonLocalBlock(16, pairwise=pairwise, subsample=subsample, scale=scale)).eval()
    x = torch.randn(shape, dtype=torch.float64)
    assert m(x).shape == x.shape
    B, _, H, W = shape
    assert m.attention(x).shape == (B, 1, H * W, n_keys(H, W, subsample))


@pytest.mark.parametrize("pairwise, subsample", [(p, s) for p in PAIRWISE for s in (False, True)])
def test_gradcheck_float64(pairwise, subsample):
    m = randomised(NonLocalBlock(4, pairwise=pairwise, subsample=subsample)).train()
    x = torch.randn(2, 4, 3, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(m, (x,))


def test_train_mode_at_one_value_per_channel_says_why():
    m = NonLocalBlock(16).train()
    with pytest.raises(ValueError, match=r"NonLocalBlock.*batch.*\(1, 16, 1, 1\)"):
        m(torch.randn(1, 16, 1, 1))
    assert m(torch.randn(2, 16, 1, 1)).shape == (2, 16, 1, 1)  # two values per channel: fine
    assert m.eval()(torch.randn(1, 16, 1, 1)).shape == (1, 16, 1, 1)  # running statistics: fine


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"pairwise": "softmax"}, "pairwise"),
        ({"pairwise": None}, "pairwise"),
        ({"reduction": 0}, "reduction"),
        ({"reduction": 128}, "inner width"),
        ({"reduction": 2.0}, "reduction"),
        ({"subsample": "yes"}, "subsample"),
        ({"scale": "yes"}, "scale"),
        ({"scale": True, "pairwise": "dot_product"}, "softmax"),
        ({"scale": True, "pairwise": "concatenation"}, "softmax"),
    ],
)
def test_bad_options(kwargs, words):
    with pytest.raises(ValueError, match=f"NonLocalBlock.*{words}"):
        NonLocalBlock(64, **kwargs)


@pytest.mark.parametrize(
    "x, words",
    [
        (torch.randn(2, 32, 7, 9), ["NonLocalBlock", "(B, 64, H, W)", "(2, 32, 7, 9)"]),
        (torch.randn(64, 7, 9), ["NonLocalBlock", "4-D", "(64, 7, 9)"]),
        (torch.ones(2, 64, 7, 9, dtype=torch.int64), ["NonLocalBlock", "floating", "int64"]),
    ],
)
@pytest.mark.parametrize("method", ["forward", "attention"])
def test_bad_input(x, words, method):
    m = NonLocalBlock(64, subsample=True)
    with pytest.raises(ValueError) as info:
        getattr(m, method)(x)
    for w in words:
        assert w in str(info.value)


def test_registered_and_created_with_options():
    m = attncourse.create("nonlocal", 32, pairwise="dot_product", subsample=True)
    assert isinstance(m, NonLocalBlock) and m.inner == 16 and m.subsample
    assert attncourse.get("nonlocal") is NonLocalBlock


@pytest.mark.parametrize("kwargs", [{"subsample": True}, {"pairwise": "concatenation"}, {"pairwise": "gaussian", "scale": True}])
def test_export_with_dynamic_sizes_beyond_the_defaults(kwargs):
    """tests/test_deploy.py holds the defaults to the deployment contract; the options keep it too
    (sub-sampling with H, W >= 3, as the docstring says)."""
    m = randomised(NonLocalBlock(16, **kwargs), std=0.2).float().eval()
    low = 3 if m.subsample else 1
    dims = {"x": {0: Dim("b", min=1), 2: Dim("h", min=low), 3: Dim("w", min=low)}}
    program = torch.export.export(m, (torch.randn(2, 16, 6, 5),), dynamic_shapes=dims).module()
    for shape in [(3, 16, 9, 4), (1, 16, low, low), (2, 16, 5, 7)]:
        x = torch.randn(shape)
        torch.testing.assert_close(program(x), m(x))


def test_xavier_start_changes_only_theta_phi_g_and_keeps_the_identity():
    torch.manual_seed(0)
    official = NonLocalBlock(64)
    torch.manual_seed(0)
    xavier = NonLocalBlock(64, init="xavier")
    bound = (6 / (64 + 32)) ** 0.5  # Xavier-uniform for a (32, 64) weight
    for name in ("theta", "phi", "g"):
        w = getattr(xavier, name).weight
        assert w.abs().max() <= bound and w.std() > 0.1  # official: std 0.01
        assert getattr(official, name).weight.std() < 0.02
    assert xavier.w_z.weight.std() < 0.02  # W_z as the official code
    x = torch.randn(2, 64, 5, 7)
    assert torch.equal(xavier(x), x) and torch.equal(xavier.train()(x), x)
    with pytest.raises(ValueError, match="NonLocalBlock.*init"):
        NonLocalBlock(64, init="kaiming")


def test_he_start_is_the_papers_kaiming_normal_and_keeps_the_identity():
    """init="he": the paper's §4.1 (He et al.'s method): every weight layer normal with std √(2 / fan_in)."""
    torch.manual_seed(0)
    m = NonLocalBlock(256, pairwise="concatenation", init="he")
    for layer, fan_in in [(m.theta, 256), (m.phi, 256), (m.g, 256), (m.w_z, 128)]:
        assert abs(layer.weight.std().item() / math.sqrt(2 / fan_in) - 1) < 0.03, layer
        assert abs(layer.weight.mean().item()) < 0.01 and torch.all(layer.bias == 0)
    assert abs(m.w_f.std().item() / math.sqrt(2 / 256) - 1) < 0.2  # 256 draws
    assert torch.all(m.bn.weight == 0)
    x = torch.randn(2, 256, 5, 7)
    assert torch.equal(m(x), x) and torch.equal(m.train()(x), x)
    assert "init='he'" in repr(m)


def test_init_docstring_quotes_the_stored_five_seeds():
    from attncourse import experiments

    stored = experiments.load("selfattn").result
    doc = " ".join(NonLocalBlock.__doc__.split())
    quoted = [("Non-local", "official", 2), ("Non-local (Xavier)", "Xavier", 4), ("Non-local (He)", "He", 3)]
    for variant, label, solved in quoted:
        acc = stored.accuracies(variant)
        assert f"{label} " + ", ".join(f"{a:.3f}" for a in acc) in doc
        assert (acc > 0.9).sum() == solved  # "two, four and three of five"
    assert "Seeds above 0.9: two, four and three of five" in doc
    sds = ", ".join(f"{stored.std(v):.3f}" for v, _, _ in quoted)
    assert f"standard deviations {sds}" in doc
    lowest = {v: stored.accuracies(v).min() for v, _, _ in quoted}
    assert lowest["Non-local (He)"] > 0.6 > max(lowest["Non-local"], lowest["Non-local (Xavier)"])  # "no seed at chance"


def _first_rows(channels, side, **kwargs):
    """Logit variance and mean row entropy of a fresh block (seed 0) on unit-variance input (seed 1), as the
    chapter measures them."""
    torch.manual_seed(0)
    block = NonLocalBlock(channels, **kwargs)
    x = torch.randn(8, channels, side, side, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        q, k, _ = block._tokens(x)
        logits, a = block._logits(q, k), block.attention(x)
    return logits.var().item(), (-(a * a.clamp_min(1e-30).log()).sum(-1).mean()).item()


def test_init_docstring_on_the_sharpness_of_the_first_weights():
    """The docstring's claims: logit variance d (C σ_w²)² (16d/9 Xavier, 4d He, divided by d with the scale),
    the entropies it quotes at C = 64 and C = 32, and the protocol's options for the stored runs."""
    from attncourse import experiments

    doc = " ".join(NonLocalBlock.__doc__.split())
    entropy = {}
    for channels, side in [(64, 16), (32, 12)]:
        d = channels // 2
        for name, kwargs, variance in [("official", {}, d * (channels * 1e-4) ** 2),
                                       ("xavier", {"init": "xavier"}, 16 * d / 9), ("he", {"init": "he"}, 4 * d),
                                       ("xavier+scale", {"init": "xavier", "scale": True}, 16 / 9)]:
            var, entropy[channels, name] = _first_rows(channels, side, **kwargs)
            assert 0.8 < var / variance < 1.25, (channels, name, var, variance)
    at64 = [f"{entropy[64, n]:.2f}" for n in ("official", "xavier", "he", "xavier+scale")]
    assert f"official {at64[0]}, Xavier {at64[1]}, He {at64[2]}, Xavier with ``scale=True`` {at64[3]}" in doc
    assert f"{math.log(256):.2f} nats" in doc and f"ln 144 = {math.log(144):.2f}" in doc
    assert f"Xavier and He rows start at {entropy[32, 'xavier']:.2f} and {entropy[32, 'he']:.2f} nats" in doc
    assert entropy[64, "xavier"] < 1 < 4 < entropy[64, "xavier+scale"] < entropy[64, "official"]  # near one-hot / not
    assert "use ``init=\"xavier\"`` with ``scale=True``" in doc
    variants = experiments.protocol("selfattn").variants
    assert [variants[v][1] for v in ("Non-local", "Non-local (scaled)", "Non-local (Xavier)", "Non-local (He)")] == [
        {}, {"scale": True}, {"init": "xavier"}, {"init": "he"}]
    assert '``{}``, ``{"scale": True}``, ``{"init": "xavier"}``, ``{"init": "he"}``' in doc
    assert all(variants[v][1] != {"init": "xavier", "scale": True} for v in variants)  # "not among the stored runs"


# ---------------------------------------------------------------- a bias that the softmax cancels


def _random_block(**kwargs):
    torch.manual_seed(0)
    m = randomised(NonLocalBlock(8, **kwargs), std=0.5)
    return m


@pytest.mark.parametrize("scale", [False, True])
@pytest.mark.parametrize("subsample", [False, True])
@pytest.mark.parametrize("training", [False, True])
def test_phi_bias_of_the_embedded_gaussian_changes_nothing_and_gets_zero_gradient(scale, subsample, training):
    """θ(x_i)ᵀb_φ is the same for every key j of row i: the softmax cancels it."""
    m = _random_block(scale=scale, subsample=subsample).train(training)
    x = torch.randn(2, 8, 5, 6, dtype=torch.float64)
    target = torch.randn(2, 8, 5, 6, dtype=torch.float64)
    (m(x) * target).sum().backward()
    grads = {n: p.grad.abs().max().item() for n, p in m.named_parameters()}
    assert grads["phi.bias"] < 1e-12 * grads["phi.weight"]
    assert grads["theta.bias"] > 1e-3 and grads["phi.weight"] > 1e-3  # the others do get one
    y = m(x)
    with torch.no_grad():
        m.phi.bias.add_(torch.randn_like(m.phi.bias) * 3)
    torch.testing.assert_close(m(x), y, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("pairwise", ["dot_product", "concatenation"])
def test_phi_bias_matters_without_a_softmax(pairwise):
    m = _random_block(pairwise=pairwise).eval()
    x = torch.randn(2, 8, 5, 6, dtype=torch.float64)
    m(x).square().sum().backward()
    assert m.phi.bias.grad.abs().max() > 1e-3
    y = m(x)
    with torch.no_grad():
        m.phi.bias.add_(1.0)
    assert (m(x) - y).abs().max() > 1e-3
