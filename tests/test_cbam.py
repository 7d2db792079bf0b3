"""CBAM against the paper's equations (Woo et al., ECCV 2018) and the official code's variant."""

import itertools

import pytest
import torch

import attncourse
from attncourse.cost import count_flops, count_parameters
from attncourse.hybrid.cbam import CBAM, ChannelAttention, SpatialAttention
from attncourse.plot import capture_gates

from module_checks import randomised

ORDERS = ["channel-spatial", "spatial-channel", "parallel"]


# ---------------------------------------------------------------- the naive derivation


def naive_channel_map(f, w0, b0, w1, b1):
    """Eq. (2), one image and one descriptor at a time: σ(MLP(avg) + MLP(max)), shape (B, C)."""
    B, C, H, W = f.shape
    rows = []
    for n in range(B):
        avg = torch.stack([f[n, c].sum() / (H * W) for c in range(C)])  # F^c_avg
        mx = torch.stack([f[n, c].max() for c in range(C)])  # F^c_max
        mlp_avg = w1 @ torch.relu(w0 @ avg + b0) + b1  # MLP(F^c_avg)
        mlp_max = w1 @ torch.relu(w0 @ mx + b0) + b1  # MLP(F^c_max), the same weights
        rows.append(torch.sigmoid(mlp_avg + mlp_max))
    return torch.stack(rows)


def naive_spatial_map(f, weight, bias, pool_order="avg-max", bn=None, bn_training=False):
    """Eq. (3) with an explicit zero-padded convolution; ``bn = (gamma, beta, mean, var, eps)``."""
    B, C, H, W = f.shape
    k = weight.shape[-1]
    p = k // 2
    avg = f.sum(1) / C  # F^s_avg: (B, H, W)
    mx = f.max(1).values  # F^s_max
    maps = [avg, mx] if pool_order == "avg-max" else [mx, avg]
    z = torch.zeros(B, H, W, dtype=f.dtype)
    for m, plane in enumerate(maps):
        padded = torch.zeros(B, H + 2 * p, W + 2 * p, dtype=f.dtype)
        padded[:, p : p + H, p : p + W] = plane
        for u in range(k):
            for v in range(k):
                z = z + weight[0, m, u, v] * padded[:, u : u + H, v : v + W]
    if bias is not None:
        z = z + bias[0]
    if bn is not None:
        gamma, beta, mean, var, eps = bn
        if bn_training:  # batch statistics over (B, H, W), biased variance
            mean, var = z.mean(), ((z - z.mean()) ** 2).mean()
        z = (z - mean) / torch.sqrt(var + eps) * gamma + beta
    return torch.sigmoid(z).unsqueeze(1)  # (B, 1, H, W)


def naive_cbam(f, m: CBAM, *, training=False):
    """Eq. (1) (or the other orders) from the naive maps, with the weights of ``m``."""
    ca, sa = m.channel_attention, m.spatial_attention
    b0 = ca.fc0.bias if ca.fc0.bias is not None else torch.zeros(ca.hidden, dtype=f.dtype)
    b1 = ca.fc1.bias if ca.fc1.bias is not None else torch.zeros(m.channels, dtype=f.dtype)
    bn = None
    if m.spatial_norm:
        bn = (sa.norm.weight[0], sa.norm.bias[0], sa.norm.running_mean[0], sa.norm.running_var[0], sa.norm.eps)

    def mc(g):
        return naive_channel_map(g, ca.fc0.weight, b0, ca.fc1.weight, b1)[:, :, None, None]

    def ms(g):
        return naive_spatial_map(g, sa.conv.weight, sa.conv.bias, m.pool_order, bn, training)

    if m.order == "channel-spatial":
        f1 = mc(f) * f
        return ms(f1) * f1
    if m.order == "spatial-channel":
        f1 = ms(f) * f
        return mc(f1) * f1
    return mc(f) * ms(f) * f


