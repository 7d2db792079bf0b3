"""CoordAttention against the paper's equations (Hou, Zhou, Feng, CVPR 2021) and the official code."""

import pytest
import torch

import attncourse
from attncourse.cost import count_flops, count_parameters
from attncourse.hybrid.coord import CoordAttention
from attncourse.plot import capture_gates

import module_checks


def hswish(t):
    """The official code's h_swish: x · ReLU6(x + 3) / 6, written out."""
    return t * torch.clamp(t + 3, 0, 6) / 6


def naive_coord(x, m, *, batch_stats):
    """Eqs. (4)-(9) with explicit loops over batch, channels, rows and columns.

    ``batch_stats``: batch norm with the batch's own statistics (training mode), computed by
    hand over the B·(H + W) positions of the pooled strip; otherwise the running statistics.
    """
    B, C, H, W = x.shape
    w1, b1 = m.conv1.weight[:, :, 0, 0], m.conv1.bias  # (m, C), (m,)
    wh, bh = m.conv_h.weight[:, :, 0, 0], m.conv_h.bias  # (C, m), (C,)
    ww, bw = m.conv_w.weight[:, :, 0, 0], m.conv_w.bias
    # (4), (5): z^h_c(h) = 1/W Σ_i x_c(h, i),  z^w_c(w) = 1/H Σ_j x_c(j, w)
    zh = torch.stack([torch.stack([torch.stack([x[n, c, h, :].sum() / W for h in range(H)]) for c in range(C)]) for n in range(B)])
    zw = torch.stack([torch.stack([torch.stack([x[n, c, :, w].sum() / H for w in range(W)]) for c in range(C)]) for n in range(B)])
    # F1 on every position of the concatenated strip [z^h, z^w]: (B, H + W, m)
    strip = torch.stack([torch.stack([w1 @ zh[n, :, h] + b1 for h in range(H)] + [w1 @ zw[n, :, w] + b1 for w in range(W)]) for n in range(B)])
    if batch_stats:
        values = strip.reshape(-1, strip.shape[-1])  # B·(H + W) numbers per hidden channel
        mean = values.sum(0) / len(values)
        var = ((values - mean) ** 2).sum(0) / len(values)  # biased, as BN normalises with
    else:
        mean, var = m.bn.running_mean, m.bn.running_var
    f = hswish((strip - mean) / torch.sqrt(var + m.bn.eps) * m.bn.weight + m.bn.bias)  # (6)
    out = torch.empty_like(x)
    for n in range(B):
        gh = torch.stack([torch.sigmoid(wh @ f[n, h] + bh) for h in range(H)])  # (7): (H, C)
        gw = torch.stack([torch.sigmoid(ww @ f[n, H + w] + bw) for w in range(W)])  # (8): (W, C)
        for c in range(C):
            for i in range(H):
                for j in range(W):
                    out[n, c, i, j] = x[n, c, i, j] * gh[i, c] * gw[j, c]  # (9)
    return out


def randomised(C, **kwargs):
    return module_checks.randomised(CoordAttention(C, **kwargs))


