"""SCSE, ChannelSE and SpatialSE against the papers' equations (Roy et al., MICCAI 2018 / TMI 2019)."""

import pytest
import torch

import attncourse
from attncourse.channel.se import SqueezeExcite
from attncourse.cost import count_flops, count_parameters
from attncourse.hybrid.scse import SCSE, ChannelSE, SpatialSE
from attncourse.layers import Gate
from attncourse.plot import capture_gates

from module_checks import randomised


def naive_scse(u, w1, b1, w2, b2, w_sq, b_sq, aggregation="sum"):
    """cSE, sSE and their combination with explicit loops over batch, channels and positions."""
    B, C, H, W = u.shape
    out = torch.empty_like(u)
    for n in range(B):
        z = torch.stack([u[n, c].sum() / (H * W) for c in range(C)])  # GAP(U)
        z_hat = w2 @ torch.relu(w1 @ z + b1) + b2  # ẑ = W2 δ(W1 z)
        for i in range(H):
            for j in range(W):
                q = (w_sq * u[n, :, i, j]).sum() + b_sq  # q_{i,j} = W_sq ⋆ U at (i, j)
                for c in range(C):
                    cse = torch.sigmoid(z_hat[c]) * u[n, c, i, j]  # Û_cSE
                    sse = torch.sigmoid(q) * u[n, c, i, j]  # Û_sSE
                    if aggregation == "sum":
                        out[n, c, i, j] = cse + sse
                    elif aggregation == "max":
                        out[n, c, i, j] = cse if cse >= sse else sse
                    else:
                        out[n, c, i, j] = cse * sse
    return out


def weights_of(m):
    return (m.cse.fc1.weight, m.cse.fc1.bias, m.cse.fc2.weight, m.cse.fc2.bias,
            m.sse.squeeze.weight[0, :, 0, 0], m.sse.squeeze.bias[0])


def scse_params(C, r):
    h = C // r
    return 2 * C * h + h + C + C + 1


# --- the figure and the formula -------------------------------------------------------


def test_create_scse_64_has_4257_parameters():
    m = attncourse.create("scse", 64)
    assert count_parameters(m) == 4257 == 64**2 + 2.5 * 64 + 1


