"""SimAM against the paper's energy and the official code (Yang et al., ICML 2021)."""

import math

import pytest
import torch

import attncourse
from attncourse.channel.simam import SimAM
from attncourse.cost import count_flops, count_parameters
from attncourse.plot import capture_gates


def naive_simam(x, lam):
    """Eqs. (4)-(5) as the official code computes them, with explicit loops over batch and channels."""
    B, C, H, W = x.shape
    M = H * W
    out = torch.empty_like(x)
    for n in range(B):
        for c in range(C):
            ch = x[n, c]
            mu = ch.sum() / M  # μ̂ over all M neurons
            var = ((ch - mu) ** 2).sum() / (M - 1)  # σ̂² with n = M − 1
            e = 4 * (var + lam) / ((ch - mu) ** 2 + 2 * var + 2 * lam)  # e_t* for every t, eq. (4)
            out[n, c] = torch.sigmoid(1 / e) * ch  # (5)
    return out


def energy(w, b, t, others, lam):
    """The energy (2) of target t against the other neurons of its channel."""
    return ((-1 - (w * others + b)) ** 2).mean() + (1 - (w * t + b)) ** 2 + lam * w**2


def closed_form(t, others, lam):
    """The minimiser (w_t, b_t) and minimum e_t* of (2), with μ, σ² of the M − 1 others."""
    mu = others.mean()
    var = ((others - mu) ** 2).mean()
    w = 2 * (t - mu) / ((t - mu) ** 2 + 2 * var + 2 * lam)
    b = -0.5 * (t + mu) * w
    e = 4 * (var + lam) / ((t - mu) ** 2 + 2 * var + 2 * lam)
    return w, b, e


def test_create_simam_has_zero_parameters():
    assert count_parameters(attncourse.create("simam", 64)) == 0


@pytest.mark.parametrize("C", [1, 3, 64, 256, 2048])
def test_parameter_formula_is_zero_at_every_width(C):
    assert count_parameters(SimAM(C)) == 0
    assert len(list(SimAM(C).buffers())) == 0


@pytest.mark.parametrize("shape", [(2, 5, 7, 3), (1, 4, 2, 9), (3, 2, 6, 6), (2, 3, 1, 4)])
@pytest.mark.parametrize("lam", [1e-4, 0.1])
def test_matches_the_naive_derivation(shape, lam):
    m = SimAM(shape[1], e_lambda=lam)
    x = torch.randn(shape, dtype=torch.float64) * 2 + 0.5
    y = m(x)
    assert y.shape == x.shape
    torch.testing.assert_close(y, naive_simam(x, lam))


def test_the_naive_reference_can_fail():
    """A variance divided by M (the paper's 1/M) instead of M − 1 must not match on a small map."""
    m = SimAM(3).double()
    x = torch.randn(2, 3, 2, 3, dtype=torch.float64)
    M = 6
    mu = x.mean((2, 3), keepdim=True)
    d = (x - mu) ** 2
    wrong = x * torch.sigmoid(d / (4 * (d.sum((2, 3), keepdim=True) / M + 1e-4)) + 0.5)
    assert not torch.allclose(m(x), wrong)
    # and forgetting the + 1/2 must not match either
    right_var = d.sum((2, 3), keepdim=True) / (M - 1)
    assert not torch.allclose(m(x), x * torch.sigmoid(d / (4 * (right_var + 1e-4))))


@pytest.mark.parametrize("t_index", [0, 4, 9])
def test_closed_form_equals_numerical_minimum_of_the_energy(t_index):
    g = torch.Generator().manual_seed(t_index)
    ch = torch.randn(12, generator=g, dtype=torch.float64) * 1.5 + 0.3
    t, others = ch[t_index], torch.cat([ch[:t_index], ch[t_index + 1 :]])
    lam = 1e-4
    w = torch.zeros((), dtype=torch.float64, requires_grad=True)
    b = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=200, tolerance_grad=1e-14, tolerance_change=1e-16, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        e = energy(w, b, t, others, lam)
        e.backward()
        return e

    opt.step(closure)
    w_star, b_star, e_star = closed_form(t, others, lam)
    torch.testing.assert_close(w.detach(), w_star)
    torch.testing.assert_close(b.detach(), b_star)
    torch.testing.assert_close(energy(w, b, t, others, lam).detach(), e_star)
    assert (w_star > 0) == (t > others.mean())  # the sign: + 2(t − μ), with labels t → 1, others → −1


def test_code_statistics_relate_to_the_leave_one_out_ones():
    """σ̂²(n = M − 1) = σ_t² + (t − μ_t)² / M and t − μ̂ = (M − 1)/M (t − μ_t), exactly."""
    ch = torch.randn(20, dtype=torch.float64)
    M = len(ch)
    mu_hat, var_hat = ch.mean(), ((ch - ch.mean()) ** 2).sum() / (M - 1)
    for i in range(M):
        others = torch.cat([ch[:i], ch[i + 1 :]])
        mu_t, var_t = others.mean(), ((others - others.mean()) ** 2).mean()
        torch.testing.assert_close(var_hat, var_t + (ch[i] - mu_t) ** 2 / M)
        torch.testing.assert_close(ch[i] - mu_hat, (M - 1) / M * (ch[i] - mu_t))


