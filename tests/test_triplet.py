"""Triplet Attention against the paper's equations (Misra et al., WACV 2021) and the official code."""

import copy
import importlib.util
import pathlib

import pytest
import torch

import attncourse
from attncourse.cost import count_flops, count_parameters
from attncourse.hybrid.triplet import TripletAttention
from attncourse.plot import capture_gates, recording

from module_checks import randomised

# ---------------------------------------------------------------- the naive derivation


def naive_gate(xr, conv_w, bn, training):
    """One branch on the rotated tensor χ̂ (B, L, P, Q): Z-pool along L, an explicit zero-padded
    k×k convolution, batch norm, sigmoid, χ̂ ⊙ map. ``bn = (gamma, beta, mean, var, eps)``."""
    B, L, P, Q = xr.shape
    k = conv_w.shape[-1]
    p = k // 2
    planes = [xr.max(dim=1).values, xr.sum(dim=1) / L]  # Z-pool: [MaxPool_0d; AvgPool_0d], each (B, P, Q)
    z = torch.zeros(B, P, Q, dtype=xr.dtype)
    for m, plane in enumerate(planes):
        padded = torch.zeros(B, P + 2 * p, Q + 2 * p, dtype=xr.dtype)
        padded[:, p : p + P, p : p + Q] = plane
        for u in range(k):
            for v in range(k):
                z = z + conv_w[0, m, u, v] * padded[:, u : u + P, v : v + Q]
    gamma, beta, mean, var, eps = bn
    if training:  # batch statistics over (B, P, Q), biased variance
        mean, var = z.mean(), ((z - z.mean()) ** 2).mean()
    z = (z - mean) / torch.sqrt(var + eps) * gamma + beta
    return xr * torch.sigmoid(z).unsqueeze(1)


def _bn(branch):
    b = branch.bn
    return (b.weight[0], b.bias[0], b.running_mean[0], b.running_var[0], b.eps)


def naive_triplet(x, m: TripletAttention, *, training=False):
    """y = 1/3 (ȳ1 + ȳ2 + y3) with explicit rotations (permute, gate, permute back)."""
    x1 = x.permute(0, 3, 2, 1)  # χ̂1: C↔W, (B, W, H, C)
    y1 = naive_gate(x1, m.hc.conv.weight, _bn(m.hc), training).permute(0, 3, 2, 1)  # ȳ1
    x2 = x.permute(0, 2, 1, 3)  # χ̂2: C↔H, (B, H, C, W)
    y2 = naive_gate(x2, m.cw.conv.weight, _bn(m.cw), training).permute(0, 2, 1, 3)  # ȳ2
    if m.no_spatial:
        return (y1 + y2) / 2
    y3 = naive_gate(x, m.hw.conv.weight, _bn(m.hw), training)
    return (y1 + y2 + y3) / 3


def triplet_params(k=7, no_spatial=False):
    return (2 if no_spatial else 3) * (2 * k * k + 2)


# ---------------------------------------------------------------- parameters and FLOPs


def test_issue_figure_300_at_k7_and_buffers_are_not_parameters():
    m = attncourse.create("triplet", 64)
    assert count_parameters(m) == 300 == 3 * (2 * 7 * 7 + 2)
    for branch in (m.hc, m.cw, m.hw):
        assert count_parameters(branch.conv) == 2 * 7 * 7 and branch.conv.bias is None
        assert count_parameters(branch.bn) == 2  # γ and β
    # running mean, running var, num_batches_tracked: 3 buffers per BN, not counted
    assert sum(1 for _ in m.buffers()) == 9
    assert count_parameters(TripletAttention(64, no_spatial=True)) == 200


@pytest.mark.parametrize("C", [1, 16, 64, 256, 100])
@pytest.mark.parametrize("k", [1, 3, 5, 7])
@pytest.mark.parametrize("no_spatial", [False, True])
def test_parameter_formula_is_independent_of_c(C, k, no_spatial):
    m = TripletAttention(C, kernel_size=k, no_spatial=no_spatial)
    assert count_parameters(m) == triplet_params(k, no_spatial)


def test_resnet50_total_matches_papers_calc():
    stages = [(256, 3), (512, 4), (1024, 6), (2048, 3)]
    assert sum(n * count_parameters(TripletAttention(c)) for c, n in stages) == 4800


@pytest.mark.parametrize("no_spatial", [False, True])
def test_flops_are_the_three_convolutions(no_spatial):
    # 2 FLOPs per multiply-add; each conv: one output per position of its plane, 2k² multiply-adds each.
    B, C, H, W, k = 2, 16, 7, 9, 7
    m = TripletAttention(C, kernel_size=k, no_spatial=no_spatial).eval()
    planes = B * H * C + B * C * W + (0 if no_spatial else B * H * W)
    assert count_flops(m, torch.randn(B, C, H, W)) == 2 * 2 * k * k * planes


# ---------------------------------------------------------------- equality with the equations


