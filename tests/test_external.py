"""External Attention (Guo et al., TPAMI 2022, arXiv:2105.02358) against the equations (a)-(c) of its
docstring and the official block of MenghaoGuo/EANet (model_torch.py, External_attention)."""

import copy
import math

import pytest
import torch
from torch import nn

import attncourse
from attncourse.cost import count_flops, count_parameters
from attncourse.linear.external import DoubleNormalise, ExternalAttention
from attncourse.plot import capture_gates

# ---------------------------------------------------------------- the naive derivation


def naive_external(x, m, *, norm="double", training=False):
    """The official block, one image and one position at a time: W_1 x + b_1, eq. (a) with the
    double normalisation (c) written with explicit exp and sums, eq. (b), W_2, BN, residual, ReLU.
    ``norm="memory"``: a single softmax over the S units (the normalisation the paper replaces);
    ``norm="positions"``: the softmax over N only, without the ℓ1 step."""
    w1, b1 = m.conv1.weight[:, :, 0, 0].detach(), m.conv1.bias.detach()
    w2 = m.conv2.weight[:, :, 0, 0].detach()
    mk, mv = m.m_k.detach(), m.m_v.detach()
    B, C, H, W = x.shape
    N, S = H * W, mk.shape[0]
    y = torch.empty_like(x)
    for b in range(B):
        f = torch.stack([w1 @ x[b, :, i // W, i % W] + b1 for i in range(N)])  # F: (N, C), (h w) order
        alpha = torch.tensor([[float(f[i] @ mk[j]) for j in range(S)] for i in range(N)], dtype=x.dtype)  # F M_kᵀ
        if norm == "memory":
            e = torch.exp(alpha - alpha.max(dim=1, keepdim=True).values)
            a = e / e.sum(dim=1, keepdim=True)  # softmax over the units
        else:
            e = torch.exp(alpha - alpha.max(dim=0, keepdim=True).values)
            a = e / e.sum(dim=0, keepdim=True)  # α̃: softmax over the positions, per unit
            if norm == "double":
                a = a / (a.sum(dim=1, keepdim=True) + m.eps)  # α: ℓ1 over the units, per position
        out = a @ mv  # F_out = A M_v, (b): (N, C)
        out = out @ w2.T  # W_2
        y[b] = out.T.reshape(C, H, W)
    bn = m.bn
    if training:
        mean, var = y.mean(dim=(0, 2, 3)), y.var(dim=(0, 2, 3), unbiased=False)
    else:
        mean, var = bn.running_mean, bn.running_var
    y = (y - mean[:, None, None]) / torch.sqrt(var[:, None, None] + bn.eps) * bn.weight[:, None, None].detach()
    y = y + bn.bias[:, None, None].detach()
    y = x + y
    return torch.relu(y) if m.relu else y


def _random(m, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.5)
        m.bn.running_mean.copy_(torch.randn(m.channels, generator=g, dtype=p.dtype) * 0.3)
        m.bn.running_var.copy_(torch.rand(m.channels, generator=g, dtype=p.dtype) + 0.5)
    return m


# ---------------------------------------------------------------- equal to the derivation


@pytest.mark.parametrize("units", [1, 3, 8])
@pytest.mark.parametrize("relu", [True, False])
@pytest.mark.parametrize("training", [False, True], ids=["eval", "train"])
def test_equals_the_naive_derivation(units, relu, training):
    m = _random(ExternalAttention(6, memory_units=units, relu=relu).double()).train(training)
    x = torch.randn(2, 6, 3, 5, dtype=torch.float64)
    torch.testing.assert_close(m(x), naive_external(x, m, training=training))


def test_the_naive_derivation_can_fail():
    m = _random(ExternalAttention(6, memory_units=4).double()).eval()
    x = torch.randn(2, 6, 3, 4, dtype=torch.float64)
    ref = naive_external(x, m)
    assert not torch.allclose(naive_external(x, m, norm="memory"), ref)  # one softmax over the units
    assert not torch.allclose(naive_external(x, m, norm="positions"), ref)  # no ℓ1 step
    m.eval()
    assert not torch.allclose(naive_external(x, m, training=True), ref)  # batch statistics


def test_attention_is_what_forward_applies_and_the_gate_records_it():
    m = _random(ExternalAttention(8, memory_units=5).double()).eval()
    x = torch.randn(2, 8, 4, 7, dtype=torch.float64)
    a = m.attention(x)
    assert a.shape == (2, 1, 28, 5)
    torch.testing.assert_close(a.sum(-1), torch.ones(2, 1, 28, dtype=torch.float64))  # ℓ1 over the units
    f = m.conv1(x).flatten(2).transpose(1, 2)  # F: (B, N, C)
    e = torch.softmax(f @ m.m_k.T, dim=1)  # α̃, softmax over positions
    torch.testing.assert_close(a[:, 0], e / e.sum(-1, keepdim=True))
    out = (a[:, 0] @ m.m_v).transpose(1, 2).reshape_as(x)  # F_out = A M_v
    torch.testing.assert_close(m(x), torch.relu(x + m.bn(m.conv2(out))))
    gates = capture_gates(m, x)
    assert list(gates) == ["gate"]
    torch.testing.assert_close(gates["gate"], a)


def test_double_normalise_is_softmax_over_positions_then_l1_over_units():
    logits = torch.randn(3, 1, 10, 4, dtype=torch.float64)
    a = DoubleNormalise()(logits)
    t = torch.softmax(logits, dim=-2)
    torch.testing.assert_close(a, t / (t.sum(-1, keepdim=True) + 1e-9))
    torch.testing.assert_close(DoubleNormalise()(logits.contiguous()), a)


def test_permuting_the_positions_permutes_the_output():
    m = _random(ExternalAttention(8, memory_units=4).double()).eval()
    x = torch.randn(2, 8, 5, 6, dtype=torch.float64)
    perm = torch.randperm(30, generator=torch.Generator().manual_seed(1))
    shuffle = lambda t: t.flatten(2)[:, :, perm].reshape_as(t)  # noqa: E731
    torch.testing.assert_close(m(shuffle(x)), shuffle(m(x)))


def test_samples_do_not_see_each_other_in_eval_mode():
    # "external" memory is shared by all samples through its weights, not by mixing a batch
    m = _random(ExternalAttention(8, memory_units=4).double()).eval()
    x = torch.randn(3, 8, 4, 5, dtype=torch.float64)
    y = x.clone()
    y[1:] = torch.randn(2, 8, 4, 5, dtype=torch.float64)
    torch.testing.assert_close(m(x)[0], m(y)[0])


# ---------------------------------------------------------------- the official initialisation


def test_official_initialisation():
    torch.manual_seed(0)
    c = 256
    m = ExternalAttention(c)
    assert torch.equal(m.m_v, m.m_k)  # the official M_v = M_k (linear_1 = linear_0ᵀ) ...
    assert m.m_v.data_ptr() != m.m_k.data_ptr()  # ... as two separate tensors
    for w in (m.conv1.weight, m.conv2.weight, m.m_k):
        assert abs(w.std().item() - math.sqrt(2 / c)) < 0.05 * math.sqrt(2 / c)  # N(0, 2/n), n = C
    assert torch.equal(m.bn.weight, torch.ones(c)) and torch.equal(m.bn.bias, torch.zeros(c))
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    x = torch.randn(2, c, 4, 4)
    m(x).square().sum().backward()
    opt.step()
    assert not torch.equal(m.m_v, m.m_k)  # trained freely, as after the official .cuda()


def test_the_official_view_ties_the_weights_until_a_copy():
    """The fact the docstring relies on: ``linear_1.weight.data = linear_0.weight.data.permute(1, 0, 2)``
    shares storage, an optimizer step keeps the two tied (the update is the sum of both gradients),
    and Module._apply (.double(), as .cuda()) unties them."""
    torch.manual_seed(0)

    def official():
        l0, l1 = nn.Conv1d(8, 4, 1, bias=False), nn.Conv1d(4, 8, 1, bias=False)
        l1.weight.data = l0.weight.data.permute(1, 0, 2)
        return nn.Sequential(l0, nn.Softmax(-1), l1)

    net = official()
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    net(torch.randn(2, 8, 5)).square().sum().backward()
    g0, g1 = net[0].weight.grad.clone(), net[2].weight.grad.permute(1, 0, 2).clone()
    before = net[0].weight.detach().clone()
    opt.step()
    assert torch.equal(net[2].weight, net[0].weight.permute(1, 0, 2))  # still tied
    torch.testing.assert_close(net[0].weight.detach(), before - 0.1 * (g0 + g1))
    net = official().double()
    assert net[0].weight.data_ptr() != net[2].weight.data_ptr()  # untied by the copy


# ---------------------------------------------------------------- the plug-in


def test_not_the_identity_at_initialisation_by_default():
    m = attncourse.create("external", 16).eval()
    x = torch.randn(2, 16, 5, 4)
    y = m(x)
    assert not torch.allclose(y, x)
    assert (y >= 0).all()  # the final ReLU
    m = ExternalAttention(16, relu=False).eval()
    assert not torch.allclose(m(x), x)  # BN's γ = 1: the branch is not 0


def test_identity_at_initialisation_with_zero_init_and_no_relu():
    m = ExternalAttention(16, zero_init=True, relu=False)
    x = torch.randn(2, 16, 5, 4, requires_grad=True)
    y = m(x)
    assert torch.equal(y, x)
    y.square().sum().backward()
    assert m.bn.weight.grad.abs().sum() > 0  # γ gets a gradient at once
    assert torch.equal(ExternalAttention(16, zero_init=True)(x), torch.relu(x))


@pytest.mark.parametrize("c, s", [(64, 64), (32, 8), (512, 64), (6, 1)])
def test_parameter_count(c, s):
    assert count_parameters(ExternalAttention(c, memory_units=s)) == 2 * c * c + 2 * s * c + 3 * c


def test_parameter_count_of_the_paper_s_head():
    assert count_parameters(ExternalAttention(512)) == 2 * 512**2 + 2 * 64 * 512 + 3 * 512 == 591_360


def test_flops_are_two_convolutions_and_two_memory_products():
    c, s, h, w, b = 16, 8, 7, 5, 2
    n = h * w
    m = ExternalAttention(c, memory_units=s).eval()
    assert count_flops(m, torch.randn(b, c, h, w)) == b * (2 * n * c * c + 2 * n * c * c + 2 * 2 * n * s * c)


@pytest.mark.parametrize(
    "kwargs, words",
    [
        (dict(memory_units=0), ["ExternalAttention", "memory_units"]),
        (dict(memory_units=2.0), ["ExternalAttention", "memory_units"]),
        (dict(memory_units=True), ["ExternalAttention", "memory_units"]),
        (dict(eps=0), ["ExternalAttention", "eps"]),
        (dict(eps="1e-9"), ["ExternalAttention", "eps"]),
        (dict(relu="yes"), ["ExternalAttention", "relu"]),
        (dict(zero_init=1.5), ["ExternalAttention", "zero_init"]),
    ],
)
def test_impossible_hyperparameters(kwargs, words):
    with pytest.raises(ValueError) as info:
        ExternalAttention(64, **kwargs)
    for w in words:
        assert w in str(info.value)


def test_one_position_and_one_unit():
    m = _random(ExternalAttention(4, memory_units=1).double()).eval()
    x = torch.randn(2, 4, 1, 1, dtype=torch.float64)
    torch.testing.assert_close(m.attention(x), torch.ones(2, 1, 1, 1, dtype=torch.float64))
    assert m(x).shape == x.shape


@pytest.mark.parametrize("training", [False, True], ids=["eval", "train"])
def test_gradcheck(training):
    m = _random(ExternalAttention(4, memory_units=3, relu=False).double()).train(training)
    x = torch.randn(2, 4, 2, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(m, (x,))


# ---------------------------------------------------------------- numerical care


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_at_65536_positions_is_finite(dtype):
    torch.manual_seed(0)
    m = ExternalAttention(8).eval()
    x = torch.randn(1, 8, 256, 256)
    with torch.no_grad():
        ref = m(x)
        mh = m.to(dtype)
        a = mh.attention(x.to(dtype))
        y = mh(x.to(dtype))
    assert y.dtype == dtype and torch.isfinite(y).all() and torch.isfinite(a).all()
    assert (a.float().sum(-1) - 1).abs().max() < 0.02  # rows still sum to 1
    assert (y.float() - ref).abs().max() < 0.1 * ref.abs().max()


def test_half_softmax_over_65536_positions_needs_float32():
    # what the float32 step avoids: softmax values near 1/65,536 are float16 subnormals
    logits = torch.randn(1, 1, 65536, 4)
    a16 = torch.softmax(logits.half(), dim=-2)
    a32 = torch.softmax(logits, dim=-2)
    assert (a16.float() - a32).abs().max() / a32.max() > 1e-3
    assert (DoubleNormalise()(logits.half()).float() - DoubleNormalise()(logits)).abs().max() < 1e-3


def test_an_in_place_relu_after_the_module_does_not_break_backward():
    # TinyNet's blocks apply ReLU(inplace=True) to the module's output; F.relu would have saved
    # that output for its backward, and the in-place op would invalidate it
    m = ExternalAttention(8)
    x = torch.randn(2, 8, 3, 4, requires_grad=True)
    torch.relu_(m(x)).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


@pytest.mark.parametrize("training", [True, False])
def test_the_first_convolution_bias_changes_nothing_and_gets_no_gradient(training):
    """b_1 shifts every logit of a memory unit by the same b_1·M_k[j]; the softmax over the
    positions of that unit cancels it: no output changes, and its gradient is zero (rounding)."""
    torch.manual_seed(0)
    m = ExternalAttention(16, memory_units=8).double().train(training)
    x = torch.randn(3, 16, 5, 7, dtype=torch.float64)
    m(x).square().sum().backward()
    assert m.conv1.bias.grad.abs().max() < 1e-12 * m.conv1.weight.grad.abs().max()
    assert m.m_k.grad.abs().max() > 1.0  # the other parameters do learn
    shifted = copy.deepcopy(m)
    with torch.no_grad():
        shifted.conv1.bias.add_(torch.randn(16, dtype=torch.float64) * 5)
        torch.testing.assert_close(shifted(x), m(x), rtol=0, atol=1e-12)
        shifted.conv1.weight.add_(0.1)  # whereas a change of W_1 does change the output
        assert (shifted(x) - m(x)).abs().max() > 1e-3
