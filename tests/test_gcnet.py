"""The GC block against the GCNet paper's equations (Cao et al., 2019) and the official ContextBlock."""

import pytest
import torch

import attncourse
from attncourse.cost import count_flops, count_parameters
from attncourse.plot import capture_gates
from attncourse.selfattn.gcnet import GlobalContextBlock

FUSIONS = ["add", "mul", "mul+add"]


def gc_parameters(C, r=16):
    """The chapter's formula: W_k (C + 1), W_v1 (C·C/r + C/r), LN (2C/r), W_v2 (C/r·C + C)."""
    h = C // r
    return 2 * C * h + 2 * C + 3 * h + 1


# ---------------------------------------------------------------- the naive derivation


def naive_transform(v, seq):
    """W_v2 ReLU(LN(W_v1 v)) for one image's context v ∈ R^C, written out (LN over the C/r values)."""
    w1, b1 = seq[0].weight[:, :, 0, 0], seq[0].bias
    g, beta, eps = seq[1].weight[:, 0, 0], seq[1].bias[:, 0, 0], seq[1].eps
    w2, b2 = seq[3].weight[:, :, 0, 0], seq[3].bias
    t = w1 @ v + b1  # W_v1
    mu = t.mean()
    var = ((t - mu) ** 2).mean()  # biased variance, as LayerNorm
    t = (t - mu) / torch.sqrt(var + eps) * g + beta  # LN
    return w2 @ torch.relu(t) + b2  # W_v2 ReLU(·)


def naive_gc(x, m: GlobalContextBlock):
    """Eq. (5) (and the ablation's variants) one image and one position at a time."""
    B, C, H, W = x.shape
    out = torch.empty_like(x)
    for n in range(B):
        feats = [x[n, :, i, j] for i in range(H) for j in range(W)]  # x_j, (h w) order
        if m.pooling == "att":
            wk, bk = m.conv_mask.weight[0, :, 0, 0], m.conv_mask.bias[0]
            logits = torch.stack([wk @ f + bk for f in feats])  # W_k x_j
            alpha = torch.exp(logits) / torch.exp(logits).sum()  # softmax over the positions
        else:
            alpha = torch.full((H * W,), 1.0 / (H * W), dtype=x.dtype)
        context = sum(a * f for a, f in zip(alpha, feats))  # Σ_j α_j x_j
        scale = torch.sigmoid(naive_transform(context, m.channel_mul_conv)) if m.channel_mul_conv is not None else 1.0
        shift = naive_transform(context, m.channel_add_conv) if m.channel_add_conv is not None else 0.0
        for i in range(H):
            for j in range(W):
                out[n, :, i, j] = x[n, :, i, j] * scale + shift  # fusion, the same for every position i
    return out


def _randomise(m):
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn_like(p) * 0.5)
    return m


@pytest.mark.parametrize("pooling", ["att", "avg"])
@pytest.mark.parametrize("fusion", FUSIONS)
def test_equals_naive_derivation(pooling, fusion):
    torch.manual_seed(0)
    m = _randomise(GlobalContextBlock(12, reduction=4, pooling=pooling, fusion=fusion).double())
    x = torch.randn(2, 12, 5, 3, dtype=torch.float64)
    torch.testing.assert_close(m(x), naive_gc(x, m))


def test_naive_can_fail():
    """Wrong variants must not match: uniform weights (SE's mean) instead of α, no LayerNorm."""
    torch.manual_seed(1)
    m = _randomise(GlobalContextBlock(8, reduction=2).double())
    x = torch.randn(2, 8, 4, 3, dtype=torch.float64)
    mean_pooled = GlobalContextBlock(8, reduction=2, pooling="avg").double()
    mean_pooled.channel_add_conv.load_state_dict(m.channel_add_conv.state_dict())
    assert not torch.allclose(m(x), naive_gc(x, mean_pooled))
    no_ln = GlobalContextBlock(8, reduction=2).double()
    no_ln.load_state_dict(m.state_dict())
    no_ln.channel_add_conv[1] = torch.nn.Identity()
    assert not torch.allclose(no_ln(x), naive_gc(x, m))


# ---------------------------------------------------------------- initialisation, attention


def test_identity_at_initialisation():
    x = torch.randn(2, 64, 7, 5)
    m = attncourse.create("gc", 64)
    assert torch.equal(m(x), x)
    assert torch.equal(m.channel_add_conv[3].weight, torch.zeros_like(m.channel_add_conv[3].weight))
    assert torch.equal(m.channel_add_conv[3].bias, torch.zeros(64))
    # the multiplicative form starts at x * sigmoid(0) = x / 2, as the official code's
    torch.testing.assert_close(GlobalContextBlock(64, fusion="mul")(x), x / 2)


def test_official_initialisation_of_w_k():
    torch.manual_seed(0)
    w = GlobalContextBlock(1024).conv_mask
    assert torch.equal(w.bias, torch.zeros(1))
    assert abs(w.weight.std().item() - (2 / 1024) ** 0.5) < 0.1 * (2 / 1024) ** 0.5  # Kaiming normal, fan-in


