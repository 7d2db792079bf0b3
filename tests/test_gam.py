"""GAM against the paper's text (Liu et al., arXiv 2112.05561) and the widely copied form."""

import importlib.util
from pathlib import Path

import pytest
import torch

import attncourse
from attncourse.cost import count_flops, count_parameters
from attncourse.hybrid.cbam import CBAM
from attncourse.hybrid.gam import GAM, gam_parameters
from attncourse.plot import capture_gates

import module_checks

ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------- the naive derivation


def naive_channel_map(f, w0, b0, w1, b1, sigmoid=True):
    """M_c: the MLP C -> C/r -> C applied to the channel vector at every (n, i, j), shape (B, C, H, W)."""
    B, C, H, W = f.shape
    out = torch.zeros_like(f)
    for n in range(B):
        for i in range(H):
            for j in range(W):
                v = f[n, :, i, j]  # the channel vector at one position (what the permutation exposes)
                z = w1 @ torch.relu(w0 @ v + b0) + b1
                out[n, :, i, j] = torch.sigmoid(z) if sigmoid else z
    return out


def naive_conv(f, weight, bias):
    """A k×k convolution, zero padding k // 2, with explicit sums over shifts."""
    B, C, H, W = f.shape
    O, _, k, _ = weight.shape
    p = k // 2
    padded = torch.zeros(B, C, H + 2 * p, W + 2 * p, dtype=f.dtype)
    padded[:, :, p : p + H, p : p + W] = f
    out = torch.zeros(B, O, H, W, dtype=f.dtype)
    for u in range(k):
        for v in range(k):
            window = padded[:, :, u : u + H, v : v + W]  # (B, C, H, W)
            out = out + torch.einsum("oc,bchw->bohw", weight[:, :, u, v], window)
    return out + bias[None, :, None, None]


def naive_bn(z, bn, training):
    if training:  # batch statistics over (B, H, W), biased variance
        mean = z.mean((0, 2, 3))
        var = ((z - mean[None, :, None, None]) ** 2).mean((0, 2, 3))
    else:
        mean, var = bn.running_mean, bn.running_var
    zn = (z - mean[None, :, None, None]) / torch.sqrt(var[None, :, None, None] + bn.eps)
    return zn * bn.weight[None, :, None, None] + bn.bias[None, :, None, None]


def naive_spatial_map(f, m, training=False):
    z = torch.relu(naive_bn(naive_conv(f, m.conv0.weight, m.conv0.bias), m.bn0, training))
    return torch.sigmoid(naive_bn(naive_conv(z, m.conv1.weight, m.conv1.bias), m.bn1, training))


def naive_gam(f, m, *, training=False):
    mc = naive_channel_map(f, m.fc0.weight, m.fc0.bias, m.fc1.weight, m.fc1.bias, m.channel_sigmoid)
    f2 = mc * f  # F2 = M_c(F1) ⊗ F1
    return naive_spatial_map(f2, m, training) * f2  # F3 = M_s(F2) ⊗ F2


def randomised(m):
    return module_checks.randomised(m, std=0.5)


# ---------------------------------------------------------------- parameters and FLOPs


def hand_count(C, r, k):
    h = C // r
    mlp = C * h + h + h * C + C  # W0, b0, W1, b1
    conv0 = k * k * C * h + h + 2 * h  # f0 with bias, BN γ β
    conv1 = k * k * h * C + C + 2 * C  # f1 with bias, BN γ β
    return mlp + conv0 + conv1


def test_issue_figures_at_64_channels():
    m = attncourse.create("gam", 64)
    assert m.hidden == 16 and m.channel_sigmoid
    assert count_parameters(m) == 102_720 == 100 * 64 * 16 + 4 * 16 + 4 * 64
    assert count_parameters(GAM(64, channel_sigmoid=False)) == 102_720  # a sigmoid has no weights


@pytest.mark.parametrize("C, r", [(64, 4), (256, 4), (48, 3), (100, 4), (10, 4), (4, 4), (64, 16)])
@pytest.mark.parametrize("k", [3, 7])
def test_parameter_formula(C, r, k):
    m = GAM(C, reduction=r, kernel_size=k)
    assert count_parameters(m) == gam_parameters(C, r, k) == hand_count(C, r, k)