@pytest.mark.parametrize("C", [16, 64, 100, 256])
@pytest.mark.parametrize("r", [1, 2, 4, 16])
def test_parameter_formula(C, r):
    m = SCSE(C, reduction=r)
    assert count_parameters(m) == scse_params(C, r)
    assert count_parameters(m.cse) == 2 * C * (C // r) + C // r + C
    assert count_parameters(m.sse) == C + 1
    if r == 2 and C % 2 == 0:
        assert count_parameters(m) == C * C + 2.5 * C + 1


@pytest.mark.parametrize("aggregation", ["sum", "max", "mul"])
def test_aggregation_adds_no_parameters(aggregation):
    assert count_parameters(SCSE(64, aggregation=aggregation)) == 4257


def test_flops_are_the_two_linear_layers_and_the_1x1_conv():
    # FlopCounterMode: 2 FLOPs per multiply-add; cSE 2·B·(C·C/r)·2, sSE 2·B·C·H·W.
    m = SCSE(64)
    B, H, W = 2, 7, 9
    assert count_flops(m, torch.randn(B, 64, H, W)) == 2 * B * (64 * 32) * 2 + 2 * B * 64 * H * W


# --- the parts ----------------------------------------------------------------------------------


def test_channel_se_is_se_with_r_2():
    m = ChannelSE(64)
    assert isinstance(m, SqueezeExcite) and m.reduction == 2 and m.hidden == 32
    assert m.gate.kind == "channel"
    se = SqueezeExcite(64, reduction=2)
    se.load_state_dict(m.state_dict())
    x = torch.randn(2, 64, 5, 3)
    torch.testing.assert_close(m(x), se(x))


def test_spatial_se_gate_is_b_1_h_w_and_rescales_positions():
    m = SpatialSE(16).eval()
    x = torch.randn(3, 16, 5, 7)
    s = capture_gates(m, x)["gate"]
    assert m.gate.kind == "spatial"
    assert s.shape == (3, 1, 5, 7) and ((s > 0) & (s < 1)).all()
    torch.testing.assert_close(m(x), x * s)


def test_scse_gates_are_channel_and_spatial():
    m = SCSE(16).eval()
    x = torch.randn(3, 16, 5, 7)
    gates = capture_gates(m, x)
    assert set(gates) == {"cse.gate", "sse.gate"}
    assert gates["cse.gate"].shape == (3, 16) and gates["sse.gate"].shape == (3, 1, 5, 7)
    kinds = {name: mod.kind for name, mod in m.named_modules() if isinstance(mod, Gate)}
    assert kinds == {"cse.gate": "channel", "sse.gate": "spatial"}
    expected = x * gates["cse.gate"][..., None, None] + x * gates["sse.gate"]
    torch.testing.assert_close(m(x), expected)


# --- shapes ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", [SCSE, ChannelSE, SpatialSE])
@pytest.mark.parametrize("shape", [(2, 12, 7, 5), (1, 12, 9, 16), (3, 12, 1, 1), (2, 12, 1, 13), (1, 12, 11, 3)])
def test_shape_is_preserved_on_non_square_and_odd_sizes(cls, shape):
    m = cls(12)
    x = torch.randn(shape)
    assert m(x).shape == x.shape


@pytest.mark.parametrize("aggregation", ["sum", "max", "mul"])
def test_train_mode_batch_one_float64(aggregation):
    m = SCSE(8, aggregation=aggregation).double().train()
    x = torch.randn(1, 8, 3, 5, dtype=torch.float64, requires_grad=True)
    y = m(x)
    assert y.dtype == torch.float64 and y.shape == x.shape
    y.sum().backward()
    assert torch.isfinite(x.grad).all()


# --- equality with the naive derivation -------------------------------------------------------


@pytest.mark.parametrize("aggregation", ["sum", "max", "mul"])
@pytest.mark.parametrize("shape", [(2, 6, 5, 3), (1, 6, 1, 1), (2, 6, 4, 7)])
def test_matches_the_equations_on_random_weights(aggregation, shape):
    m = randomised(SCSE(6, reduction=2, aggregation=aggregation))
    u = torch.randn(shape, dtype=torch.float64)
    torch.testing.assert_close(m(u), naive_scse(u, *weights_of(m), aggregation=aggregation))


@pytest.mark.parametrize("r", [1, 3, 4])
def test_matches_the_equations_at_other_reductions(r):
    m = randomised(SCSE(12, reduction=r, aggregation="max"))
    u = torch.randn(2, 12, 3, 5, dtype=torch.float64)
    torch.testing.assert_close(m(u), naive_scse(u, *weights_of(m), aggregation="max"))


def test_parts_match_their_halves_of_the_equations():
    m = randomised(SCSE(6))
    u = torch.randn(2, 6, 4, 3, dtype=torch.float64)
    w1, b1, w2, b2, w_sq, b_sq = weights_of(m)
    s_c = torch.sigmoid(torch.relu(u.mean((2, 3)) @ w1.T + b1) @ w2.T + b2)
    s_s = torch.sigmoid(torch.einsum("bchw,c->bhw", u, w_sq) + b_sq)
    torch.testing.assert_close(m.cse(u), u * s_c[:, :, None, None])
    torch.testing.assert_close(m.sse(u), u * s_s[:, None])


@pytest.mark.parametrize(
    "wrong",
    ["max_of_gates", "sum_of_gates_times_u", "no_sse_bias", "softmax_over_positions", "sum_instead_of_max"],
)
def test_the_naive_reference_can_fail(wrong):
    """Guard against a vacuous equality: plausible wrong variants must not match."""
    m = randomised(SCSE(6, aggregation="sum" if wrong != "sum_instead_of_max" else "max"))
    u = torch.randn(2, 6, 5, 3, dtype=torch.float64)
    w1, b1, w2, b2, w_sq, b_sq = weights_of(m)
    s_c = torch.sigmoid(torch.relu(u.mean((2, 3)) @ w1.T + b1) @ w2.T + b2)[:, :, None, None]
    q = (torch.einsum("bchw,c->bhw", u, w_sq) + b_sq)[:, None]
    variants = {
        "max_of_gates": u * torch.maximum(s_c, torch.sigmoid(q)),  # max over gates, not features
        "sum_of_gates_times_u": u * (s_c + torch.sigmoid(q)) / 2,  # averaged instead of summed
        "no_sse_bias": u * s_c + u * torch.sigmoid(q - b_sq),  # forgot the 1×1 conv's bias
        "softmax_over_positions": u * s_c + u * torch.softmax(q.flatten(2), -1).view_as(q),
        "sum_instead_of_max": u * s_c + u * torch.sigmoid(q),
    }
    assert not torch.allclose(m(u), variants[wrong])


def test_max_out_keeps_the_smaller_gate_where_u_is_negative():
    m = SCSE(4, aggregation="max").double()
    u = -torch.rand(1, 4, 3, 3, dtype=torch.float64) - 0.1  # all negative
    gates = capture_gates(m, u)
    s_c, s_s = gates["cse.gate"][..., None, None], gates["sse.gate"]
    torch.testing.assert_close(m(u), u * torch.minimum(s_c, s_s))


# --- errors -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"reduction": 0}, "reduction"),
        ({"reduction": -2}, "reduction"),
        ({"reduction": 2.0}, "reduction"),
        ({"reduction": True}, "reduction"),
        ({"reduction": 128}, "hidden width"),
        ({"aggregation": "cat"}, "aggregation"),
        ({"aggregation": "concat"}, "aggregation"),
        ({"aggregation": "Sum"}, "aggregation"),
        ({"aggregation": None}, "aggregation"),
    ],
)
def test_bad_hyperparameters(kwargs, words):
    with pytest.raises(ValueError, match=f"SCSE.*{words}"):
        SCSE(64, **kwargs)