def test_attention_is_one_row_for_every_query_and_is_what_forward_uses():
    torch.manual_seed(0)
    m = _randomise(GlobalContextBlock(16, reduction=4).double()).eval()
    x = torch.randn(3, 16, 5, 7, dtype=torch.float64)
    a = m.attention(x)
    assert a.shape == (3, 1, 35, 35)
    torch.testing.assert_close(a.sum(-1), torch.ones(3, 1, 35, dtype=torch.float64))
    assert torch.equal(a, a[:, :, :1].expand_as(a))  # the same row for every query
    gates = capture_gates(m, x)
    assert set(gates) == {"gate"} and gates["gate"].shape == (3, 1, 35)
    torch.testing.assert_close(a[:, :, 0], gates["gate"])
    # forward = x + T(Σ_j α_j x_j) with exactly these weights
    context = torch.einsum("bcn,bn->bc", x.flatten(2), a[:, 0, 0])[..., None, None]
    torch.testing.assert_close(m(x), x + m.channel_add_conv(context))
    # avg pooling: uniform rows
    avg = GlobalContextBlock(16, reduction=4, pooling="avg").double()
    torch.testing.assert_close(avg.attention(x), torch.full((3, 1, 35, 35), 1 / 35, dtype=torch.float64))


def test_softmax_is_shift_invariant_so_w_k_bias_gets_no_gradient():
    torch.manual_seed(0)
    m = _randomise(GlobalContextBlock(8, reduction=2).double())
    x = torch.randn(2, 8, 4, 4, dtype=torch.float64)
    m(x).square().sum().backward()
    assert abs(m.conv_mask.bias.grad.item()) < 1e-10
    assert m.conv_mask.weight.grad.abs().max() > 1e-3


def test_one_by_one_map_and_batch_one_in_training():
    m = _randomise(GlobalContextBlock(8, reduction=2)).train()
    x = torch.randn(1, 8, 1, 1)
    torch.testing.assert_close(m.attention(x), torch.ones(1, 1, 1, 1))
    torch.testing.assert_close(m(x), x + m.channel_add_conv(x))  # one position: the context is x itself


# ---------------------------------------------------------------- cost


def test_parameter_formula():
    assert count_parameters(attncourse.create("gc", 64)) == 653 == gc_parameters(64)
    assert attncourse.create("gc", 64).hidden == 4 and GlobalContextBlock(16).hidden == 1
    for C in [16, 64, 256, 512, 1024, 2048]:
        for r in [4, 16]:
            assert count_parameters(GlobalContextBlock(C, reduction=r)) == gc_parameters(C, r)
            assert 2 * C * C / r + 2 * C + 3 * C / r + 1 == gc_parameters(C, r)  # the papers.md form
    # avg pooling drops W_k (C + 1); mul+add has two transforms
    assert count_parameters(GlobalContextBlock(64, pooling="avg")) == gc_parameters(64) - 65
    assert count_parameters(GlobalContextBlock(64, fusion="mul+add")) == 2 * gc_parameters(64) - 65


def test_flops():
    for C, H, W in [(64, 7, 5), (256, 28, 28), (2048, 7, 7)]:
        counted = count_flops(attncourse.create("gc", C), torch.randn(1, C, H, W))
        assert counted == 2 * C * H * W + 2 * C * H * W + 2 * 2 * C * (C // 16)  # W_k, Σ α x, W_v1 and W_v2


def test_official_submodule_names():
    names = set(GlobalContextBlock(64).state_dict())
    assert names == {"conv_mask.weight", "conv_mask.bias",
                     "channel_add_conv.0.weight", "channel_add_conv.0.bias",
                     "channel_add_conv.1.weight", "channel_add_conv.1.bias",
                     "channel_add_conv.3.weight", "channel_add_conv.3.bias"}


# ---------------------------------------------------------------- errors, gradients


@pytest.mark.parametrize("kwargs, words", [
    ({"channels": 8, "reduction": 16}, "at least 1"),
    ({"channels": 64, "reduction": 0}, "reduction"),
    ({"channels": 64, "pooling": "max"}, "pooling"),
    ({"channels": 64, "fusion": "concat"}, "fusion"),
    ({"channels": 0}, "channels"),
])
def test_bad_arguments(kwargs, words):
    channels = kwargs.pop("channels")
    with pytest.raises(ValueError, match="GlobalContextBlock") as err:
        GlobalContextBlock(channels, **kwargs)
    assert words in str(err.value)


def test_bad_input():
    m = attncourse.create("gc", 64)
    with pytest.raises(ValueError, match=r"GlobalContextBlock expected input of shape \(B, 64, H, W\)"):
        m(torch.randn(2, 32, 7, 9))
    with pytest.raises(ValueError, match="GlobalContextBlock"):
        m.attention(torch.randn(2, 64, 7))


@pytest.mark.parametrize("fusion", FUSIONS)
def test_gradcheck(fusion):
    torch.manual_seed(0)
    m = _randomise(GlobalContextBlock(4, reduction=2, fusion=fusion).double())
    x = torch.randn(2, 4, 3, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(m, (x,))
