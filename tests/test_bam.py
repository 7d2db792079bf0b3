"""BAM against the paper's equations (Park et al., BMVC 2018) and the official code's variant."""

import pytest
import torch
import torch.nn.functional as F

import attncourse
from attncourse.cost import count_flops, count_parameters
from attncourse.hybrid.bam import BAM
from attncourse.plot import capture_gates


# ---------------------------------------------------------------------------------------------
# A naive derivation: explicit sums, matrix products and a loop over the 3×3 taps of the
# dilated convolutions (no F.conv2d, no nn.Linear), and batch norm written out.


def naive_bn(t, bn, training):
    """BatchNorm over every axis but 1, written out (biased variance in training, as PyTorch)."""
    axes = [a for a in range(t.dim()) if a != 1]
    shape = [1] * t.dim()
    shape[1] = -1
    if training:
        mean = t.mean(axes, keepdim=True)
        var = ((t - mean) ** 2).mean(axes, keepdim=True)
    else:
        mean, var = bn.running_mean.view(shape), bn.running_var.view(shape)
    return (t - mean) / torch.sqrt(var + bn.eps) * bn.weight.view(shape) + bn.bias.view(shape)


def naive_conv(t, conv):
    """A k×k convolution with dilation d and zero padding d·(k//2), as a sum over its k² taps."""
    w, b = conv.weight, conv.bias
    d, k = conv.dilation[0], w.shape[-1]
    B, _, H, W = t.shape
    p = d * (k // 2)
    tp = F.pad(t, (p, p, p, p))
    out = b.view(1, -1, 1, 1).expand(B, -1, H, W)
    for u in range(k):
        for v in range(k):
            out = out + torch.einsum("oc,bchw->bohw", w[:, :, u, v], tp[:, :, d * u : d * u + H, d * v : d * v + W])
    return out


def naive_bam(x, m, training=False):
    """Eqs. (1)-(4) of the paper with the module's weights, in the module's BN layout."""
    B, C, H, W = x.shape
    cb, sb, hid = m.channel_branch, m.spatial_branch, m.bn == "hidden"
    # (3) channel branch
    z = x.sum((2, 3)) / (H * W)  # AvgPool(F)
    a = z @ cb.fc0.weight.T + cb.fc0.bias  # W0 z + b0
    a = torch.relu(naive_bn(a, cb.bn0, training) if hid else a)
    mc = a @ cb.fc1.weight.T + cb.fc1.bias  # W1 δ(.) + b1
    mc = mc if hid else naive_bn(mc, cb.bn, training)
    # (4) spatial branch
    s = x
    for i in range(3):
        s = naive_conv(s, getattr(sb, f"f{i}"))
        s = torch.relu(naive_bn(s, getattr(sb, f"bn{i}"), training) if hid else s)
    ms = naive_conv(s, sb.f3)
    ms = ms if hid else naive_bn(ms, sb.bn, training)
    # (2) combine, broadcasting (B, C, 1, 1) with (B, 1, H, W)
    mc = mc.view(B, C, 1, 1)
    att = torch.sigmoid(mc + ms if m.combine == "sum" else mc * ms)
    return x + x * att  # (1)


def randomize(m, seed=0):
    """Random weights and random BN running statistics (positive variances)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.5)
        for name, buf in m.named_buffers():
            if name.endswith("running_mean"):
                buf.copy_(torch.randn(buf.shape, generator=g, dtype=buf.dtype) * 0.3)
            elif name.endswith("running_var"):
                buf.copy_(torch.rand(buf.shape, generator=g, dtype=buf.dtype) + 0.5)
    return m


# ---------------------------------------------------------------------------------------------
# Parameters: the chapter's formulas.


def bam_params(C, r=16, bn="output"):
    """Paper layout (BN at both outputs): 3Ch + 18h² + 5h + 3C + 3; official: 3Ch + 18h² + 13h + C + 1."""
    h = C // r
    if bn == "output":
        return 3 * C * h + 18 * h * h + 5 * h + 3 * C + 3
    return 3 * C * h + 18 * h * h + 13 * h + C + 1


def test_create_bam_64_has_1271_parameters():
    assert count_parameters(attncourse.create("bam", 64)) == 1271
    assert count_parameters(BAM(64, bn="hidden")) == 1173


@pytest.mark.parametrize("C, r", [(64, 16), (256, 16), (512, 16), (1024, 16), (16, 4), (32, 4), (100, 16)])
@pytest.mark.parametrize("bn", ["output", "hidden"])
@pytest.mark.parametrize("combine", ["sum", "product"])
def test_parameter_formula(C, r, bn, combine):
    assert count_parameters(BAM(C, reduction=r, bn=bn, combine=combine)) == bam_params(C, r, bn)


def test_the_issue_figures():
    assert [bam_params(c) for c in (64, 256, 512, 1024)] == [1271, 17747, 69283, 273731]
    assert [bam_params(c, bn="hidden") for c in (64, 256, 512, 1024)] == [1173, 17361, 68513, 272193]


def test_official_channel_and_spatial_formulas_of_the_notes():
    """papers.md: channel 2C²/r + C + 3C/r and spatial C²/r + 3C/r + 2(9(C/r)² + 3C/r) + C/r + 1."""
    for C in (64, 256, 512, 1024):
        m, h = BAM(C, bn="hidden"), C // 16
        assert count_parameters(m.channel_branch) == 2 * C * h + C + 3 * h
        assert count_parameters(m.spatial_branch) == C * h + 3 * h + 2 * (9 * h * h + 3 * h) + h + 1


def test_resnet50_three_modules():
    """One BAM after layer1, layer2, layer3 of ResNet-50 (C = 256, 512, 1024)."""
    official = sum(count_parameters(BAM(c, bn="hidden")) for c in (256, 512, 1024))
    paper = sum(count_parameters(BAM(c)) for c in (256, 512, 1024))
    assert official == 358_067
    assert paper == 360_761
    # the difference is 2C + 2 - 8h per module: two output BNs (2C + 2) instead of four hidden BNs (8h)
    assert paper - official == sum(2 * c + 2 - 8 * (c // 16) for c in (256, 512, 1024))


def test_flops_are_the_linear_layers_and_convolutions():
    m, (B, C, H, W) = BAM(64), (2, 64, 7, 9)
    h = C // 16
    expected = 2 * B * (2 * C * h + H * W * (C * h + 2 * 9 * h * h + h))  # 2 FLOPs per multiply-add
    assert count_flops(m, torch.randn(B, C, H, W)) == expected


# ---------------------------------------------------------------------------------------------
# Equality with the derivation.


@pytest.mark.parametrize("shape", [(2, 32, 7, 5), (3, 32, 4, 9), (2, 32, 1, 1), (2, 32, 3, 13)])
@pytest.mark.parametrize("bn", ["output", "hidden"])
@pytest.mark.parametrize("combine", ["sum", "product"])
@pytest.mark.parametrize("training", [False, True])
def test_matches_the_equations_on_random_weights(shape, bn, combine, training):
    m = randomize(BAM(32, reduction=4, bn=bn, combine=combine).double()).train(training)
    x = torch.randn(shape, dtype=torch.float64)
    torch.testing.assert_close(m(x), naive_bam(x, m, training))


@pytest.mark.parametrize("dilation", [1, 2, 3, 6])
def test_matches_the_equations_for_other_dilations(dilation):
    m = randomize(BAM(16, reduction=4, dilation=dilation).double()).eval()
    x = torch.randn(2, 16, 5, 11, dtype=torch.float64)
    torch.testing.assert_close(m(x), naive_bam(x, m))


def test_the_naive_reference_can_fail():
    """Wrong variants must not match: another combine, another BN layout, no residual, no dilation."""
    m = randomize(BAM(32, reduction=4).double()).eval()
    x = torch.randn(2, 32, 6, 7, dtype=torch.float64)
    y = m(x)
    for wrong in (
        BAM(32, reduction=4, combine="product"),
        BAM(32, reduction=4, bn="hidden"),
        BAM(32, reduction=4, dilation=1),
    ):
        wrong = randomize(wrong.double()).eval()
        assert not torch.allclose(y, naive_bam(x, wrong))
    no_residual = naive_bam(x, m) - x
    assert not torch.allclose(y, no_residual)


def test_branches_and_gate():
    m = randomize(BAM(16, reduction=4)).eval()
    x = torch.randn(3, 16, 5, 7)
    mc, ms = m.branches(x)
    assert mc.shape == (3, 16, 1, 1) and ms.shape == (3, 1, 5, 7)
    gates = capture_gates(m, x)
    att = gates["gate"]
    assert att.shape == (3, 16, 5, 7) and ((att > 0) & (att < 1)).all()
    torch.testing.assert_close(att, torch.sigmoid(mc + ms))
    torch.testing.assert_close(m(x), x * (1 + att))


def test_product_is_the_official_formula():
    """The official code: att = 1 + σ(M_c · M_s), output att · F."""
    m = randomize(BAM(16, reduction=4, combine="product", bn="hidden")).eval()
    x = torch.randn(2, 16, 6, 5)
    mc, ms = m.branches(x)
    torch.testing.assert_close(m(x), (1 + torch.sigmoid(mc * ms)) * x)


# ---------------------------------------------------------------------------------------------
# The spatial map keeps H × W (public implementations padded the dilated convs by 1).


@pytest.mark.parametrize("size", [(3, 5), (1, 1), (5, 3), (1, 9), (2, 17), (7, 7), (16, 16), (4, 4), (8, 3)])
@pytest.mark.parametrize("dilation", [4, 1, 2, 7])
def test_spatial_map_keeps_height_and_width(size, dilation):
    m = BAM(32, reduction=4, dilation=dilation).eval()
    x = torch.randn(2, 32, *size)
    sizes = []
    hooks = [layer.register_forward_hook(lambda mod, i, o: sizes.append(tuple(o.shape[-2:])))
             for layer in m.spatial_branch]
    _, ms = m.branches(x)
    for hk in hooks:
        hk.remove()
    assert ms.shape == (2, 1, *size)
    assert sizes == [size] * len(m.spatial_branch)  # every layer, not only the last
    assert m(x).shape == x.shape


def test_padding_equals_dilation():
    m = BAM(32, dilation=4)
    for conv in (m.spatial_branch.f1, m.spatial_branch.f2):
        assert conv.padding == (4, 4) and conv.dilation == (4, 4) and conv.kernel_size == (3, 3)


def test_receptive_field_is_a_lattice_of_step_d():
    """M_s(i, j) sees exactly the pixels (i + d·a, j + d·b), |a|, |b| <= 2: two dilated 3×3 convs."""
    m = BAM(8, reduction=2, dilation=4).double().eval()
    with torch.no_grad():  # positive weights and input: no ReLU is ever zero, every path is open
        for w in m.parameters():
            w.fill_(0.1)
    x = torch.rand(1, 8, 21, 21, dtype=torch.float64) + 1
    ms = m.branches(x)[1][0, 0, 10, 10]
    changed = set()
    for di in range(-10, 11):
        for dj in range(-10, 11):
            x2 = x.clone()
            x2[0, :, 10 + di, 10 + dj] += 3.0
            if not torch.isclose(m.branches(x2)[1][0, 0, 10, 10], ms, rtol=0, atol=1e-12):
                changed.add((di, dj))
    lattice = {(4 * a, 4 * b) for a in range(-2, 3) for b in range(-2, 3)}
    assert changed == lattice


# ---------------------------------------------------------------------------------------------
# Bad input and hyperparameters; batch 1; gradients.


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"reduction": 0}, "reduction"),
        ({"reduction": 128}, "hidden width"),
        ({"reduction": 65}, "hidden width"),
        ({"reduction": 2.0}, "reduction"),
        ({"dilation": 0}, "dilation"),
        ({"dilation": 1.5}, "dilation"),
        ({"combine": "max"}, "combine"),
        ({"bn": "none"}, "bn"),
    ],
)
def test_bad_hyperparameters(kwargs, words):
    with pytest.raises(ValueError, match=f"BAM.*{words}"):
        BAM(64, **kwargs)


def test_training_with_batch_one_says_why():
    m = BAM(64).train()
    with pytest.raises(ValueError, match="BAM.*batch"):
        m(torch.randn(1, 64, 5, 7))
    with pytest.raises(ValueError, match="BAM.*batch"):
        m.branches(torch.randn(1, 64, 5, 7))
    assert m.eval()(torch.randn(1, 64, 5, 7)).shape == (1, 64, 5, 7)
    assert m.train()(torch.randn(2, 64, 1, 1)).shape == (2, 64, 1, 1)


def test_error_names_module_and_both_shapes():
    with pytest.raises(ValueError) as info:
        attncourse.create("bam", 64)(torch.randn(2, 32, 7, 9))
    msg = str(info.value)
    assert "BAM" in msg and "(B, 64, H, W)" in msg and "(2, 32, 7, 9)" in msg


@pytest.mark.parametrize("combine, bn", [("sum", "output"), ("product", "hidden")])
def test_gradcheck_float64(combine, bn):
    m = randomize(BAM(8, reduction=2, combine=combine, bn=bn).double()).eval()
    x = torch.randn(2, 8, 3, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(m, (x,))
