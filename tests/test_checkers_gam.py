"""The GAM chapter's exercise checkers: each typical mistake gets its own message, the right answer
passes, a blank answer is "not attempted" without raising. The mistakes are the ones listed above
each checker in ``attncourse/exercises/gam.py``."""

from __future__ import annotations

import torch

import attncourse
from attncourse.exercises import gam as ex

from checker_tables import check_table as _check_table


def test_gam_parameters():
    c, h = 128, 32
    right = 410_240
    assert attncourse.count_parameters(attncourse.create("gam", c)) == right
    _check_table(ex.check_gam_parameters, right, {
        "one pair of biases": (right - h - c, "one pair of layers"),
        "all biases or BN": (right - 2 * (h + c), "all four bias vectors or both batch norms"),
        "running stats": (right + 2 * (h + c), "buffers"),
        "weights only": (100 * c * h, "only the weights"),
        "channel only": (2 * c * h + h + c, "only the channel branch"),
        "spatial only": (98 * c * h + 3 * h + 3 * c, "only the spatial branch"),
        "3x3": (20 * c * h + 4 * h + 4 * c, "3×3"),
        "no reduction in the convs": (2 * c * h + h + c + 98 * c * c + 6 * c, "not C·C·k²"),
        "SE's r = 16": (100 * c * 8 + 4 * 8 + 4 * c, "r = 16"),
        "unknown": (right + 1, "is not right."),
    })


def _mc(how="paper"):
    def fn(f, w0, b0, w1, b1):
        if how == "pooled":
            v = torch.sigmoid(torch.relu(f.mean((2, 3)) @ w0.T + b0) @ w1.T + b1)
            return v
        if how == "pooled-map":
            v = torch.sigmoid(torch.relu(f.mean((2, 3)) @ w0.T + b0) @ w1.T + b1)
            return v[:, :, None, None].expand_as(f)
        z = f.reshape(f.shape[0], f.shape[2], f.shape[3], f.shape[1]) if how == "reshape" else f.permute(0, 2, 3, 1)
        hid = z @ w0.T + (0 if how == "no-bias" else b0)
        hid = hid if how == "no-relu" else torch.relu(hid)
        out = hid @ w1.T + (0 if how == "no-bias" else b1)
        out = {"no-sigmoid": out, "softmax": torch.softmax(out, -1)}.get(how, torch.sigmoid(out))
        if how == "not-back":
            return out
        if how == "h-w-swapped":
            return out.permute(0, 3, 2, 1)
        out = out.permute(0, 3, 1, 2)
        return out * f if how == "product" else out
    return fn


def test_channel_map():
    _check_table(ex.check_channel_map, _mc(), {
        "pooled map": (_mc("pooled-map"), "you pooled over H × W first"),
        "pooled vector": (_mc("pooled"), "H × W axes dropped"),
        "not permuted back": (_mc("not-back"), "not permuted back"),
        "H and W swapped": (_mc("h-w-swapped"), "H and W are swapped"),
        "reshape": (_mc("reshape"), "scrambled"),
        "no sigmoid": (_mc("no-sigmoid"), "copied GAM_Attention"),
        "softmax": (_mc("softmax"), "softmax over the channels"),
        "no relu": (_mc("no-relu"), "ReLU"),
        "no bias": (_mc("no-bias"), "biases b0 and b1"),
        "product": (_mc("product"), "the product M_c(F) ⊗ F"),
        "a crash": (lambda *a: 1 / 0, "ZeroDivisionError"),
    })


def _gam(how="paper"):
    def fn(f, mc, ms):
        f2 = mc(f) * f
        fs = ms(f) * f
        return {
            "paper": lambda: ms(f2) * f2,
            "parallel": lambda: ms(f) * mc(f) * f,
            "spatial-first": lambda: mc(fs) * fs,
            "f2": lambda: f2,
            "spatial-only": lambda: fs,
            "sum": lambda: (mc(f) + ms(f)) * f,
            "f1": lambda: ms(f2) * f,
        }[how]()
    return fn


def test_gam_order():
    _check_table(ex.check_gam_order, _gam(), {
        "parallel": (_gam("parallel"), "parallel"),
        "spatial first": (_gam("spatial-first"), "spatial map came first"),
        "F2": (_gam("f2"), "F2 only"),
        "spatial only": (_gam("spatial-only"), "spatial branch alone"),
        "sum": (_gam("sum"), "maps are added"),
        "times F1": (_gam("f1"), "multiplies F1"),
        "a crash": (lambda *a: 1 / 0, "ZeroDivisionError"),
    })


def test_gam_order_leaves_the_random_state_alone():
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    ex.check_gam_order(_gam())
    assert torch.equal(torch.random.get_rng_state(), before)
