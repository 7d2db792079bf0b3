"""The contract every registered mechanism keeps (GUIDE §3): shape in = shape out, odd sizes,
batch 1 in training mode, float64, and clear ValueErrors for bad input and bad constructors.

New modules are covered as soon as they are registered.
"""

import pytest
import torch

import attncourse
from attncourse.layers import Gate

C = 64
NAMES = attncourse.available()


def test_registry_lists_every_part():
    assert "se" in NAMES
    assert NAMES == sorted(NAMES)


def test_unknown_name_lists_the_available_ones():
    with pytest.raises(ValueError, match="unknown mechanism 'nope'.*se"):
        attncourse.create("nope", C)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("shape", [(2, C, 7, 5), (1, C, 9, 16), (3, C, 1, 1)])
def test_shape_is_preserved_on_odd_sizes(name, shape):
    m = attncourse.create(name, C).eval()
    x = torch.randn(shape)
    y = m(x)
    assert y.shape == x.shape
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("name", NAMES)
def test_float64_train_mode_batch_one_and_backward(name):
    m = attncourse.create(name, C).double().train()
    x = torch.randn(1, C, 7, 5, dtype=torch.float64, requires_grad=True)
    try:
        y = m(x)
    except ValueError as err:  # allowed only if it says why, naming the module
        assert type(m).__name__ in str(err) and "batch" in str(err)
        return
    assert y.dtype == torch.float64 and y.shape == x.shape
    y.square().sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


@pytest.mark.parametrize("name", NAMES)
def test_every_module_has_a_gate(name):
    m = attncourse.create(name, C)
    assert any(isinstance(s, Gate) for s in m.modules()) or attncourse.count_parameters(m) == 0


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize(
    "x, words",
    [
        (torch.randn(2, C // 2, 7, 9), ["shape", str(C), "(2, 32, 7, 9)"]),
        (torch.randn(C, 7, 9), ["4-D", f"({C}, 7, 9)"]),
        (torch.randn(2, C, 7, 9, 1), ["4-D", "5-D"]),
        (torch.ones(2, C, 7, 9, dtype=torch.long), ["floating", "int64"]),
        ([[1.0]], ["torch.Tensor", "list"]),
    ],
    ids=["channels", "rank3", "rank5", "int", "list"],
)
def test_bad_input_gets_a_clear_value_error(name, x, words):
    m = attncourse.create(name, C)
    with pytest.raises(ValueError) as info:
        m(x)
    msg = str(info.value)
    assert type(m).__name__ in msg
    for w in words:
        assert w in msg, f"{msg!r} should mention {w!r}"


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("channels", [0, -4, 2.5, True, "64"])
def test_bad_channel_counts_are_refused(name, channels):
    cls = attncourse.get(name)
    with pytest.raises(ValueError, match=cls.__name__):
        cls(channels)
