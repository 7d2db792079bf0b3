"""EMA against its computation (Ouyang et al., ICASSP 2023) as the official code writes it."""

import math

import pytest
import torch

import attncourse
from attncourse.cost import count_flops, count_parameters
from attncourse.hybrid.ema import EMA
from attncourse.plot import capture_gates

import module_checks


def sig(t):
    return 1 / (1 + math.exp(-t))


@torch.no_grad()
def naive_ema(x, m):
    """The module's computation with explicit loops over samples, groups, channels and positions."""
    B, C, H, W = x.shape
    G, c = m.factor, m.group_channels
    w1, b1 = m.conv1x1.weight[:, :, 0, 0], m.conv1x1.bias  # (c, c), (c,)
    w3, b3 = m.conv3x3.weight, m.conv3x3.bias  # (c, c, 3, 3), (c,)
    gamma, beta, eps = m.gn.weight, m.gn.bias, m.gn.eps
    out = torch.empty_like(x)
    for n in range(B):
        for gi in range(G):
            xg = x[n, gi * c : (gi + 1) * c]  # channels g·c ... (g+1)·c - 1
            zh = [[sum(xg[k, i, j] for j in range(W)) / W for i in range(H)] for k in range(c)]
            zw = [[sum(xg[k, i, j] for i in range(H)) / H for j in range(W)] for k in range(c)]
            ah = [[b1[k] + sum(w1[k, l] * zh[l][i] for l in range(c)) for i in range(H)] for k in range(c)]
            aw = [[b1[k] + sum(w1[k, l] * zw[l][j] for l in range(c)) for j in range(W)] for k in range(c)]
            u = [[[xg[k, i, j] * sig(ah[k][i]) * sig(aw[k][j]) for j in range(W)] for i in range(H)] for k in range(c)]
            x1 = torch.zeros(c, H, W, dtype=x.dtype)
            for k in range(c):  # GroupNorm(c, c): each channel over its own H·W values
                vals = [u[k][i][j] for i in range(H) for j in range(W)]
                mu = sum(vals) / len(vals)
                var = sum((v - mu) ** 2 for v in vals) / len(vals)
                for i in range(H):
                    for j in range(W):
                        x1[k, i, j] = (u[k][i][j] - mu) / math.sqrt(var + eps) * gamma[k] + beta[k]
            x2 = torch.zeros(c, H, W, dtype=x.dtype)
            for k in range(c):
                for i in range(H):
                    for j in range(W):
                        t = b3[k]
                        for l in range(c):
                            for di in range(3):
                                for dj in range(3):
                                    ii, jj = i + di - 1, j + dj - 1
                                    if 0 <= ii < H and 0 <= jj < W:  # zero padding
                                        t = t + w3[k, l, di, dj] * xg[l, ii, jj]
                        x2[k, i, j] = t

            def softmax_of_means(t):
                means = [t[k].sum() / (H * W) for k in range(c)]
                e = [math.exp(v) for v in means]
                return [v / sum(e) for v in e]

            s1, s2 = softmax_of_means(x1), softmax_of_means(x2)
            for i in range(H):
                for j in range(W):
                    mij = sum(s1[k] * x2[k, i, j] for k in range(c)) + sum(s2[k] * x1[k, i, j] for k in range(c))
                    for k in range(c):
                        out[n, gi * c + k, i, j] = xg[k, i, j] * sig(mij)
    return out


def randomised(C, **kwargs):
    return module_checks.randomised(EMA(C, **kwargs), std=0.7)


def ema_params(C, G=32):
    c = C // G
    return 10 * c * c + 4 * c


def test_create_ema_64_has_48_parameters_and_256_has_672():
    m = attncourse.create("ema", 64)
    assert (m.factor, m.group_channels) == (32, 2)
    assert count_parameters(m) == 48 == ema_params(64)
    assert count_parameters(EMA(256)) == 672 == 10 * 8**2 + 4 * 8


@pytest.mark.parametrize("C, G", [(32, 32), (64, 32), (128, 32), (256, 32), (512, 32), (2048, 32), (64, 8), (48, 4), (12, 1), (7, 7)])
def test_parameter_formula(C, G):
    m = EMA(C, factor=G)
    c = C // G
    assert count_parameters(m) == ema_params(C, G) == (c * c + c) + (9 * c * c + c) + 2 * c


@pytest.mark.parametrize("shape, G", [((2, 12, 5, 7), 3), ((1, 12, 4, 3), 4), ((2, 8, 1, 1), 2), ((3, 6, 3, 1), 6), ((1, 6, 2, 5), 1)])
def test_matches_the_naive_loops(shape, G):
    m = randomised(shape[1], factor=G)
    x = torch.randn(shape, dtype=torch.float64)
    torch.testing.assert_close(m(x), naive_ema(x, m))


