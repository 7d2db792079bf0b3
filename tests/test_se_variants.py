"""The SE variants of ECA's Table 1, against loops written from the table's definitions."""

import pytest
import torch

from attncourse.channel.se_variants import SE_VARIANTS, SEVariant
from attncourse.cost import count_parameters


def naive(x, variant, weight=None, groups=4):
    """ω_c = σ(Σ_j W_cj y_j) with W = identity, diag(w), a full W or a block-diagonal W_G; out = ω ⊙ x."""
    B, C, H, W = x.shape
    y = x.sum((2, 3)) / (H * W)
    if variant == "var1":
        full = torch.eye(C, dtype=x.dtype)
    elif variant == "var2":
        full = torch.diag(weight)
    elif variant == "var3":
        full = weight
    else:
        n = C // groups
        full = torch.zeros(C, C, dtype=x.dtype)
        for g in range(groups):
            full[g * n : (g + 1) * n, g * n : (g + 1) * n] = weight[g]
    out = torch.empty_like(x)
    for b in range(B):
        for c in range(C):
            s = sum(full[c, j] * y[b, j] for j in range(C))
            out[b, c] = torch.sigmoid(s) * x[b, c]
    return out


@pytest.mark.parametrize("variant, expected", [("var1", 0), ("var2", 16), ("var3", 256), ("gc", 64)])
def test_parameter_counts_are_the_tables(variant, expected):
    """0, C, C², C²/G at C = 16, G = 4."""
    assert count_parameters(SEVariant(16, variant=variant, groups=4)) == expected


@pytest.mark.parametrize("variant", SE_VARIANTS)
def test_equals_the_definition_on_random_weights(variant):
    torch.manual_seed(0)
    m = SEVariant(8, variant=variant, groups=2).double()
    with torch.no_grad():
        for p in m.parameters():
            p.normal_()
    x = torch.randn(2, 8, 7, 5, dtype=torch.float64)
    w = m.fc.weight if variant == "var3" else getattr(m, "weight", None)
    torch.testing.assert_close(m(x), naive(x, variant, w, groups=2))


def test_var2_starts_as_var1():
    x = torch.randn(1, 6, 5, 7)
    torch.testing.assert_close(SEVariant(6, variant="var2")(x), SEVariant(6, variant="var1")(x))


@pytest.mark.parametrize("variant", SE_VARIANTS)
def test_shapes_batch_one_and_gradcheck(variant):
    m = SEVariant(4, variant=variant, groups=2).double()
    x = torch.randn(1, 4, 3, 5, dtype=torch.float64, requires_grad=True)
    assert m(x).shape == x.shape
    assert torch.autograd.gradcheck(m, (x,))


def test_bad_input_and_configurations_are_clear_errors():
    with pytest.raises(ValueError, match=r"SEVariant expected variant to be one of"):
        SEVariant(16, variant="var4")
    with pytest.raises(ValueError, match=r"SEVariant expected channels=18 to be divisible by groups=4"):
        SEVariant(18, variant="gc", groups=4)
    with pytest.raises(ValueError, match=r"SEVariant expected input of shape \(B, 16, H, W\), got \(2, 8, 5, 5\)"):
        SEVariant(16)(torch.randn(2, 8, 5, 5))
    with pytest.raises(ValueError, match=r"SEVariant expected a 4-D input"):
        SEVariant(16)(torch.randn(16, 5, 5))
    with pytest.raises(ValueError, match=r"SEVariant expected"):
        SEVariant(16)(torch.ones(1, 16, 5, 5, dtype=torch.long))
