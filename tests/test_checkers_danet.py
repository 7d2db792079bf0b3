"""The DANet chapter's exercise checkers: each typical mistake gets its own message, the right answer
passes, a blank answer is "not attempted" without raising.

One table per exercise: (wrong answer, a fragment of the message it must get). The mistakes are the
ones listed above each checker in ``attncourse/exercises/danet.py``.
"""

from __future__ import annotations

import torch
from einops import rearrange

import attncourse
from attncourse.cost import count_parameters
from attncourse.exercises import danet as ex

from checker_tables import check_table as _check_table


# --- Exercise 1: parameters -------------------------------------------------------------------

def test_dual_parameters():
    c, d = 128, 8
    right = 2 * (c * d + d) + c * c + c + 2
    assert count_parameters(attncourse.create("danet", c, reduction=16)) == right
    _check_table(ex.check_dual_parameters, right, {
        "width C/8": (2 * (c * 16 + 16) + c * c + c + 2, "default width C/8"),
        "no biases": (2 * c * d + c * c + 2, "have biases"),
        "no scales": (right - 2, "α and β are parameters"),
        "no beta": (right - 1, "its own"),
        "CAM as a second PAM": (2 * (right - 2) + 2, "no convolutions"),
        "value reduced": (3 * (c * d + d) + 2, "value convolution D keeps"),
        "BN after query/key": (right + 4 * d, "batch norm"),
        "shared query/key": (c * d + d + c * c + c + 2, "two separate"),
        "something else": (right + 7, "is not right"),
    })


# --- Exercise 2: the channel attention module -------------------------------------------------

def _cam(how="right"):
    def fn(x, beta):
        a = rearrange(x, "b c h w -> b c (h w)")
        energy = a @ a.transpose(1, 2)
        X = {
            "right": lambda: torch.softmax(energy, -1),
            "stable": lambda: torch.softmax(energy - energy.amax(-1, keepdim=True), -1),  # also right
            "dim1": lambda: torch.softmax(energy, 1),
            "official": lambda: torch.softmax(energy.amax(-1, keepdim=True) - energy, -1),
            "sigmoid": lambda: torch.sigmoid(energy),
            "mean": lambda: torch.softmax(energy / a.shape[-1], -1),
        }.get(how, lambda: torch.softmax(energy, -1))()
        if how == "map":
            return X
        if how == "positions":
            return torch.softmax(a.transpose(1, 2) @ a, -1)
        if how == "XT A":
            X = X.transpose(1, 2)
        out = rearrange(X @ a, "b c (h w) -> b c h w", h=x.shape[2])
        return {"no residual": lambda: beta * out, "no beta": lambda: out + x,
                "wrong shape": lambda: (beta * out + x)[:, :, :, :-1]}.get(how, lambda: beta * out + x)()
    return fn


def test_cam_function():
    assert ex.check_cam_function(_cam("stable")), "the max-subtracted (stable) softmax is the same X"
    attncourse.create("cam", 6)  # the module the exercise derives
    _check_table(ex.check_cam_function, _cam(), {
        "softmax over dim 1": (_cam("dim1"), "sum to 1 over i"),
        "official affinity": (_cam("official"), "official code's affinity"),
        "sigmoid": (_cam("sigmoid"), "sigmoid"),
        "divided by N": (_cam("mean"), "divided them by N"),
        "no residual": (_cam("no residual"), "residual"),
        "no beta": (_cam("no beta"), "scale β"),
        "returned X": (_cam("map"), "attention map X"),
        "position affinity": (_cam("positions"), "N × N map over positions"),
        "wrong shape": (_cam("wrong shape"), "the shape is"),
    })


def test_the_two_transposition_mistakes_share_a_message():
    """Softmax over dim 1 and Xᵀ A give the same numbers (E is symmetric): one mistake, one message."""
    fb = ex.check_cam_function(_cam("XT A"))
    assert not fb and "not Xᵀ A" in fb.message
    assert fb.message == ex.check_cam_function(_cam("dim1")).message


# --- Exercise 3: the position attention module ------------------------------------------------

def _pam(how="right"):
    def fn(x, wq, bq, wk, bk, wv, bv, alpha):
        a = rearrange(x, "b c h w -> b c (h w)")
        q, k, v = wq @ a + bq[:, None], wk @ a + bk[:, None], wv @ a + bv[:, None]
        if how == "swapped":
            q, k = k, q
        if how == "no value":
            v = a
        logits = q.transpose(1, 2) @ k
        if how == "scaled":
            logits = logits / q.shape[1] ** 0.5
        S = {"softmax over j": lambda: torch.softmax(logits, 1), "sigmoid": lambda: torch.sigmoid(logits)}.get(
            how, lambda: torch.softmax(logits, -1))()
        if how == "map":
            return S
        if how == "channel":
            return torch.softmax(a @ a.transpose(1, 2), -1)
        out = rearrange(v @ (S if how == "D S" else S.transpose(1, 2)), "b c (h w) -> b c h w", h=x.shape[2])
        return {"no residual": lambda: alpha * out, "no alpha": lambda: out + x}.get(how, lambda: alpha * out + x)()
    return fn


def test_pam_function():
    _check_table(ex.check_pam_function, _pam(), {
        "query/key swapped": (_pam("swapped"), "exchanged"),
        "D S": (_pam("D S"), "that is D S"),
        "softmax over j": (_pam("softmax over j"), "over the output positions j"),
        "scaled": (_pam("scaled"), "1/√d"),
        "sigmoid": (_pam("sigmoid"), "sigmoid"),
        "no value conv": (_pam("no value"), "aggregated A itself"),
        "no residual": (_pam("no residual"), "residual"),
        "no alpha": (_pam("no alpha"), "scale α"),
        "returned S": (_pam("map"), "attention map S"),
        "channel affinity": (_pam("channel"), "channel module's affinity"),
    })


def test_pam_solution_equals_the_module():
    """The checker's reference is the package's PositionAttention with the same weights."""
    m = attncourse.create("pam", 8, reduction=4).double()
    with torch.no_grad():
        for p in m.parameters():
            p.normal_()
    x = torch.randn(2, 8, 3, 5, dtype=torch.float64)
    w = lambda conv: (conv.weight[:, :, 0, 0], conv.bias)  # noqa: E731
    got = _pam()(x, *w(m.query), *w(m.key), *w(m.value), m.alpha)
    torch.testing.assert_close(got, m(x))
