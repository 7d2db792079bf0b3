"""SqueezeExcite against the paper's equations (Hu et al., CVPR 2018)."""

import pytest
import torch

import attncourse
from attncourse import SqueezeExcite
from attncourse.cost import count_flops, count_parameters


def naive_se(u, w1, b1, w2, b2):
    """Eqs. (2)-(4) with explicit loops over the batch and the channels."""
    B, C, H, W = u.shape
    out = torch.empty_like(u)
    for n in range(B):
        z = torch.stack([u[n, c].sum() / (H * W) for c in range(C)])  # (2)
        s = torch.sigmoid(w2 @ torch.relu(w1 @ z + b1) + b2)  # (3)
        for c in range(C):
            out[n, c] = s[c] * u[n, c]  # (4)
    return out


def se_params(C, r, bias=True):
    return 2 * C * C // r + ((C // r + C) if bias else 0)


def test_create_se_64_has_580_parameters():
    assert count_parameters(attncourse.create("se", 64)) == 580


@pytest.mark.parametrize("C, r", [(64, 16), (256, 16), (48, 4), (100, 16)])
@pytest.mark.parametrize("bias", [True, False])
def test_parameter_formula(C, r, bias):
    m = SqueezeExcite(C, reduction=r, bias=bias)
    h = C // r
    assert count_parameters(m) == 2 * C * h + ((h + C) if bias else 0)
    if C % r == 0:
        assert count_parameters(m) == se_params(C, r, bias)


@pytest.mark.parametrize("shape", [(2, 32, 7, 5), (1, 32, 1, 1), (3, 32, 4, 9)])
def test_matches_the_equations_on_random_weights(shape):
    m = SqueezeExcite(32, reduction=4).double()
    for p in m.parameters():
        torch.nn.init.normal_(p)
    u = torch.randn(shape, dtype=torch.float64)
    expected = naive_se(u, m.fc1.weight, m.fc1.bias, m.fc2.weight, m.fc2.bias)
    torch.testing.assert_close(m(u), expected)


def test_the_naive_reference_can_fail():
    """Guard against a vacuous equality: a wrong squeeze (max) must not match."""
    m = SqueezeExcite(16, reduction=4).double()
    u = torch.randn(2, 16, 5, 3, dtype=torch.float64)
    wrong = u * torch.sigmoid(m.fc2(torch.relu(m.fc1(u.amax((2, 3))))))[..., None, None]
    assert not torch.allclose(m(u), wrong)


def test_gate_outputs_the_channel_weights():
    m = SqueezeExcite(16, reduction=4).eval()
    x = torch.randn(3, 16, 5, 7)
    from attncourse.plot import capture_gates

    gates = capture_gates(m, x)
    s = gates["gate"]
    assert s.shape == (3, 16) and ((s > 0) & (s < 1)).all()
    torch.testing.assert_close(m(x), x * s[..., None, None])


def test_gradcheck_float64():
    m = SqueezeExcite(8, reduction=2).double()
    x = torch.randn(2, 8, 3, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(m, (x,))


def test_flops_are_the_two_linear_layers():
    # FlopCounterMode counts 2 FLOPs per multiply-add of the two matmuls: 2 * B * (C*C/r) * 2.
    m = SqueezeExcite(64)
    assert count_flops(m, torch.randn(2, 64, 7, 9)) == 2 * 2 * (64 * 4) * 2


@pytest.mark.parametrize("kwargs, words", [({"reduction": 0}, "reduction"), ({"reduction": 128}, "hidden width"), ({"reduction": 2.0}, "reduction")])
def test_bad_hyperparameters(kwargs, words):
    with pytest.raises(ValueError, match=f"SqueezeExcite.*{words}"):
        SqueezeExcite(64, **kwargs)


def test_error_names_module_and_both_shapes():
    with pytest.raises(ValueError) as info:
        attncourse.create("se", 64)(torch.randn(2, 32, 7, 9))
    msg = str(info.value)
    assert "SqueezeExcite" in msg and "(B, 64, H, W)" in msg and "(2, 32, 7, 9)" in msg