def test_the_naive_reference_can_fail():
    """Guard against a vacuous equality: other groupings, softmaxes or norms must not match."""
    m = randomised(8, factor=2)
    x = torch.randn(2, 8, 4, 5, dtype=torch.float64)
    right = naive_ema(x, m)
    torch.testing.assert_close(m(x), right)
    # interleaved groups (channel k of group g at k·G + g) instead of contiguous blocks
    perm = torch.arange(8).reshape(4, 2).t().reshape(-1)
    assert not torch.allclose(naive_ema(x[:, perm], m)[:, perm.argsort()], right)
    # GroupNorm over all c channels of a group at once instead of one channel per GN group
    m2 = randomised(8, factor=2)
    m2.load_state_dict(m.state_dict())
    m2.gn.num_groups = 1
    assert not torch.allclose(m2(x), right)
    # softmax over the positions instead of over the channels
    m3 = randomised(8, factor=2)
    m3.load_state_dict(m.state_dict())
    m3.softmax.dim = 0
    assert not torch.allclose(m3(x), right)


def test_the_1x1_branch_descriptor_is_softmax_of_the_gn_bias():
    """GroupNorm(c, c) zeroes each channel's spatial mean, so GAP(x1) = β whatever the input."""
    m = randomised(12, factor=3)
    seen = []
    m.softmax.register_forward_hook(lambda mod, inp, out: seen.append(out))
    for shape in [(2, 12, 5, 7), (1, 12, 3, 3)]:
        seen.clear()
        m(torch.randn(shape, dtype=torch.float64))
        s1 = seen[0]  # the first softmax call is s1
        torch.testing.assert_close(s1, torch.softmax(m.gn.bias, 0).expand_as(s1))


def test_gates_and_groups():
    m = randomised(12, factor=3)
    x = torch.randn(2, 12, 5, 7, dtype=torch.float64)
    gates = capture_gates(m, x)
    assert gates["gate_h"].shape == (6, 4, 5, 1)
    assert gates["gate_w"].shape == (6, 4, 1, 7)
    assert gates["gate"].shape == (6, 1, 5, 7)
    # one spatial map per (sample, group), shared by the group's channels; row b·G + g
    expected = x.reshape(2, 3, 4, 5, 7) * gates["gate"].reshape(2, 3, 1, 5, 7)
    torch.testing.assert_close(m(x), expected.reshape(2, 12, 5, 7))


def test_groups_do_not_talk_to_each_other():
    m = randomised(12, factor=3)
    x = torch.randn(2, 12, 5, 7, dtype=torch.float64)
    x2 = x.clone()
    x2[:, 4:8] = torch.randn(2, 4, 5, 7, dtype=torch.float64)  # change group 1 only
    y, y2 = m(x), m(x2)
    torch.testing.assert_close(y[:, :4], y2[:, :4])
    torch.testing.assert_close(y[:, 8:], y2[:, 8:])
    assert not torch.allclose(y[:, 4:8], y2[:, 4:8])


@pytest.mark.parametrize("h, w", [(1, 1), (7, 5), (1, 3)])
def test_train_mode_batch_one_works(h, w):
    """GroupNorm has no batch statistics; on a 1×1 map x1 is exactly β."""
    module_checks.assert_trains_on_batch_one(EMA(64), 64, h, w)


def test_gradcheck_float64():
    m = randomised(4, factor=2)
    x = torch.randn(2, 4, 3, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(m, (x,))


def test_flops_are_the_two_convolutions_and_the_two_weighted_sums():
    # 1×1 conv on H + W positions, 3×3 conv on H·W, two c-term sums per position: 2 FLOPs per MAC.
    B, C, H, W, G = 2, 64, 7, 9, 32
    c = C // G
    n = B * G
    expected = 2 * n * (c * c * (H + W) + 9 * c * c * H * W + 2 * c * H * W)
    assert count_flops(EMA(C), torch.randn(B, C, H, W)) == expected


@pytest.mark.parametrize(
    "C, kwargs, words",
    [(64, {"factor": 0}, "factor"), (64, {"factor": 2.0}, "factor"), (64, {"factor": True}, "factor"),
     (64, {"factor": 24}, "divisible by factor=24"), (16, {"factor": 32}, "at least one channel per group"),
     (0, {}, "channels")],
)
def test_bad_hyperparameters(C, kwargs, words):
    with pytest.raises(ValueError, match=f"EMA.*{words}"):
        EMA(C, **kwargs)


@pytest.mark.parametrize("C, G", [(64, 24), (48, 32), (96, 64), (33, 2)])
@pytest.mark.parametrize("b, h, w", [(1, 1, 1), (2, 4, 4), (3, 5, 7), (32, 8, 6)])
def test_the_official_reshape_fails_whenever_g_does_not_divide_c(C, G, b, h, w):
    # The docstring: the official forward's first step, x.reshape(b * G, -1, h, w) (re-typed from
    # YOLOonMe/EMA-attention-module), fails for every C not divisible by G, whatever b, h and w;
    # ours refuses such a C when built.
    assert C % G and C // G > 0  # the official assert channels // factor > 0 passes
    with pytest.raises(RuntimeError, match="invalid for input"):
        torch.randn(b, C, h, w).reshape(b * G, -1, h, w)
    with pytest.raises(ValueError, match="EMA.*divisible"):
        EMA(C, factor=G)


# Bad input (rank, channels, dtype, non-tensor): tests/test_contract.py covers every registered module.
