"""SelectiveKernel against the paper's equations (Li et al., CVPR 2019)."""

import pytest
import torch

import attncourse
from attncourse.channel.sk import SelectiveKernel
from attncourse.cost import count_flops, count_parameters
from attncourse.plot import capture_gates


def naive_conv(x, w, dilation, groups):
    """A 3×3 grouped convolution with dilation and zero padding = dilation, by explicit shifts."""
    B, C, H, W = x.shape
    cg = C // groups
    xp = torch.zeros(B, C, H + 2 * dilation, W + 2 * dilation, dtype=x.dtype)
    xp[:, :, dilation : dilation + H, dilation : dilation + W] = x
    out = torch.zeros(B, w.shape[0], H, W, dtype=x.dtype)
    for o in range(w.shape[0]):
        g = o // (w.shape[0] // groups)  # the group of output channel o
        for i in range(cg):
            for ki in range(3):
                for kj in range(3):
                    patch = xp[:, g * cg + i, ki * dilation : ki * dilation + H, kj * dilation : kj * dilation + W]
                    out[:, o] += w[o, i, ki, kj] * patch
    return out


def naive_bn(t, bn, training):
    """BatchNorm over every axis but 1, by hand: batch statistics (biased) or running ones."""
    dims = [0] + list(range(2, t.dim()))
    if training:
        mean, var = t.mean(dims, keepdim=True), t.var(dims, unbiased=False, keepdim=True)
    else:
        shape = [1, -1] + [1] * (t.dim() - 2)
        mean, var = bn.running_mean.view(shape), bn.running_var.view(shape)
    shape = [1, -1] + [1] * (t.dim() - 2)
    return (t - mean) / torch.sqrt(var + bn.eps) * bn.weight.view(shape) + bn.bias.view(shape)


def naive_sk(m, x, training=False):
    """Split, eqs. (1)-(6), with loops over branches and channels and the softmax by exp/sum."""
    M, C = m.branches, m.channels
    B, _, H, W = x.shape
    U = []
    for k, branch in enumerate(m.split):  # split: branch k has dilation k + 1
        conv, bn = branch[0], branch[1]
        U.append(torch.relu(naive_bn(naive_conv(x, conv.weight, k + 1, m.groups), bn, training)))
    Usum = sum(U)  # (1)
    s = Usum.sum((2, 3)) / (H * W)  # (2): (B, C)
    z = torch.relu(naive_bn(s @ m.fc.weight.T, m.bn, training))  # (3): (B, d)
    A = m.select.weight.view(M, C, -1)  # A_m ∈ R^{C×d}, rows read as (m c)
    out = torch.zeros_like(x)
    for n in range(B):
        for c in range(C):
            e = torch.stack([torch.exp(A[k, c] @ z[n]) for k in range(M)])  # (5)
            a = e / e.sum()
            out[n, c] = sum(a[k] * U[k][n, c] for k in range(M))  # (6)
    return out


