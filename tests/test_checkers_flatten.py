"""The FLatten chapter's exercise checkers: each typical mistake gets its own message, the right
answer passes, a blank answer is "not attempted" without raising.

One table per exercise: (wrong answer, a fragment of the message it must get). The mistakes are
the ones listed above each checker in ``attncourse/exercises/flatten.py``.
"""

from __future__ import annotations

import torch
from einops import rearrange

from attncourse.exercises import flatten as ex

from checker_tables import check_table as _check_table


def _f(t, p, how="right", dim=-1):
    """f_p of the vectors along ``dim``, right or with one typical mistake."""
    tp = t**p

    def norm(a):
        return torch.linalg.vector_norm(a, dim=dim, keepdim=True)

    n = norm(t)
    return {
        "right": lambda: n * tp / norm(tp).clamp_min(1e-12),
        "nan": lambda: n / norm(tp) * tp,
        "unit": lambda: tp / norm(tp).clamp_min(1e-12),
        "power": lambda: tp,
        "norm^p": lambda: n / (n**p).clamp_min(1e-12) * tp,
        "p times x": lambda: n / norm(p * t).clamp_min(1e-12) * (p * t),
    }[how]()


def _focus_map(how="right", order="h d", dim=-1, layout="same"):
    def fn(x, p, heads):
        t = rearrange(x, f"b ({order}) y w -> b y w h d", h=heads)
        out = _f(t, p, how, dim)
        if layout == "channels last":
            return rearrange(out, "b y w h d -> b y w (h d)")
        return rearrange(out, f"b y w h d -> b ({order}) y w", h=heads)
    return fn


def _on_map(dim):
    """f_p applied to the map as it is, the norms along ``dim`` (-1: the chapter's focusing_function as is)."""
    def fn(x, p, heads):
        return _f(x, p, dim=dim)
    return fn


def test_focus_map():
    _check_table(ex.check_focus_map, _focus_map(), {
        "all C channels (norm='all')": (_on_map(1), "all C channels"),
        "(d h) split": (_focus_map(order="d h"), "(d h)"),
        "along the width (focusing_function as is)": (_on_map(-1), "along the width"),
        "along the height": (_on_map(-2), "along the height"),
        "whole map": (_on_map((1, 2, 3)), "whole map"),
        "0/0": (_focus_map("nan"), "gives NaN"),
        "unit vector": (_focus_map("unit"), "unit vector"),
        "power alone": (_focus_map("power"), "x^p alone"),
        "‖x‖^p": (_focus_map("norm^p"), "‖x‖^p"),
        "p·x": (_focus_map("p times x"), "not p · x"),
        "channels last": (_focus_map(layout="channels last"), "the shape is"),
        "something else": (lambda x, p, heads: torch.softmax(x * p, dim=1), "values differ"),
        "a crash": (lambda *a: 1 / 0, "ZeroDivisionError"),
    })
    # the package's focusing_function, on the map split into heads, passes
    from attncourse.linear.flatten import focusing_function
    assert ex.check_focus_map(lambda x, p, heads: rearrange(
        focusing_function(rearrange(x, "b (h d) y w -> b y w h d", h=heads), p), "b y w h d -> b (h d) y w"))


def test_rank_bound():
    _check_table(ex.check_rank_bound, 49, {
        "d": (64, "min(N, d)"),
        "C": (256, "d = C / h"),
        "d²": (4096, "state"),
        "d + 1": (65, "diagonal"),
        "N - 1": (48, "removes no rank"),
        "side": (7, "side of the window"),
        "N²": (2401, "number of entries"),
        "other": (12, "not right"),
    })


def test_flatten_variant_parameters():
    c, d, n = 192, 32, 49
    right = 3 * c * c + c * c + c + 9 * c + c + c + n * c
    assert right == 159_168
    _check_table(ex.check_flatten_variant_parameters, right, {
        "shared DWC": (right - 10 * c + 10 * d, "shared by the heads"),
        "5x5": (right - 10 * c + 26 * c, "5 × 5"),
        "qkv biases": (right + 3 * c, "no biases in this variant"),
        "one C missing": (right - c, "One C-sized vector is missing"),
        "no pos": (right - n * c, "positional encoding is missing"),
        "pos per head": (right - n * c + n * d, "not a d-vector"),
        "paper's": (right - n * c - c, "paper's module"),
        "other": (12345, "not right"),
    })
    # the package's module with the official options and a per-channel DWC: the same count
    from attncourse.cost import count_parameters
    from attncourse.linear.flatten import FocusedLinearAttention2d
    m = FocusedLinearAttention2d(c, heads=6, bias=False, scale="softplus", key_position=(7, 7), kernel_size=None)
    m.proj = torch.nn.Linear(c, c)
    assert count_parameters(m) + count_parameters(torch.nn.Conv2d(c, c, 3, groups=c)) == right