def cbam_params(C, r=16, k=7, norm=False, bias=True):
    h = C // r
    mlp = 2 * C * h + ((h + C) if bias else 0)
    return mlp + 2 * k * k + (2 if norm else 1)


# ---------------------------------------------------------------- parameters and FLOPs


def test_issue_figures_at_64_channels():
    m = attncourse.create("cbam", 64)
    assert count_parameters(m.channel_attention) == 580  # 2·64·4 + 4 + 64
    assert count_parameters(m.spatial_attention) == 2 * 7 * 7 + 1  # f^{7×7} with its bias
    assert count_parameters(m) == 679
    official = CBAM(64, spatial_norm=True, pool_order="max-avg")
    assert count_parameters(official.spatial_attention) == 2 * 7 * 7 + 2  # no conv bias, BN γ and β
    assert count_parameters(official) == 680


@pytest.mark.parametrize("C, r", [(64, 16), (256, 16), (48, 4), (100, 16), (16, 4)])
@pytest.mark.parametrize("k", [3, 7])
@pytest.mark.parametrize("norm, bias", [(False, True), (True, True), (False, False)])
def test_parameter_formula(C, r, k, norm, bias):
    m = CBAM(C, reduction=r, kernel_size=k, spatial_norm=norm, bias=bias)
    assert count_parameters(m) == cbam_params(C, r, k, norm, bias)
    if C % r == 0 and bias:
        assert count_parameters(m) == 2 * C * C // r + C // r + C + 2 * k * k + (2 if norm else 1)


def test_resnet50_total_matches_papers_calc():
    """16 bottlenecks of widths 256, 512, 1024, 2048 (3, 4, 6, 3 blocks), official mode."""
    stages = [(256, 3), (512, 4), (1024, 6), (2048, 3)]
    total = sum(n * count_parameters(CBAM(c, spatial_norm=True)) for c, n in stages)
    assert total == 2_532_592