@pytest.mark.parametrize("cls", [SCSE, ChannelSE, SpatialSE])
@pytest.mark.parametrize("channels", [0, -4, 2.5, True, "64"])
def test_bad_channel_counts_name_the_class(cls, channels):
    with pytest.raises(ValueError, match=f"^{cls.__name__} "):
        cls(channels)


def test_channel_se_errors_name_channel_se():
    with pytest.raises(ValueError, match="^ChannelSE .*hidden width"):
        ChannelSE(4, reduction=8)
    with pytest.raises(ValueError, match="^ChannelSE .*reduction"):
        ChannelSE(4, reduction=0)


@pytest.mark.parametrize("cls", [SCSE, ChannelSE, SpatialSE])
@pytest.mark.parametrize(
    "x, words",
    [
        (torch.randn(2, 32, 7, 9), ["(B, 64, H, W)", "(2, 32, 7, 9)"]),
        (torch.randn(64, 7, 9), ["4-D", "(64, 7, 9)"]),
        (torch.randn(2, 64, 7, 9, 1), ["4-D", "5-D"]),
        (torch.ones(2, 64, 7, 9, dtype=torch.long), ["floating", "int64"]),
        ([[1.0]], ["torch.Tensor", "list"]),
    ],
    ids=["channels", "rank3", "rank5", "int", "list"],
)
def test_bad_input_gets_a_clear_value_error(cls, x, words):
    with pytest.raises(ValueError) as info:
        cls(64)(x)
    msg = str(info.value)
    assert msg.startswith(cls.__name__)
    for w in words:
        assert w in msg


# --- gradients ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("aggregation", ["sum", "max", "mul"])
def test_gradcheck_float64(aggregation):
    m = randomised(SCSE(4, aggregation=aggregation))
    x = torch.randn(2, 4, 3, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(m, (x,))