def coord_params(C, r=32, least=8):
    m = max(least, C // r)
    return C * m + m + 2 * m + 2 * (m * C + C)


def test_create_coord_64_has_1688_parameters():
    m = attncourse.create("coord", 64)
    assert m.hidden == 8
    assert count_parameters(m) == 1688 == 64 * 8 + 8 + 2 * 8 + 2 * (8 * 64 + 64)


@pytest.mark.parametrize("C, r", [(16, 32), (32, 32), (64, 32), (255, 32), (256, 32), (512, 32), (1024, 32), (96, 4), (100, 8)])
def test_parameter_formula(C, r):
    m = CoordAttention(C, reduction=r)
    assert m.hidden == max(8, C // r)
    assert count_parameters(m) == coord_params(C, r) == 3 * C * m.hidden + 3 * m.hidden + 2 * C


def test_min_hidden_is_the_floor_of_the_hidden_width():
    assert CoordAttention(64, min_hidden=1).hidden == 2
    assert CoordAttention(64, min_hidden=16).hidden == 16
    assert CoordAttention(2048).hidden == 64


@pytest.mark.parametrize("shape", [(2, 12, 5, 7), (1, 12, 7, 3), (3, 12, 1, 4), (2, 12, 1, 1)])
def test_matches_the_equations_in_eval_mode(shape):
    m = randomised(12, reduction=2).eval()
    x = torch.randn(shape, dtype=torch.float64)
    torch.testing.assert_close(m(x), naive_coord(x, m, batch_stats=False))


@pytest.mark.parametrize("shape", [(2, 12, 5, 7), (1, 12, 4, 9), (1, 12, 1, 1), (3, 12, 2, 1)])
def test_matches_the_equations_in_train_mode_with_batch_statistics(shape):
    m = randomised(12, reduction=2).train()
    x = torch.randn(shape, dtype=torch.float64)
    torch.testing.assert_close(m(x), naive_coord(x, m, batch_stats=True))


def test_the_naive_reference_can_fail():
    """Guard against a vacuous equality: swapping H and W must not match, nor a max pool."""
    m = randomised(8, reduction=2).eval()
    x = torch.randn(2, 8, 6, 6, dtype=torch.float64)
    right = naive_coord(x, m, batch_stats=False)
    torch.testing.assert_close(m(x), right)
    # the row gate applied to columns and the column gate to rows (a transposed input)
    swapped = naive_coord(x.transpose(2, 3), m, batch_stats=False).transpose(2, 3)
    assert not torch.allclose(m(x), swapped)
    # F_h and F_w exchanged
    m2 = randomised(8, reduction=2).eval()
    m2.load_state_dict(m.state_dict())
    with torch.no_grad():
        m2.conv_h.weight.copy_(m.conv_w.weight), m2.conv_w.weight.copy_(m.conv_h.weight)
    assert not torch.allclose(m2(x), right)


def test_non_square_input_uses_its_own_h_and_w():
    m = CoordAttention(16).eval()
    for h, w in [(3, 11), (11, 3), (1, 9), (9, 1), (4, 4)]:
        x = torch.randn(2, 16, h, w)
        gates = capture_gates(m, x)
        assert gates["gate_h"].shape == (2, 16, h, 1)
        assert gates["gate_w"].shape == (2, 16, 1, w)
        torch.testing.assert_close(m(x), x * gates["gate_h"] * gates["gate_w"])


def test_row_gate_follows_rows_and_column_gate_follows_columns():
    """Permuting the rows of the input permutes g^h and leaves g^w unchanged, and vice versa."""
    m = randomised(8, reduction=2).eval()
    x = torch.randn(2, 8, 5, 7, dtype=torch.float64)
    g = capture_gates(m, x)
    rows, cols = torch.randperm(5), torch.randperm(7)
    g_r = capture_gates(m, x[:, :, rows])
    torch.testing.assert_close(g_r["gate_h"], g["gate_h"][:, :, rows])
    torch.testing.assert_close(g_r["gate_w"], g["gate_w"])
    g_c = capture_gates(m, x[:, :, :, cols])
    torch.testing.assert_close(g_c["gate_w"], g["gate_w"][:, :, :, cols])
    torch.testing.assert_close(g_c["gate_h"], g["gate_h"])


def test_activation_is_the_official_h_swish():
    m = CoordAttention(8)
    t = torch.linspace(-6, 6, 101)
    torch.testing.assert_close(m.act(t), hswish(t))


@pytest.mark.parametrize("h, w", [(1, 1), (7, 5), (1, 3)])
def test_train_mode_batch_one_works(h, w):
    """BN sees the strip (1, m, H + W, 1): H + W >= 2 values per channel, even at 1x1."""
    module_checks.assert_trains_on_batch_one(CoordAttention(16), 16, h, w)


def test_gradcheck_float64():
    m = randomised(4, reduction=2).train()
    x = torch.randn(2, 4, 3, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(m, (x,))
    m.eval()
    assert torch.autograd.gradcheck(m, (x,))


def test_flops_are_the_three_1x1_convolutions():
    # F1 on H + W positions (C -> m), F_h on H, F_w on W (m -> C): 2 FLOPs per multiply-add.
    B, C, H, W = 2, 64, 7, 9
    assert count_flops(CoordAttention(C), torch.randn(B, C, H, W)) == 2 * B * (C * 8 * (H + W) + 8 * C * H + 8 * C * W)


@pytest.mark.parametrize(
    "kwargs, words",
    [({"reduction": 0}, "reduction"), ({"reduction": 2.0}, "reduction"), ({"reduction": True}, "reduction"),
     ({"min_hidden": 0}, "min_hidden"), ({"min_hidden": "8"}, "min_hidden")],
)
def test_bad_hyperparameters(kwargs, words):
    with pytest.raises(ValueError, match=f"CoordAttention.*{words}"):
        CoordAttention(64, **kwargs)


@pytest.mark.parametrize(
    "x, words",
    [
        (torch.randn(2, 32, 7, 9), ["(B, 64, H, W)", "(2, 32, 7, 9)"]),
        (torch.randn(64, 7, 9), ["4-D", "(64, 7, 9)"]),
        (torch.ones(2, 64, 7, 9, dtype=torch.int64), ["floating", "int64"]),
        ("not a tensor", ["torch.Tensor", "str"]),
    ],
)
def test_bad_input_gets_a_clear_error(x, words):
    with pytest.raises(ValueError) as info:
        CoordAttention(64)(x)
    msg = str(info.value)
    assert "CoordAttention" in msg
    for w in words:
        assert w in msg