@pytest.mark.parametrize("order", ORDERS)
def test_flops_are_the_mlp_and_the_conv(order):
    # FlopCounterMode: 2 FLOPs per multiply-add. MLP on 2 descriptors: 2·(2B)·(C·h + h·C);
    # conv: B·H·W outputs × 2k² multiply-adds each. Biases, pools and products count zero.
    B, C, H, W, r, k = 2, 64, 7, 9, 16, 7
    m = CBAM(C, reduction=r, kernel_size=k, order=order)
    assert count_flops(m, torch.randn(B, C, H, W)) == 8 * B * C * (C // r) + 4 * k * k * B * H * W


# ---------------------------------------------------------------- equality with the equations


@pytest.mark.parametrize(
    "order, norm, pool_order, bias",
    list(itertools.product(ORDERS, [False, True], ["avg-max", "max-avg"], [True, False])),
)
def test_matches_the_naive_derivation_in_every_option(order, norm, pool_order, bias):
    m = randomised(CBAM(12, reduction=3, order=order, spatial_norm=norm, pool_order=pool_order, bias=bias)).eval()
    f = torch.randn(2, 12, 5, 9, dtype=torch.float64)
    torch.testing.assert_close(m(f), naive_cbam(f, m))


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("shape", [(1, 12, 5, 4), (3, 12, 7, 2)])
def test_official_mode_in_training_uses_batch_statistics(order, shape):
    m = randomised(CBAM(12, reduction=3, order=order, spatial_norm=True, pool_order="max-avg")).train()
    f = torch.randn(shape, dtype=torch.float64)
    torch.testing.assert_close(m(f), naive_cbam(f, m, training=True))


@pytest.mark.parametrize("shape", [(2, 8, 1, 1), (1, 8, 3, 11), (2, 8, 10, 3)])
@pytest.mark.parametrize("k", [3, 7])
def test_matches_on_small_and_odd_sizes(shape, k):
    m = randomised(CBAM(8, reduction=2, kernel_size=k)).eval()
    f = torch.randn(shape, dtype=torch.float64)
    torch.testing.assert_close(m(f), naive_cbam(f, m))


def test_the_naive_reference_can_fail():
    """Guard against a vacuous equality: plausible wrong variants must not match."""
    m = randomised(CBAM(12, reduction=3)).eval()
    f = torch.randn(2, 12, 5, 9, dtype=torch.float64)
    out = m(f)
    # (a) spatial-first instead of channel-first
    m.order = "spatial-channel"
    assert not torch.allclose(out, naive_cbam(f, m))
    m.order = "channel-spatial"
    # (b) the MLP applied once to the summed descriptors (one bias W1 instead of two)
    ca = m.channel_attention
    d = f.mean((2, 3)) + f.amax((2, 3))
    wrong_mc = torch.sigmoid(ca.fc1(torch.relu(ca.fc0(d))))[..., None, None]
    f1 = wrong_mc * f
    wrong = naive_spatial_map(f1, m.spatial_attention.conv.weight, m.spatial_attention.conv.bias) * f1
    assert not torch.allclose(out, wrong)
    # (c) [max; avg] fed to the conv trained for [avg; max]
    f1 = naive_channel_map(f, ca.fc0.weight, ca.fc0.bias, ca.fc1.weight, ca.fc1.bias)[..., None, None] * f
    swapped = naive_spatial_map(f1, m.spatial_attention.conv.weight, m.spatial_attention.conv.bias, "max-avg") * f1
    assert not torch.allclose(out, swapped)


def test_pool_order_is_a_swap_of_the_conv_input_channels():
    paper = randomised(CBAM(12, reduction=3)).eval()
    official_order = CBAM(12, reduction=3, pool_order="max-avg").double().eval()
    official_order.load_state_dict(paper.state_dict())
    f = torch.randn(2, 12, 6, 5, dtype=torch.float64)
    assert not torch.allclose(official_order(f), paper(f))
    with torch.no_grad():
        official_order.spatial_attention.conv.weight.copy_(paper.spatial_attention.conv.weight.flip(1))
    torch.testing.assert_close(official_order(f), paper(f))


# ---------------------------------------------------------------- gates and spatial maps


@pytest.mark.parametrize("shape", [(2, 16, 1, 1), (1, 16, 2, 3), (3, 16, 9, 16), (2, 16, 7, 5)])
@pytest.mark.parametrize("k", [3, 7])
def test_spatial_map_keeps_h_and_w(shape, k):
    m = CBAM(16, reduction=4, kernel_size=k)
    gates = capture_gates(m, torch.randn(shape))
    B, C, H, W = shape
    assert set(gates) == {"channel_attention.gate", "spatial_attention.gate"}
    assert gates["channel_attention.gate"].shape == (B, C)
    assert gates["spatial_attention.gate"].shape == (B, 1, H, W)
    assert m.channel_attention.gate.kind == "channel" and m.spatial_attention.gate.kind == "spatial"


@pytest.mark.parametrize("order", ORDERS)
def test_output_is_the_product_of_the_captured_maps(order):
    m = CBAM(16, reduction=4, order=order).eval()
    x = torch.randn(2, 16, 5, 7)
    g = capture_gates(m, x)
    mc, ms = g["channel_attention.gate"][..., None, None], g["spatial_attention.gate"]
    y = m(x)
    # each gate ran once; whichever order, F'' = M_c ⊗ M_s ⊗ F with the maps as computed
    torch.testing.assert_close(y, mc * ms * x)


@pytest.mark.parametrize("shape", [(2, 8, 7, 5), (1, 8, 9, 16), (3, 8, 1, 1), (2, 8, 4, 11)])
@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("norm", [False, True])
def test_shapes_on_non_square_and_odd_sizes(shape, order, norm):
    m = CBAM(8, reduction=2, order=order, spatial_norm=norm).eval()
    x = torch.randn(shape)
    assert m(x).shape == x.shape


def test_official_mode_starts_with_a_flat_half_map():
    m = CBAM(16, reduction=4, spatial_norm=True, pool_order="max-avg")
    assert torch.all(m.spatial_attention.norm.weight == 0)
    for mode in (True, False):
        m.train(mode)
        with attncourse.plot.recording(m) as out:
            m(torch.randn(4, 16, 6, 5))
        torch.testing.assert_close(out["spatial_attention.gate"], torch.full((4, 1, 6, 5), 0.5))


# ---------------------------------------------------------------- batch size 1 with batch norm


def test_official_mode_train_batch_one_works_when_h_w_above_one():
    m = CBAM(16, reduction=4, spatial_norm=True).double().train()
    x = torch.randn(1, 16, 7, 5, dtype=torch.float64, requires_grad=True)
    y = m(x)
    y.square().sum().backward()
    assert y.shape == x.shape and torch.isfinite(x.grad).all()


def test_official_mode_train_batch_one_at_one_pixel_says_why():
    m = CBAM(16, reduction=4, spatial_norm=True).train()
    with pytest.raises(ValueError, match=r"CBAM.*batch.*\(1, 16, 1, 1\)"):
        m(torch.randn(1, 16, 1, 1))
    with pytest.raises(ValueError, match=r"SpatialAttention.*batch"):
        m.spatial_attention(torch.randn(1, 16, 1, 1))
    m.eval()
    assert m(torch.randn(1, 16, 1, 1)).shape == (1, 16, 1, 1)  # running statistics: fine
    m.train()
    assert m(torch.randn(2, 16, 1, 1)).shape == (2, 16, 1, 1)  # two values: fine


# ---------------------------------------------------------------- gradients


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("norm", [False, True])
def test_gradcheck_float64(order, norm):
    m = randomised(CBAM(4, reduction=2, kernel_size=3, order=order, spatial_norm=norm)).train()
    x = torch.randn(2, 4, 2, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(m, (x,))


# ---------------------------------------------------------------- bad input and bad options


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"reduction": 0}, "reduction"),
        ({"reduction": 128}, "hidden width"),
        ({"reduction": 2.0}, "reduction"),
        ({"kernel_size": 4}, "odd kernel_size"),
        ({"kernel_size": 0}, "kernel_size"),
        ({"kernel_size": True}, "kernel_size"),
        ({"order": "channel-first"}, "order"),
        ({"order": None}, "order"),
        ({"pool_order": "mean-max"}, "pool_order"),
        ({"spatial_norm": "yes"}, "spatial_norm"),
        ({"bias": None}, "bias"),
    ],
)
def test_bad_options(kwargs, words):
    with pytest.raises(ValueError, match=f"CBAM.*{words}"):
        CBAM(64, **kwargs)


