"""The FLatten chapter's exercise checkers: each typical mistake gets its own message, the right
answer passes, a blank answer is "not attempted" without raising.

One table per exercise: (wrong answer, a fragment of the message it must get). The mistakes are
the ones listed above each checker in ``attncourse/exercises/flatten.py``.
"""

from __future__ import annotations

import torch

from attncourse.exercises import flatten as ex

from checker_tables import check_table as _check_table


def _focusing(how="right"):
    def fn(x, p):
        xp = x**p
        n = x.norm(dim=-1, keepdim=True)
        if how == "right":
            return n * xp / xp.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        return {
            "nan": lambda: n / xp.norm(dim=-1, keepdim=True) * xp,
            "unit": lambda: xp / xp.norm(dim=-1, keepdim=True).clamp_min(1e-12),
            "power": lambda: xp,
            "norm^p": lambda: n / (n**p).clamp_min(1e-12) * xp,
            "dim 0": lambda: x.norm(dim=0, keepdim=True) / xp.norm(dim=0, keepdim=True) * xp,
            "all": lambda: x.norm() / xp.norm() * xp,
            "p times x": lambda: n / (p * x).norm(dim=-1, keepdim=True).clamp_min(1e-12) * (p * x),
            "transposed": lambda: (n * xp / xp.norm(dim=-1, keepdim=True).clamp_min(1e-12)).T,
            "softmax": lambda: torch.softmax(x * p, dim=-1),
        }[how]()
    return fn


def test_focusing():
    _check_table(ex.check_focusing, _focusing(), {
        "0/0": (_focusing("nan"), "gives NaN"),
        "unit vector": (_focusing("unit"), "unit vector"),
        "power alone": (_focusing("power"), "x^p alone"),
        "‖x‖^p": (_focusing("norm^p"), "‖x‖^p"),
        "over rows": (_focusing("dim 0"), "over the rows"),
        "over everything": (_focusing("all"), "whole tensor"),
        "p·x": (_focusing("p times x"), "not p · x"),
        "transposed": (_focusing("transposed"), "the shape is"),
        "something else": (_focusing("softmax"), "values differ"),
        "a crash": (lambda *a: 1 / 0, "ZeroDivisionError"),
    })
    # the package's own function passes
    from attncourse.linear.flatten import focusing_function
    assert ex.check_focusing(focusing_function)


def test_rank_bound():
    _check_table(ex.check_rank_bound, 32, {
        "N": (3136, "N = 3,136"),
        "C": (96, "d = C / h"),
        "d²": (1024, "state"),
        "d + 1": (33, "diagonal"),
        "side": (56, "side of the window"),
        "other": (7, "not right"),
    })


def test_flatten_swin_parameters():
    c, d, n = 96, 32, 56 * 56
    right = 4 * c * c + 4 * c + 25 * d + d + c + n * c
    assert right == 339_232
    _check_table(ex.check_flatten_swin_parameters, right, {
        "no pos": (right - n * c, "positional encoding is missing"),
        "no scale": (right - c, "scale is missing"),
        "no DWC": (right - 26 * d, "depthwise convolution on V is missing"),
        "DWC on C": (right - 26 * d + 26 * c, "shared by the heads"),
        "DWC no bias": (right - d, "bias is missing"),
        "no proj biases": (right - 4 * c, "4C more"),
        "paper's": (right - n * c - c, "paper's module"),
        "other": (12345, "not right"),
    })
    # the package's module with the official options gives the same count
    from attncourse.cost import count_parameters
    from attncourse.linear.flatten import FocusedLinearAttention2d
    m = FocusedLinearAttention2d(96, heads=3, scale="softplus", norm="all", key_position=(56, 56))
    assert count_parameters(m) == right