def test_gate_outputs_the_3d_weights_in_their_range():
    m = SimAM(6)
    x = torch.randn(2, 6, 5, 7)
    s = capture_gates(m, x)["gate"]
    assert s.shape == (2, 6, 5, 7)
    lo = 1 / (1 + math.exp(-0.5))
    assert (s >= lo - 1e-6).all() and (s < 1).all()
    torch.testing.assert_close(m(x), x * s)


def test_gate_ignores_a_shift_of_the_channel():
    """The energy depends on t − μ̂ and σ̂² only: adding a constant per channel leaves the gate unchanged."""
    m = SimAM(4).double()
    x = torch.randn(2, 4, 5, 6, dtype=torch.float64)
    shift = torch.randn(2, 4, 1, 1, dtype=torch.float64) * 3
    torch.testing.assert_close(capture_gates(m, x + shift)["gate"], capture_gates(m, x)["gate"])


@pytest.mark.parametrize("shape", [(3, 8, 1, 1), (2, 8, 4, 4)])
def test_one_neuron_or_a_constant_channel_gets_sigmoid_half(shape):
    """H·W = 1 (n would be 0 in the official code) and constant channels: 1/e = 1/2 exactly."""
    m = SimAM(8).double()
    x = torch.randn(shape[:2], dtype=torch.float64)[..., None, None].expand(shape).clone().requires_grad_(True)
    y = m(x)
    torch.testing.assert_close(y, x * torch.sigmoid(torch.tensor(0.5, dtype=torch.float64)))
    y.sum().backward()
    assert torch.isfinite(x.grad).all()


@pytest.mark.parametrize("lam", [0, 0.0, -1e-4, float("nan"), float("inf"), True, "1e-4", None])
def test_bad_lambda_is_refused(lam):
    with pytest.raises(ValueError, match="SimAM.*e_lambda"):
        SimAM(8, e_lambda=lam)


def test_integer_lambda_is_accepted():
    assert SimAM(8, e_lambda=1).e_lambda == 1.0


def test_gradcheck_float64():
    m = SimAM(3)
    x = torch.randn(2, 3, 3, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(m, (x,))


def test_flop_counter_counts_nothing():
    # SimAM has no matmul or convolution: FlopCounterMode counts 0; the chapter counts the element-wise ops.
    assert count_flops(SimAM(64), torch.randn(2, 64, 7, 9)) == 0


def test_error_names_module_and_both_shapes():
    with pytest.raises(ValueError) as info:
        attncourse.create("simam", 64)(torch.randn(2, 32, 7, 9))
    msg = str(info.value)
    assert "SimAM" in msg and "(B, 64, H, W)" in msg and "(2, 32, 7, 9)" in msg


@pytest.mark.parametrize("channels", [0, -4, 2.5, True, "64"])
def test_bad_channels_are_refused(channels):
    with pytest.raises(ValueError, match="SimAM.*channels"):
        SimAM(channels)


def test_the_exercise_references_agree_with_the_module_and_the_energy():
    from attncourse.exercises.simam import _inverse_energy, leave_one_out_energy

    x = torch.randn(2, 3, 3, 4, dtype=torch.float64)
    torch.testing.assert_close(capture_gates(SimAM(3), x)["gate"], torch.sigmoid(_inverse_energy(x, 1e-4)))
    e = leave_one_out_energy(x, 0.1)
    flat = x[1, 2].flatten()
    for i in [0, 5, 11]:
        _, _, e_i = closed_form(flat[i], torch.cat([flat[:i], flat[i + 1 :]]), 0.1)
        torch.testing.assert_close(e[1, 2].flatten()[i], e_i)


def test_the_checkers_accept_the_solutions_and_explain_mistakes():
    from attncourse.exercises import simam as ex

    assert ex.check_min_gate(1 / (1 + math.exp(-0.5)))
    assert not ex.check_min_gate(...).attempted
    assert "never below 1/2" in ex.check_min_gate(0.5).message

    def inverse_energy(x, lam):
        d = (x - x.mean((2, 3), keepdim=True)) ** 2
        return d / (4 * (d.sum((2, 3), keepdim=True) / (x.shape[2] * x.shape[3] - 1) + lam)) + 0.5

    assert ex.check_inverse_energy(inverse_energy)
    assert "divided by M" in ex.check_inverse_energy(lambda x, lam: ex._inverse_energy(x, lam, n_minus=0)).message
    assert "+ 1/2 is missing" in ex.check_inverse_energy(lambda x, lam: inverse_energy(x, lam) - 0.5).message

    def not_done(x, lam):
        raise NotImplementedError

    assert not ex.check_inverse_energy(not_done).attempted
    assert ex.check_leave_one_out_energy(ex.leave_one_out_energy)
    assert "official code" in ex.check_leave_one_out_energy(lambda x, lam: 1 / inverse_energy(x, lam)).message