def test_submodules_validate_their_options_too():
    with pytest.raises(ValueError, match="ChannelAttention.*hidden width"):
        ChannelAttention(8, reduction=16)
    with pytest.raises(ValueError, match="SpatialAttention.*odd"):
        SpatialAttention(kernel_size=6)
    with pytest.raises(ValueError, match="SpatialAttention.*pool_order"):
        SpatialAttention(pool_order="max")


@pytest.mark.parametrize(
    "x, words",
    [
        (torch.randn(2, 32, 7, 9), ["CBAM", "(B, 64, H, W)", "(2, 32, 7, 9)"]),
        (torch.randn(64, 7, 9), ["CBAM", "4-D", "(64, 7, 9)"]),
        (torch.ones(2, 64, 7, 9, dtype=torch.int64), ["CBAM", "floating", "int64"]),
        ("not a tensor", ["CBAM", "torch.Tensor", "str"]),
    ],
)
@pytest.mark.parametrize("norm", [False, True])
def test_bad_input(x, words, norm):
    with pytest.raises(ValueError) as info:
        CBAM(64, spatial_norm=norm)(x)
    for w in words:
        assert w in str(info.value)


def test_registered_and_created_with_options():
    m = attncourse.create("cbam", 32, reduction=4, order="parallel")
    assert isinstance(m, CBAM) and m.hidden == 8 and m.order == "parallel"
