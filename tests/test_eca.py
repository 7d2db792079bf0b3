"""ECA against the paper's equations (Wang et al., CVPR 2020)."""

import math

import pytest
import torch

import attncourse
from attncourse.channel.eca import ECA, eca_kernel_size
from attncourse.cost import count_flops, count_parameters

# k = ψ(C) with γ = 2, b = 1, for the widths of common networks between 64 and 2048
# (the table of the chapter), plus the edges where k changes and the small widths where it is 1.
KERNEL_TABLE = {
    1: 1, 2: 1, 4: 1, 7: 1, 8: 3, 16: 3, 32: 3,
    64: 3, 96: 3, 127: 3, 128: 5, 160: 5, 192: 5, 256: 5, 320: 5, 384: 5, 512: 5,
    640: 5, 768: 5, 1024: 5, 1280: 5, 1536: 5, 2047: 5, 2048: 7, 8192: 7, 32767: 7, 32768: 9,
}


def naive_eca(x, w):
    """y = GAP(X); ω_i = σ(Σ_j w^j y_{i+j-p}) with zeros outside 0..C-1; X̃ = ω ⊙ X. Loops over channels."""
    B, C, H, W = x.shape
    k = len(w)
    p = (k - 1) // 2
    out = torch.empty_like(x)
    for n in range(B):
        y = [x[n, c].sum() / (H * W) for c in range(C)]  # GAP
        for i in range(C):
            s = torch.zeros((), dtype=x.dtype)
            for j in range(k):  # the k neighbours of channel i, the same w for every i
                c = i + j - p
                if 0 <= c < C:
                    s = s + w[j] * y[c]
            out[n, i] = torch.sigmoid(s) * x[n, i]
    return out


def snippet_kernel_size(C, gamma=2, b=1):
    """The paper's PyTorch snippet, written independently of the module."""
    t = int(abs((math.log(C, 2) + b) / gamma))
    return t if t % 2 else t + 1


def test_create_eca_has_3_5_5_7_parameters():
    """The issue's figures: k parameters, k = ψ(C) = 3, 5, 5, 7 at C = 64, 256, 512, 2048."""
    assert [count_parameters(attncourse.create("eca", c)) for c in (64, 256, 512, 2048)] == [3, 5, 5, 7]


@pytest.mark.parametrize("C, k", sorted(KERNEL_TABLE.items()))
def test_kernel_formula_gives_the_tabulated_values(C, k):
    assert eca_kernel_size(C) == k
    assert ECA(C).kernel_size == k
    assert count_parameters(ECA(C)) == k


@pytest.mark.parametrize("gamma, beta", [(2, 1), (1, 1), (3, 2), (2.5, 0.5), (2, -1)])
def test_kernel_formula_equals_the_paper_snippet(gamma, beta):
    for C in range(1, 4097):
        assert eca_kernel_size(C, gamma, beta) == snippet_kernel_size(C, gamma, beta), C


def test_kernel_formula_is_the_nearest_odd_number_ties_up():
    for C in range(1, 4097):
        t = (math.log2(C) + 1) / 2
        k = eca_kernel_size(C)
        assert k % 2 == 1
        assert abs(k - t) <= 1 + 1e-12
        if abs(abs(k - t) - 1) < 1e-12:  # a tie between two odd numbers: the upper one
            assert k > t


