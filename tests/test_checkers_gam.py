"""The GAM chapter's exercise checkers: each typical mistake gets its own message, the right answer
passes, a blank answer is "not attempted" without raising. The mistakes are the ones listed above
each checker in ``attncourse/exercises/gam.py``."""

from __future__ import annotations

import torch
from einops import rearrange
from torch import nn

import attncourse
from attncourse.plot import capture_gates
from attncourse.exercises import gam as ex

from checker_tables import check_table as _check_table


def _grouped_gam(c=128, groups=(4, 4)):
    """GAM(c) with its 7×7 convolutions grouped: the exercise's variant, built."""
    m = attncourse.create("gam", c)
    m.conv0 = nn.Conv2d(c, m.hidden, 7, padding=3, groups=groups[0])
    m.conv1 = nn.Conv2d(m.hidden, c, 7, padding=3, groups=groups[1])
    return m


def test_gam_parameters():
    c, h = 128, 32
    right = 2 * c * h + h + c + 2 * 49 * c * h // 4 + 3 * h + 3 * c
    count = attncourse.count_parameters
    assert right == count(_grouped_gam()) == 109_184
    assert count(_grouped_gam(groups=(1, 1))) == count(attncourse.create("gam", c)) == 410_240
    _check_table(ex.check_gam_parameters, right, {
        "dense": (410_240, "That is the dense GAM(128)"),
        "one conv grouped": (count(_grouped_gam(groups=(4, 1))), "Only one of the two convolutions"),
        "divided by 16": (count(_grouped_gam(groups=(16, 16))), "divided by 16"),
        "MLP divided too": (right - 2 * c * h + 2 * c * h // 4, "Linear layers are not grouped"),
        "biases divided": (right - (h + c) + (h + c) // 4, "one bias per output channel"),
        "BN divided": (right - 2 * (h + c) + 2 * (h + c) // 4, "The batch norms are not grouped"),
        "running stats": (right + 2 * (h + c), "buffers"),
        "unknown": (right + 1, "is not right."),
    })


def _gate_at(how="paper"):
    """A channel_gate_at answer, right or with one mistake."""
    def fn(f, i, j, a0, b0, a1, b1):
        if how == "whole map":
            z = rearrange(f, "b c h w -> b h w c")
            return rearrange(torch.sigmoid(torch.relu(z @ a0.T + b0) @ a1.T + b1), "b h w c -> b c h w")
        v = {"pooled": lambda: f.mean((2, 3)), "swapped": lambda: f[:, :, j, i]}.get(how, lambda: f[:, :, i, j])()
        hid = v @ a0.T + (0 if how == "no-bias" else b0)
        hid = hid if how == "no-relu" else torch.relu(hid)
        out = hid @ a1.T + (0 if how == "no-bias" else b1)
        out = {"no-sigmoid": out, "softmax": torch.softmax(out, -1)}.get(how, torch.sigmoid(out))
        return out * f[:, :, i, j] if how == "product" else out
    return fn


def test_channel_map():
    _check_table(ex.check_channel_map, _gate_at(), {
        "pooled (SE)": (_gate_at("pooled"), "SE's squeeze"),
        "i and j swapped": (_gate_at("swapped"), "row and column are swapped"),
        "whole map": (_gate_at("whole map"), "that is the whole map"),
        "no sigmoid": (_gate_at("no-sigmoid"), "copied GAM_Attention"),
        "softmax": (_gate_at("softmax"), "softmax over the channels"),
        "no relu": (_gate_at("no-relu"), "ReLU"),
        "no bias": (_gate_at("no-bias"), "biases b0 and b1"),
        "product": (_gate_at("product"), "the product M_c(F) ⊗ F"),
        "a crash": (lambda *a: 1 / 0, "ZeroDivisionError"),
    })


def test_channel_gate_at_is_the_modules():
    """The exercise's right answer is the module's channel gate at that position."""
    m = attncourse.create("gam", 8).double()
    x = torch.randn(3, 8, 5, 7, dtype=torch.float64)
    gate = capture_gates(m, x)["channel_gate"]
    got = _gate_at()(x, 4, 2, m.fc0.weight, m.fc0.bias, m.fc1.weight, m.fc1.bias)
    torch.testing.assert_close(got, gate[:, :, 4, 2])


def _gate(how="paper"):
    """A total_gate answer, right or with one mistake."""
    def fn(f, mc, ms):
        f2 = mc(f) * f
        fs = ms(f) * f
        return {
            "paper": lambda: mc(f) * ms(f2),
            "parallel": lambda: mc(f) * ms(f),
            "mc on f2": lambda: mc(f2) * ms(f2),
            "spatial-first": lambda: ms(f) * mc(fs),
            "f3": lambda: ms(f2) * f2,
            "mc only": lambda: mc(f),
            "ms only": lambda: ms(f2),
            "sum": lambda: mc(f) + ms(f2),
        }[how]()
    return fn


def test_gam_order():
    _check_table(ex.check_gam_order, _gate(), {
        "parallel": (_gate("parallel"), "in parallel"),
        "M_c on F2": (_gate("mc on f2"), "M_c is computed again"),
        "spatial first": (_gate("spatial-first"), "the other order"),
        "F3": (_gate("f3"), "that is F3 itself"),
        "M_c only": (_gate("mc only"), "M_c(F1) alone"),
        "M_s only": (_gate("ms only"), "M_s(F2) alone"),
        "sum": (_gate("sum"), "maps are added"),
        "a crash": (lambda *a: 1 / 0, "ZeroDivisionError"),
    })


def test_total_gate_is_the_modules():
    """The exercise's right answer times F1 is the module's output."""
    m = attncourse.create("gam", 8).double().eval()
    x = torch.randn(3, 8, 5, 7, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(_gate()(x, m.channel_map, m.spatial_map) * x, m(x))


def test_gam_order_leaves_the_random_state_alone():
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    ex.check_gam_order(_gate())
    assert torch.equal(torch.random.get_rng_state(), before)