@pytest.mark.parametrize("C", [64, 256, 1024])
def test_about_25_c_squared_at_r_4(C):
    p = gam_parameters(C)
    assert p == 25 * C * C + 5 * C  # 100·C·(C/4) + 4·(C/4) + 4C when 4 divides C
    assert 25 * C * C < p < 25.1 * C * C if C >= 64 else True


def test_beside_a_resnet50_bottleneck_and_cbam_se_at_256():
    C, mid = 256, 64  # ResNet-50 stage 1 bottleneck: 1×1 256->64, 3×3 64->64, 1×1 64->256 (no biases)
    bottleneck = C * mid + 9 * mid * mid + mid * C
    assert bottleneck == 69_632
    gam = count_parameters(GAM(C))
    assert gam == 1_639_680
    assert 23.5 < gam / bottleneck < 23.6
    se = count_parameters(attncourse.create("se", C))
    cbam = count_parameters(CBAM(C))
    assert (se, cbam) == (8_464, 8_563)  # r = 16: 2·256·16 + 16 + 256, plus 2·49 + 1
    assert gam / cbam > 190


@pytest.mark.parametrize("k", [3, 7])
@pytest.mark.parametrize("sig", [True, False])
def test_flops_are_the_mlp_and_the_two_convs(k, sig):
    # 2 FLOPs per multiply-add: MLP 2·BHW·2Ch, convs 2·BHW·k²·2Ch; BN, sigmoid, products count zero.
    B, C, H, W, r = 2, 32, 7, 9, 4
    h = C // r
    m = GAM(C, reduction=r, kernel_size=k, channel_sigmoid=sig).eval()
    assert count_flops(m, torch.randn(B, C, H, W)) == 4 * B * H * W * C * h * (1 + k * k)


# ---------------------------------------------------------------- equality with the equations


@pytest.mark.parametrize("sig", [True, False])
@pytest.mark.parametrize("training", [False, True])
@pytest.mark.parametrize("shape", [(2, 8, 5, 4), (1, 8, 3, 7), (3, 8, 1, 1), (1, 8, 1, 2)])
def test_matches_the_naive_derivation(sig, training, shape):
    m = randomised(GAM(8, reduction=2, kernel_size=3 if shape[2] < 5 else 7, channel_sigmoid=sig)).train(training)
    f = torch.randn(shape, dtype=torch.float64)
    torch.testing.assert_close(m(f), naive_gam(f, m, training=training))


def test_the_naive_reference_can_fail():
    m = randomised(GAM(8, reduction=2)).eval()
    f = torch.randn(2, 8, 5, 6, dtype=torch.float64)
    out = m(f)
    mc = naive_channel_map(f, m.fc0.weight, m.fc0.bias, m.fc1.weight, m.fc1.bias)
    # (a) the copied form's missing sigmoid
    m.channel_sigmoid = False
    assert not torch.allclose(out, naive_gam(f, m))
    m.channel_sigmoid = True
    # (b) both maps from F1 (parallel) instead of M_s from F2
    assert not torch.allclose(out, naive_spatial_map(f, m) * mc * f)
    # (c) the MLP on the pooled channel vector (CBAM/SE-style) instead of at every position
    pooled = naive_channel_map(f.mean((2, 3), keepdim=True), m.fc0.weight, m.fc0.bias, m.fc1.weight, m.fc1.bias)
    assert not torch.allclose(out, naive_spatial_map(pooled * f, m) * pooled * f)
    # (d) the channel vector read with the wrong permutation (a (C, H·W) reshape read as (H·W, C))
    B, C, H, W = f.shape
    scrambled = f.reshape(B, H * W, C).transpose(1, 2).reshape(B, C, H, W)
    wrong = naive_channel_map(scrambled, m.fc0.weight, m.fc0.bias, m.fc1.weight, m.fc1.bias) * f
    assert not torch.allclose(out, naive_spatial_map(wrong, m) * wrong)