@pytest.mark.parametrize("C", [64, 256, 100, 2048])
@pytest.mark.parametrize("k", [1, 3, 9])
def test_kernel_size_override_sets_the_parameters(C, k):
    m = ECA(C, kernel_size=k)
    assert m.kernel_size == k and count_parameters(m) == k and m.conv.padding == ((k - 1) // 2,)


def test_gamma_and_beta_change_the_kernel():
    assert ECA(256, gamma=1).kernel_size == 9  # t = int(8 + 1) = 9
    assert ECA(256, beta=3).kernel_size == 5  # t = int((8 + 3) / 2) = 5
    assert ECA(256, gamma=1, kernel_size=3).kernel_size == 3  # the override wins


def test_resnet50_released_kernels_and_formula():
    """Released ECA-ResNet-50: k = (3, 5, 5, 7) per stage, 80 parameters (the paper's claim);
    ψ on the stages' output widths gives (5, 5, 5, 7), 86 parameters."""
    stages = [(256, 3), (512, 4), (1024, 6), (2048, 3)]
    released = sum(n * count_parameters(ECA(c, kernel_size=k)) for (c, n), k in zip(stages, (3, 5, 5, 7)))
    formula = sum(n * count_parameters(ECA(c)) for c, n in stages)
    assert [eca_kernel_size(c) for c, _ in stages] == [5, 5, 5, 7]
    assert (released, formula) == (80, 86)


@pytest.mark.parametrize(
    "C, k, shape",
    [(6, 3, (2, 6, 7, 5)), (6, 1, (1, 6, 1, 1)), (5, 7, (3, 5, 4, 9)), (11, 5, (2, 11, 3, 8))],
)
def test_matches_the_equations_on_random_weights(C, k, shape):
    m = ECA(C, kernel_size=k).double()
    torch.nn.init.normal_(m.conv.weight)
    x = torch.randn(shape, dtype=torch.float64)
    torch.testing.assert_close(m(x), naive_eca(x, m.conv.weight.view(-1)))


def test_equals_sigma_of_the_banded_matrix():
    """ECA is σ(W_k y) with W_k a C×C band matrix whose rows all hold the same k weights."""
    C, k = 9, 5
    m = ECA(C, kernel_size=k).double()
    torch.nn.init.normal_(m.conv.weight)
    w = m.conv.weight.view(-1)
    band = torch.zeros(C, C, dtype=torch.float64)
    for i in range(C):
        for j in range(k):
            if 0 <= i + j - (k - 1) // 2 < C:
                band[i, i + j - (k - 1) // 2] = w[j]
    x = torch.randn(2, C, 3, 5, dtype=torch.float64)
    torch.testing.assert_close(m(x), x * torch.sigmoid(x.mean((2, 3)) @ band.T)[..., None, None])


def test_the_naive_reference_can_fail():
    """Guard against a vacuous equality: a flipped kernel, circular padding or a bias must not match."""
    C = 8
    m = ECA(C, kernel_size=3).double()
    with torch.no_grad():
        m.conv.weight.copy_(torch.tensor([[[1.0, -2.0, 0.5]]], dtype=torch.float64))
    w = m.conv.weight.view(-1)
    x = torch.randn(2, C, 5, 3, dtype=torch.float64)
    y = x.mean((2, 3))
    assert not torch.allclose(m(x), naive_eca(x, w.flip(0)))  # true convolution, not cross-correlation
    circular = w[0] * y.roll(1, 1) + w[1] * y + w[2] * y.roll(-1, 1)  # CECA-style wrap-around
    assert not torch.allclose(m(x), x * torch.sigmoid(circular)[..., None, None])
    biased = torch.nn.functional.conv1d(y[:, None], w.view(1, 1, -1), torch.ones(1, dtype=torch.float64), padding=1)[:, 0]
    assert not torch.allclose(m(x), x * torch.sigmoid(biased)[..., None, None])  # the paper's C1D has no bias
    torch.testing.assert_close(m(x), naive_eca(x, w))  # while the right reference does match


@pytest.mark.parametrize("shape", [(2, 64, 7, 5), (1, 64, 9, 16), (3, 64, 1, 1), (2, 64, 1, 13)])
def test_shape_on_non_square_sizes(shape):
    x = torch.randn(shape)
    assert ECA(64)(x).shape == x.shape


def test_gate_outputs_the_channel_weights():
    from attncourse.plot import capture_gates

    m = ECA(16).eval()
    x = torch.randn(3, 16, 5, 7)
    w = capture_gates(m, x)["gate"]
    assert w.shape == (3, 16) and ((w > 0) & (w < 1)).all()
    torch.testing.assert_close(m(x), x * w[..., None, None])


def test_gradcheck_float64():
    m = ECA(5, kernel_size=3).double()
    x = torch.randn(2, 5, 2, 1, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(m, (x,))
    w = torch.randn(1, 1, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, w: torch.func.functional_call(m, {"conv.weight": w}, (x,)), (x, w))


def test_flops_are_the_1d_convolution():
    # FlopCounterMode counts 2 FLOPs per multiply-add: 2 * B * C * k (zero padding included).
    assert count_flops(ECA(64), torch.randn(2, 64, 7, 9)) == 2 * 2 * 64 * 3
    assert count_flops(ECA(2048), torch.randn(1, 2048, 7, 7)) == 2 * 1 * 2048 * 7


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"kernel_size": 0}, "kernel_size"),
        ({"kernel_size": -3}, "kernel_size"),
        ({"kernel_size": 4}, "odd"),
        ({"kernel_size": 3.0}, "kernel_size"),
        ({"kernel_size": True}, "kernel_size"),
        ({"gamma": 0}, "gamma"),
        ({"gamma": -2}, "gamma"),
        ({"gamma": float("nan")}, "gamma"),
        ({"gamma": float("inf")}, "gamma"),
        ({"gamma": "2"}, "gamma"),
        ({"gamma": True}, "gamma"),
        ({"beta": float("nan")}, "beta"),
        ({"beta": None}, "beta"),
    ],
)
def test_bad_hyperparameters(kwargs, words):
    with pytest.raises(ValueError, match=f"ECA.*{words}"):
        ECA(64, **kwargs)


@pytest.mark.parametrize("args", [(0,), (2.5,), (True,), (64, 0), (64, -1), (64, 2, float("inf"))])
def test_kernel_size_function_rejects_bad_arguments(args):
    with pytest.raises(ValueError, match="eca_kernel_size"):
        eca_kernel_size(*args)


@pytest.mark.parametrize(
    "x, words",
    [
        (torch.randn(2, 32, 7, 9), ["ECA", "(B, 64, H, W)", "(2, 32, 7, 9)"]),
        (torch.randn(64, 7, 9), ["ECA", "4-D", "(64, 7, 9)"]),
        (torch.ones(2, 64, 7, 9, dtype=torch.long), ["ECA", "floating"]),
    ],
)
def test_bad_input_gets_a_clear_error(x, words):
    with pytest.raises(ValueError) as info:
        ECA(64)(x)
    for w in words:
        assert w in str(info.value)
