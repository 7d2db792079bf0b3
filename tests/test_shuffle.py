"""Shuffle Attention (SA-Net, Zhang & Yang, ICASSP 2021) against the paper's equations and the official code."""

import pytest
import torch

import attncourse
from attncourse.cost import count_parameters
from attncourse.hybrid.shuffle import ShuffleAttention, default_groups
from attncourse.plot import capture_gates

import module_checks

# ---------------------------------------------------------------- the naive derivation


def naive_shuffle(x, m: ShuffleAttention, *, shuffle=True):
    """The paper's equations one group and one channel at a time, then the 2-group shuffle by index."""
    B, C, H, W = x.shape
    G, K = m.groups, m.half
    w1, b1, w2, b2 = (p.reshape(K) for p in (m.cweight, m.cbias, m.sweight, m.sbias))
    gamma = m.gn.weight if m.norm_affine else torch.ones(K, dtype=x.dtype)
    beta = m.gn.bias if m.norm_affine else torch.zeros(K, dtype=x.dtype)
    before = torch.empty_like(x)
    for g in range(G):
        for k in range(K):
            c1 = g * 2 * K + k  # channel k of X_g1
            c2 = c1 + K  # channel k of X_g2
            s = x[:, c1].sum((1, 2)) / (H * W)  # F_gp(X_g1): (B,)
            before[:, c1] = torch.sigmoid(w1[k] * s + b1[k])[:, None, None] * x[:, c1]
            z = x[:, c2]
            mu = z.sum((1, 2), keepdim=True) / (H * W)
            var = ((z - mu) ** 2).sum((1, 2), keepdim=True) / (H * W)  # biased, as GN
            gn = (z - mu) / torch.sqrt(var + 1e-5) * gamma[k] + beta[k]
            before[:, c2] = torch.sigmoid(w2[k] * gn + b2[k]) * z
    if not shuffle:
        return before
    out = torch.empty_like(x)
    for i in range(2):
        for j in range(C // 2):
            out[:, 2 * j + i] = before[:, i * C // 2 + j]  # output 2j + i <- channel i·C/2 + j
    return out


def randomised(C, **kw):
    return module_checks.randomised(ShuffleAttention(C, **kw))


def sa_params(C, G, affine=True):
    return (3 if affine else 2) * C // G


# ---------------------------------------------------------------- parameters


@pytest.mark.parametrize("C, G", [(64, 32), (128, 64), (256, 64), (48, 4), (64, 8), (2048, 64), (16, 8)])
@pytest.mark.parametrize("affine", [True, False])
def test_parameter_formula(C, G, affine):
    m = ShuffleAttention(C, groups=G, norm_affine=affine)
    assert count_parameters(m) == sa_params(C, G, affine)
    assert count_parameters(m) == (6 if affine else 4) * (C // (2 * G))  # 4 or 6 vectors of C/2G


def test_resnet50_totals():
    """16 bottlenecks of widths 256, 512, 1024, 2048 (3, 4, 6, 3 blocks), G = 64: 708 with GN's affine, 472 without."""
    stages = [(256, 3), (512, 4), (1024, 6), (2048, 3)]
    assert sum(n * count_parameters(ShuffleAttention(c, groups=64)) for c, n in stages) == 708
    assert sum(n * count_parameters(ShuffleAttention(c, groups=64, norm_affine=False)) for c, n in stages) == 472
    assert sum(n * count_parameters(ShuffleAttention(c)) for c, n in stages) == 708  # the default is 64 there


def test_official_initialisation():
    m = ShuffleAttention(256)
    assert m.groups == 64 and m.half == 2
    assert torch.equal(m.cweight, torch.zeros(2, 1, 1)) and torch.equal(m.sweight, torch.zeros(2, 1, 1))
    assert torch.equal(m.cbias, torch.ones(2, 1, 1)) and torch.equal(m.sbias, torch.ones(2, 1, 1))
    assert m.gn.num_groups == m.gn.num_channels == 2 and m.gn.eps == 1e-5
    assert torch.equal(m.gn.weight, torch.ones(2)) and torch.equal(m.gn.bias, torch.zeros(2))
    # Both gates start at σ(1) everywhere: the output is the shuffled input times σ(1).
    x = torch.randn(2, 256, 5, 3)
    c = torch.arange(256)
    torch.testing.assert_close(m(x), torch.sigmoid(torch.tensor(1.0)) * x[:, (c % 2) * 128 + c // 2])


# ---------------------------------------------------------------- the default G


@pytest.mark.parametrize("C, G", [(64, 32), (128, 64), (256, 64), (384, 64), (48, 24), (96, 48), (2, 1), (200, 50)])
def test_default_groups(C, G):
    assert default_groups(C) == G
    m = ShuffleAttention(C)
    assert m.groups == G and f"groups={G}" in repr(m)


def test_create_at_64_uses_32_groups():
    m = attncourse.create("sa", 64)
    assert m.groups == 32 and m.half == 1


@pytest.mark.parametrize("C, G", [(64, 64), (96, 64), (48, 5), (100, 3)])
def test_explicit_invalid_groups_is_refused(C, G):
    with pytest.raises(ValueError, match=rf"ShuffleAttention.*channels={C}.*divisible by 2 \* groups = {2 * G}"):
        ShuffleAttention(C, groups=G)


@pytest.mark.parametrize(
    "kwargs, words",
    [({"groups": 0}, "groups"), ({"groups": 2.0}, "groups"), ({"groups": True}, "groups"),
     ({"norm_affine": 1.5}, "norm_affine")],
)
def test_bad_hyperparameters(kwargs, words):
    with pytest.raises(ValueError, match=f"ShuffleAttention.*{words}"):
        ShuffleAttention(64, **kwargs)


@pytest.mark.parametrize("C", [1, 3, 63])
def test_odd_channels_are_refused(C):
    with pytest.raises(ValueError, match="ShuffleAttention.*even"):
        ShuffleAttention(C)


# Where the official sa_layer (wofmanaf/SA-Net, models/sa_resnet.py) fails, as the docstring and the
# chapter say: its steps re-typed one at a time (GroupNorm(C // 2G, C // 2G) and parameter vectors of
# C // 2G values when built; x.reshape(B * G, -1, H, W), then chunk(2, dim=1), in the forward).


@pytest.mark.parametrize("C, G", [(64, 64), (96, 64), (16, 32), (3, 2)])
def test_official_sa_layer_fails_when_built_for_c_below_2g(C, G):
    assert C < 2 * G and C // (2 * G) == 0
    with pytest.raises(ZeroDivisionError):
        torch.nn.GroupNorm(C // (2 * G), C // (2 * G))
    with pytest.raises(ValueError, match="ShuffleAttention"):  # ours refuses the same G when built
        ShuffleAttention(C, groups=G)


@pytest.mark.parametrize("C, G", [(130, 64), (200, 64), (36, 8), (2 * 64 + 2, 64)])
def test_official_sa_layer_fails_in_the_reshape_only_for_c_at_least_2g_not_divisible_by_g(C, G):
    assert C >= 2 * G and C % G
    torch.nn.GroupNorm(C // (2 * G), C // (2 * G))  # builds
    x = torch.randn(2, C, 3, 4)
    with pytest.raises(RuntimeError, match="invalid for input"):
        x.reshape(2 * G, -1, 3, 4)


@pytest.mark.parametrize("C, G, runs", [(192, 64, True), (24, 8, True), (320, 64, False), (40, 8, False)])
def test_official_sa_layer_with_odd_c_over_g_splits_unequal_halves(C, G, runs):
    # C / G odd: chunk gives the channel half one more channel than the C // 2G values of W1, b1
    assert C % G == 0 and (C // G) % 2 == 1
    x = torch.randn(2, C, 3, 4).reshape(2 * G, -1, 3, 4)  # the reshape works
    x_0, x_1 = x.chunk(2, dim=1)
    k = C // (2 * G)
    assert (x_0.shape[1], x_1.shape[1]) == (k + 1, k)
    cweight = torch.zeros(1, k, 1, 1)
    pooled = x_0.mean(dim=(2, 3), keepdim=True)
    if runs:  # C / G = 3: one value broadcasts over the half's two channels, silently
        assert (cweight * pooled).shape == pooled.shape
    else:  # C / G >= 5: the product fails
        with pytest.raises(RuntimeError, match="must match"):
            cweight * pooled
    with pytest.raises(ValueError, match="ShuffleAttention"):  # ours refuses it when built
        ShuffleAttention(C, groups=G)


# Bad input (rank, channels, dtype, non-tensor): tests/test_contract.py covers every registered module.


# ---------------------------------------------------------------- equality with the equations


@pytest.mark.parametrize("C, G", [(64, 32), (48, 4), (24, 2), (16, 1), (12, 6), (12, 3), (40, 5)])
@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("hw", [(5, 9), (1, 1), (1, 4)])
def test_matches_the_naive_derivation(C, G, affine, hw):
    m = randomised(C, groups=G, norm_affine=affine)
    x = torch.randn(2, C, *hw, dtype=torch.float64)
    torch.testing.assert_close(m(x), naive_shuffle(x, m))


def test_the_naive_reference_can_fail():
    """Without the shuffle, or with the halves swapped, or with the wrong group layout, it differs."""
    m = randomised(48, groups=4)
    x = torch.randn(2, 48, 5, 6, dtype=torch.float64)
    assert not torch.allclose(m(x), naive_shuffle(x, m, shuffle=False))
    swapped = randomised(48, groups=4)
    with torch.no_grad():  # channel weights where the spatial ones are: another computation
        swapped.cweight.copy_(m.sweight), swapped.sweight.copy_(m.cweight)
        swapped.cbias.copy_(m.sbias), swapped.sbias.copy_(m.cbias)
        swapped.gn.weight.copy_(m.gn.weight), swapped.gn.bias.copy_(m.gn.bias)
    assert not torch.allclose(swapped(x), naive_shuffle(x, m))
    other = randomised(48, groups=2)
    with torch.no_grad():
        for p, q in zip(other.parameters(), m.parameters()):
            p.copy_(torch.cat([q, q]))  # the same per-channel weights, repeated over the wider halves
    assert not torch.allclose(other(x), naive_shuffle(x, m))


def test_gates_are_the_two_halves():
    m = randomised(48, groups=4).eval()
    x = torch.randn(3, 48, 5, 7, dtype=torch.float64)
    gates = capture_gates(m, x)
    a1, a2 = gates["channel_gate"], gates["spatial_gate"]
    assert a1.shape == (3, 24) and a2.shape == (3, 24, 5, 7)
    before = naive_shuffle(x, m, shuffle=False)
    xs = x.reshape(3, 4, 2, 6, 5, 7)  # (B, G, half, C/2G, H, W)
    torch.testing.assert_close(before.reshape(3, 4, 2, 6, 5, 7)[:, :, 0], xs[:, :, 0] * a1.reshape(3, 4, 6, 1, 1))
    torch.testing.assert_close(before.reshape(3, 4, 2, 6, 5, 7)[:, :, 1], xs[:, :, 1] * a2.reshape(3, 4, 6, 5, 7))


def test_the_shuffle_interleaves_the_halves():
    """With gates fixed at 1 (weights 0, biases huge), the module is the bare 2-group shuffle."""
    m = ShuffleAttention(8, groups=2).double()
    with torch.no_grad():
        m.cbias.fill_(50.0), m.sbias.fill_(50.0)
    x = torch.arange(8, dtype=torch.float64).reshape(1, 8, 1, 1).expand(1, 8, 2, 2)
    assert m(x)[0, :, 0, 0].tolist() == [0, 4, 1, 5, 2, 6, 3, 7]


def test_no_state_between_calls_and_batch_independence():
    m = randomised(32, groups=4).train()
    x = torch.randn(4, 32, 6, 5, dtype=torch.float64)
    torch.testing.assert_close(m(x)[1:2], m(x[1:2]))  # GN: per sample, no batch statistics


@pytest.mark.parametrize("h, w", [(1, 1), (7, 5), (1, 3)])
def test_train_mode_batch_one_works(h, w):
    module_checks.assert_trains_on_batch_one(randomised(16, groups=4), 16, h, w)


def test_gradcheck_float64():
    m = randomised(8, groups=2)
    x = torch.randn(2, 8, 3, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(m, (x,))
    m = randomised(8, groups=2, norm_affine=False)
    assert torch.autograd.gradcheck(m, (x,))