@pytest.mark.parametrize("no_spatial", [False, True])
@pytest.mark.parametrize("k", [3, 7])
@pytest.mark.parametrize("shape", [(2, 12, 5, 9), (1, 6, 1, 1), (3, 5, 8, 2), (2, 1, 4, 3)])
def test_matches_the_naive_derivation_in_eval(no_spatial, k, shape):
    m = randomised(TripletAttention(shape[1], kernel_size=k, no_spatial=no_spatial)).eval()
    x = torch.randn(shape, dtype=torch.float64)
    torch.testing.assert_close(m(x), naive_triplet(x, m))


@pytest.mark.parametrize("no_spatial", [False, True])
@pytest.mark.parametrize("shape", [(2, 12, 5, 9), (1, 7, 6, 4)])
def test_matches_the_naive_derivation_in_training(no_spatial, shape):
    m = randomised(TripletAttention(shape[1], no_spatial=no_spatial)).train()
    x = torch.randn(shape, dtype=torch.float64)
    torch.testing.assert_close(m(x), naive_triplet(x, m, training=True))


def test_the_naive_reference_can_fail():
    """Plausible wrong variants must not match."""
    m = randomised(TripletAttention(12)).eval()
    x = torch.randn(2, 12, 5, 9, dtype=torch.float64)
    out = m(x)
    assert torch.allclose(out, naive_triplet(x, m))
    # (a) the two rotated branches' weights exchanged (a map over (H, C) is not one over (C, W))
    swapped = copy.deepcopy(m)
    swapped.hc.load_state_dict(m.cw.state_dict())
    swapped.cw.load_state_dict(m.hc.state_dict())
    assert not torch.allclose(out, naive_triplet(x, swapped))
    # (b) Z-pool as [mean; max] instead of [max; mean]
    flipped = copy.deepcopy(m)
    with torch.no_grad():
        for b in (flipped.hc, flipped.cw, flipped.hw):
            b.conv.weight.copy_(b.conv.weight.flip(1))
    assert not torch.allclose(out, naive_triplet(x, flipped))
    # (c) the sum instead of the average
    assert not torch.allclose(out * 3, naive_triplet(x, m))
    # (d) a true 90° rotation that reverses C (torch.rot90 with k = -1) with the same kernel
    assert not torch.allclose(out, _with_rotated_branch_1(x, m, -1, m.hc.conv.weight))


def _with_rotated_branch_1(x, m, turns, w):
    """The module's output with branch 1 done by torch.rot90 (``turns`` quarter turns in the (C, W) plane)."""
    r1 = torch.rot90(x, turns, dims=(1, 3))  # (B, W, H, C): one of W or C comes out reversed
    y1 = torch.rot90(naive_gate(r1, w, _bn(m.hc), False), -turns, dims=(1, 3))
    y2 = naive_gate(x.permute(0, 2, 1, 3), m.cw.conv.weight, _bn(m.cw), False).permute(0, 2, 1, 3)
    y3 = naive_gate(x, m.hw.conv.weight, _bn(m.hw), False)
    return (y1 + y2 + y3) / 3


def test_a_true_rotation_is_the_permutation_up_to_a_flipped_kernel():
    """rot90 = a permutation plus the reversal of one axis. Reversing the pooled (leading) axis W
    changes nothing (max and mean do not care); reversing C flips the map's C axis, which the
    conv kernel flipped along that axis undoes: the same function class either way."""
    m = randomised(TripletAttention(12)).eval()
    x = torch.randn(2, 12, 5, 9, dtype=torch.float64)
    torch.testing.assert_close(m(x), _with_rotated_branch_1(x, m, 1, m.hc.conv.weight))  # W reversed
    torch.testing.assert_close(m(x), _with_rotated_branch_1(x, m, -1, m.hc.conv.weight.flip(-1)))  # C reversed


# ---------------------------------------------------------------- the official code