def _bench():
    spec = importlib.util.spec_from_file_location("gam_bench", ROOT / "tools" / "benchmark.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("sig", [True, False])
@pytest.mark.parametrize("training", [False, True])
def test_both_forms_equal_the_copied_code(sig, training):
    bench = _bench()
    m = randomised(GAM(16, channel_sigmoid=sig)).train(training)
    ref = bench.reference_for(m)
    assert ref.channel_sigmoid is sig
    bench.check_reference(m, ref, torch.randn(2, 16, 6, 5, dtype=torch.float64), rtol=1e-10, atol=1e-12)


# ---------------------------------------------------------------- gates and maps


@pytest.mark.parametrize("sig", [True, False])
@pytest.mark.parametrize("shape", [(2, 16, 1, 1), (1, 16, 2, 3), (2, 16, 9, 5)])
def test_maps_are_full_size_and_multiply_in(sig, shape):
    m = GAM(16, channel_sigmoid=sig).eval()
    x = torch.randn(shape)
    g = capture_gates(m, x)
    assert set(g) == {"channel_gate", "spatial_gate"}
    assert g["channel_gate"].shape == shape and g["spatial_gate"].shape == shape
    torch.testing.assert_close(m(x), g["spatial_gate"] * g["channel_gate"] * x)
    assert ((g["spatial_gate"] > 0) & (g["spatial_gate"] < 1)).all()
    if sig:
        assert ((g["channel_gate"] > 0) & (g["channel_gate"] < 1)).all()


def test_copied_form_channel_map_is_signed_and_unbounded():
    torch.manual_seed(0)
    m = GAM(16, channel_sigmoid=False).eval()
    g = capture_gates(m, torch.randn(2, 16, 6, 6) * 5)
    assert (g["channel_gate"] < 0).any()


# ---------------------------------------------------------------- batch norm in training mode


def test_train_batch_one_works_when_h_w_above_one():
    m = GAM(16).double().train()
    x = torch.randn(1, 16, 7, 5, dtype=torch.float64, requires_grad=True)
    y = m(x)
    y.square().sum().backward()
    assert y.shape == x.shape and torch.isfinite(x.grad).all()


def test_train_batch_one_at_one_pixel_says_why():
    m = GAM(16).train()
    with pytest.raises(ValueError, match=r"GAM.*batch.*\(1, 16, 1, 1\)"):
        m(torch.randn(1, 16, 1, 1))
    assert m(torch.randn(2, 16, 1, 1)).shape == (2, 16, 1, 1)
    assert m.eval()(torch.randn(1, 16, 1, 1)).shape == (1, 16, 1, 1)


# ---------------------------------------------------------------- gradients


@pytest.mark.parametrize("sig", [True, False])
@pytest.mark.parametrize("training", [False, True])
def test_gradcheck_float64(sig, training):
    m = randomised(GAM(4, reduction=2, kernel_size=3, channel_sigmoid=sig)).train(training)
    x = torch.randn(2, 4, 3, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(m, (x,))


# ---------------------------------------------------------------- bad input and bad options


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"reduction": 0}, "reduction"),
        ({"reduction": 128}, r"hidden width C/r.*channels=64, reduction=128"),
        ({"reduction": 65}, "hidden width"),
        ({"reduction": 2.0}, "reduction"),
        ({"kernel_size": 4}, "odd kernel_size"),
        ({"kernel_size": 0}, "kernel_size"),
        ({"kernel_size": True}, "kernel_size"),
        ({"channel_sigmoid": "yes"}, "channel_sigmoid"),
        ({"channel_sigmoid": None}, "channel_sigmoid"),
    ],
)
def test_bad_options(kwargs, words):
    with pytest.raises(ValueError, match=f"GAM.*{words}"):
        GAM(64, **kwargs)


def test_smallest_valid_width():
    assert GAM(4).hidden == 1 and GAM(7).hidden == 1
    for C in (1, 2, 3):
        with pytest.raises(ValueError, match="GAM.*at least 1"):
            GAM(C)
    with pytest.raises(ValueError, match="GAM.*channels"):
        GAM(0)


@pytest.mark.parametrize(
    "x, words",
    [
        (torch.randn(2, 32, 7, 9), ["GAM", "(B, 64, H, W)", "(2, 32, 7, 9)"]),
        (torch.randn(64, 7, 9), ["GAM", "4-D", "(64, 7, 9)"]),
        (torch.ones(2, 64, 7, 9, dtype=torch.int64), ["GAM", "floating", "int64"]),
        ("not a tensor", ["GAM", "torch.Tensor", "str"]),
    ],
)
@pytest.mark.parametrize("training", [False, True])
def test_bad_input(x, words, training):
    with pytest.raises(ValueError) as info:
        GAM(64).train(training)(x)
    for w in words:
        assert w in str(info.value)


def test_registered_and_created_with_options():
    m = attncourse.create("gam", 32, reduction=8, channel_sigmoid=False)
    assert isinstance(m, GAM) and m.hidden == 4 and not m.channel_sigmoid
    assert "channel_sigmoid=False" in repr(m)