def randomise(m):
    """Random weights and running statistics, so no term hides behind an identity init."""
    with torch.no_grad():
        for p in m.parameters():
            p.normal_()
        for mod in m.modules():
            if isinstance(mod, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
                mod.running_mean.normal_()
                mod.running_var.uniform_(0.5, 2.0)
    return m


def sk_params(C, M=2, G=32, r=16, L=32):
    d = max(C // r, L)
    return M * (9 * C * C // G + 2 * C) + C * d + 2 * d + M * C * d


def test_create_sk_512_has_198720_parameters():
    m = attncourse.create("sk", 512)
    assert count_parameters(m) == 198_720 == sk_params(512)
    assert count_parameters(m) < 1_000_000


def test_full_convolutions_cost_24_times_more():
    # groups=1: the two 3×3 convolutions alone are 2·9·C² = 4.7M at C = 512.
    m = SelectiveKernel(512, groups=1)
    assert count_parameters(m) == 4_769_856 == sk_params(512, G=1)


def external_attention_sk_params(C, kernels=(1, 3, 5, 7), r=16, L=32):
    """External-Attention-pytorch's SKAttention: full convs with bias, BN, Linear(C, d), M Linear(d, C), all with bias."""
    d = max(L, C // r)
    M = len(kernels)
    return sum(k * k for k in kernels) * C * C + M * C + M * 2 * C + (C * d + d) + M * (d * C + C)


def test_the_full_convolution_public_version_would_be_22m():
    assert external_attention_sk_params(512) == 22_110_240


@pytest.mark.parametrize("C, M, G, r, L", [(64, 2, 32, 16, 32), (256, 2, 32, 16, 32), (48, 3, 4, 4, 8), (1024, 2, 32, 16, 32), (100, 2, 5, 16, 3)])
def test_parameter_formula(C, M, G, r, L):
    m = SelectiveKernel(C, branches=M, groups=G, reduction=r, min_dim=L)
    assert m.hidden == max(C // r, L)
    assert count_parameters(m) == sk_params(C, M, G, r, L)


def test_sknet50_extra_parameters_over_resnext50():
    """The paper's 25.0M -> 27.5M: SK units minus the 3×3 grouped conv + BN they replace."""
    extra = 0
    for width, units in [(128, 3), (256, 4), (512, 6), (1024, 3)]:
        replaced = 9 * width * width // 32 + 2 * width
        extra += units * (count_parameters(SelectiveKernel(width)) - replaced)
    assert extra == 2_450_880


@pytest.mark.parametrize("shape", [(2, 8, 7, 5), (3, 8, 1, 1), (2, 8, 4, 9), (2, 8, 2, 3)])
@pytest.mark.parametrize("training", [False, True])
def test_matches_the_equations_on_random_weights(shape, training):
    m = randomise(SelectiveKernel(8, groups=2, reduction=2, min_dim=3).double()).train(training)
    if training and shape[2] * shape[3] == 1 and shape[0] < 2:
        pytest.skip("no batch statistics")
    x = torch.randn(shape, dtype=torch.float64)
    expected = naive_sk(m, x, training)
    torch.testing.assert_close(m(x), expected)


def test_three_branches_match_the_equations():
    m = randomise(SelectiveKernel(6, branches=3, groups=3, reduction=2, min_dim=2).double()).eval()
    x = torch.randn(2, 6, 9, 7, dtype=torch.float64)
    torch.testing.assert_close(m(x), naive_sk(m, x))


def test_the_naive_reference_can_fail():
    """Guard against a vacuous equality: wrong variants must not match."""
    m = randomise(SelectiveKernel(8, groups=2, reduction=2, min_dim=3).double()).eval()
    x = torch.randn(2, 8, 7, 5, dtype=torch.float64)
    out = m(x)
    # (a) both branches with dilation 1: the receptive fields would not differ
    same_rf = m.__class__(8, groups=2, reduction=2, min_dim=3).double().eval()
    same_rf.load_state_dict(m.state_dict())
    same_rf.split[1][0].dilation, same_rf.split[1][0].padding = (1, 1), (1, 1)
    assert not torch.allclose(out, same_rf(x))
    # (b) softmax over channels instead of over branches
    u = torch.stack([b(x) for b in m.split], 1)
    z = m.act(m.bn(m.fc(u.sum(1).mean((2, 3)))))
    logits = m.select(z).view(2, 2, 8)
    wrong = (logits.softmax(2)[..., None, None] * u).sum(1)
    assert not torch.allclose(out, wrong)
    # (c) logits read as (c m) instead of (m c)
    wrong = (m.select(z).view(2, 8, 2).transpose(1, 2).softmax(1)[..., None, None] * u).sum(1)
    assert not torch.allclose(out, wrong)
    # (d) the right one, for contrast
    right = (logits.softmax(1)[..., None, None] * u).sum(1)
    torch.testing.assert_close(out, right)


def test_gate_outputs_softmax_weights_over_branches():
    m = SelectiveKernel(16, groups=4, min_dim=4).eval()
    x = torch.randn(3, 16, 5, 7)
    a = capture_gates(m, x)["gate"]
    assert a.shape == (3, 2, 16) and ((a > 0) & (a < 1)).all()
    torch.testing.assert_close(a.sum(1), torch.ones(3, 16))
    u = torch.stack([b(x) for b in m.split], 1)
    torch.testing.assert_close(m(x), (a[..., None, None] * u).sum(1))


@pytest.mark.parametrize("shape", [(2, 32, 7, 5), (1, 32, 9, 16), (3, 32, 1, 1), (2, 32, 2, 11)])
def test_shape_on_odd_sizes(shape):
    m = SelectiveKernel(32, groups=8).eval()
    assert m(torch.randn(shape)).shape == shape


def test_float64_and_batch_one_in_eval_mode():
    m = SelectiveKernel(64).double().eval()
    x = torch.randn(1, 64, 7, 5, dtype=torch.float64)
    y = m(x)
    assert y.dtype == torch.float64 and y.shape == x.shape


def test_batch_one_in_training_mode_says_why():
    m = SelectiveKernel(64).train()
    with pytest.raises(ValueError, match="SelectiveKernel.*batch.*BatchNorm"):
        m(torch.randn(1, 64, 7, 5))
    assert m(torch.randn(2, 64, 7, 5)).shape == (2, 64, 7, 5)


@pytest.mark.parametrize("training", [False, True])
def test_gradcheck_float64(training):
    m = randomise(SelectiveKernel(4, groups=2, reduction=2, min_dim=2).double()).train(training)
    x = torch.randn(2, 4, 2, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(m, (x,))


def test_flops_are_the_convolutions_and_the_linear_layers():
    # 2 FLOPs per multiply-add: per sample, M·HW·9C²/G (convs) + Cd (W) + MCd (A). Eq. (6) is
    # computed element-wise (M·C·HW multiply-adds), which FlopCounterMode does not count.
    B, C, H, W, M, G, d = 2, 64, 7, 9, 2, 32, 32
    m = SelectiveKernel(C)
    per_sample = M * H * W * 9 * C * C // G + C * d + M * C * d
    assert count_flops(m, torch.randn(B, C, H, W)) == 2 * B * per_sample


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"groups": 5}, "channels=64 to be divisible by groups=5"),
        ({"groups": 0}, "groups"),
        ({"branches": 1}, "branches"),
        ({"branches": 0}, "branches"),
        ({"branches": 2.0}, "branches"),
        ({"reduction": 0}, "reduction"),
        ({"min_dim": 0}, "min_dim"),
        ({"min_dim": True}, "min_dim"),
    ],
)
def test_bad_hyperparameters(kwargs, words):
    with pytest.raises(ValueError, match=f"SelectiveKernel.*{words}"):
        SelectiveKernel(64, **kwargs)


def test_default_groups_refuse_16_channels():
    """TinyNet's first block has 16 channels: G = 32 cannot split them, so the error says so."""
    with pytest.raises(ValueError, match="SelectiveKernel expected channels=16 to be divisible by groups=32"):
        attncourse.create("sk", 16)
    assert attncourse.create("sk", 16, groups=8).hidden == 32


def test_error_names_module_and_both_shapes():
    with pytest.raises(ValueError) as info:
        attncourse.create("sk", 64)(torch.randn(2, 32, 7, 9))
    msg = str(info.value)
    assert "SelectiveKernel" in msg and "(B, 64, H, W)" in msg and "(2, 32, 7, 9)" in msg