def _benchmark():
    path = pathlib.Path(__file__).resolve().parents[1] / "tools" / "benchmark.py"
    spec = importlib.util.spec_from_file_location("_bench_triplet", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("training", [False, True])
def test_equals_the_official_code_output_gradient_and_running_stats(training):
    bench = _benchmark()
    m = randomised(TripletAttention(10, kernel_size=5)).train(training)
    ref = bench.reference_for(m)
    assert isinstance(ref, bench.TripletRef)
    x = torch.randn(3, 10, 6, 7, dtype=torch.float64)
    bench.check_reference(m, ref, x)
    m(x), ref(x)  # one more step each: BN running statistics move alike (momentum 0.01)
    for (n, a), b in zip(m.named_buffers(), ref.buffers()):
        torch.testing.assert_close(b, a, msg=lambda s: f"{n}: {s}")
    bn = m.hw.bn
    assert (bn.eps, bn.momentum) == (1e-5, 0.01)


# ---------------------------------------------------------------- gates, initialisation


@pytest.mark.parametrize("shape", [(2, 16, 1, 1), (1, 16, 2, 3), (3, 16, 9, 16)])
def test_gates_cover_the_axes_they_are_named_after(shape):
    B, C, H, W = shape
    m = TripletAttention(C)
    g = capture_gates(m, torch.randn(shape))
    assert {k: tuple(v.shape) for k, v in g.items()} == {
        "hc.gate": (B, 1, H, C),
        "cw.gate": (B, 1, C, W),
        "hw.gate": (B, 1, H, W),
    }
    assert (m.hc.gate.kind, m.cw.gate.kind, m.hw.gate.kind) == ("hc", "cw", "hw")


def test_output_is_x_times_the_average_of_the_captured_maps():
    m = randomised(TripletAttention(8)).eval()
    x = torch.randn(2, 8, 5, 7, dtype=torch.float64)
    g = capture_gates(m, x)
    a1 = g["hc.gate"].permute(0, 3, 2, 1)  # (B, C, H, 1)
    a2 = g["cw.gate"].permute(0, 2, 1, 3)  # (B, C, 1, W)
    torch.testing.assert_close(m(x), x * (a1 + a2 + g["hw.gate"]) / 3)


def test_initialisation_follows_the_official_resnet():
    m = TripletAttention(16)
    assert torch.all(m.hw.bn.weight == 0) and torch.all(m.hw.bn.bias == 0)
    for b in (m.hc, m.cw):
        assert torch.all(b.bn.weight == 1) and torch.all(b.bn.bias == 0)
    for mode in (True, False):
        m.train(mode)
        with recording(m) as out:
            m(torch.randn(4, 16, 6, 5))
        torch.testing.assert_close(out["hw.gate"], torch.full((4, 1, 6, 5), 0.5))


@pytest.mark.parametrize("k", [3, 7])
def test_gate_kernels_keep_the_pytorch_default_not_the_official_kaiming_normal(k):
    # The docstring: the k x k kernels start as PyTorch's Conv2d default, U(±1/sqrt(2k²)), std
    # 1/sqrt(3·2k²) (0.058 at k = 7); the official ResNet's kaiming_normal_(mode="fan_out") on the
    # same (1, 2, k, k) weight has std sqrt(2/k²) (0.20 at k = 7).
    with torch.random.fork_rng():
        torch.manual_seed(0)
        modules = [TripletAttention(8, kernel_size=k) for _ in range(500)]
        ours = torch.cat([b.conv.weight.detach().flatten() for m in modules for b in (m.hc, m.cw, m.hw)])
        official = torch.cat([torch.nn.init.kaiming_normal_(torch.empty(1, 2, k, k), mode="fan_out").flatten()
                              for _ in range(1500)])
    default_std, official_std = (3 * 2 * k * k) ** -0.5, (2 / (k * k)) ** 0.5
    assert ours.abs().max() <= (2 * k * k) ** -0.5
    assert abs(ours.std().item() / default_std - 1) < 0.03
    assert abs(official.std().item() / official_std - 1) < 0.03
    if k == 7:
        assert (round(default_std, 3), round(official_std, 2)) == (0.058, 0.20)


# ---------------------------------------------------------------- errors, batch 1, gradients


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"kernel_size": 4}, "odd kernel_size"),
        ({"kernel_size": 0}, "kernel_size"),
        ({"kernel_size": 2.0}, "kernel_size"),
        ({"no_spatial": "yes"}, "no_spatial"),
        ({"no_spatial": 1.5}, "no_spatial"),
    ],
)
def test_bad_hyperparameters_are_refused(kwargs, words):
    with pytest.raises(ValueError, match=f"TripletAttention.*{words}"):
        TripletAttention(16, **kwargs)


@pytest.mark.parametrize("shape", [(1, 16, 1, 1), (1, 1, 1, 5), (1, 1, 5, 1)])
def test_train_batch_one_where_a_batch_norm_sees_one_value_says_why(shape):
    m = TripletAttention(shape[1]).train()
    with pytest.raises(ValueError, match=r"TripletAttention.*batch.*" + str(tuple(shape)).replace("(", r"\(").replace(")", r"\)")):
        m(torch.randn(shape))
    m.eval()
    assert m(torch.randn(shape)).shape == shape  # eval mode uses the running statistics


def test_no_spatial_drops_only_the_hw_branch_check():
    m = TripletAttention(1, no_spatial=True).train()
    x = torch.randn(1, 1, 3, 4)
    assert m(x).shape == x.shape  # H x C = 3, C x W = 4: both branches have > 1 value
    with pytest.raises(ValueError, match="batch"):
        TripletAttention(1).train()(torch.randn(1, 1, 1, 1))


@pytest.mark.parametrize("training", [False, True])
@pytest.mark.parametrize("no_spatial", [False, True])
def test_gradcheck(training, no_spatial):
    m = randomised(TripletAttention(3, kernel_size=3, no_spatial=no_spatial)).train(training)
    x = torch.randn(2, 3, 4, 5, dtype=torch.float64, requires_grad=True)
    # ties in the max are measure-zero for random input
    assert torch.autograd.gradcheck(m, (x,))


def test_extra_repr():
    assert "kernel_size=7, no_spatial=False" in repr(TripletAttention(8))
