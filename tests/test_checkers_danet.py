"""The DANet chapter's exercise checkers: each typical mistake gets its own message, the right answer
passes, a blank answer is "not attempted" without raising.

One table per exercise: (wrong answer, a fragment of the message it must get). The mistakes are the
ones listed above each checker in ``attncourse/exercises/danet.py``.
"""

from __future__ import annotations

import torch
from einops import einsum, rearrange

import attncourse
from attncourse.cost import count_flops
from attncourse.exercises import danet as ex

from checker_tables import check_table as _check_table


# --- Exercise 1: the N at which the two modules cost the same ---------------------------------

def test_equal_cost():
    c, d = 120, 30
    macs = lambda n: (n * c * (2 * d + c) + n * n * (d + c), 2 * c * c * n)  # noqa: E731  (PAM, CAM)
    assert macs(48)[0] == macs(48)[1] and macs(47)[0] < macs(47)[1] and macs(49)[0] > macs(49)[1]
    x = torch.randn(1, c, 6, 8)                                       # N = 48, measured by the counter
    assert count_flops(attncourse.create("pam", c, reduction=4), x) == count_flops(attncourse.create("cam", c), x)
    _check_table(ex.check_equal_cost, 48, {
        "width C/8": (80, "default query/key width"),
        "energies forgotten": (60, "N² C' multiply-adds"),
        "D Sᵀ forgotten": (240, "the product D Sᵀ"),
        "convolutions forgotten": (192, "three 1×1 convolutions"),
        "value reduced": (300, "value convolution D keeps"),
        "a side": (7, "not the side of a map"),
        "first N above": (49, "solve PAM = CAM"),
        "something else": (50, "is not right"),
    })


# --- Exercise 2: grouped channel attention -----------------------------------------------------

def _cam_grouped(how="right"):
    def fn(x, beta, groups):
        a = rearrange(x, "b c h w -> b c (h w)")
        pattern = "b (k g) n -> b g k n" if how == "interleaved" else "b (g k) n -> b g k n"
        g = {"size G": a.shape[1] // groups, "ungrouped": 1}.get(how, groups)
        ag = rearrange(a, pattern, g=g)
        energy = einsum(ag, ag, "b g i n, b g j n -> b g j i")
        if how == "masked":
            full = torch.softmax(einsum(a, a, "b i n, b j n -> b j i"), -1)
            k = a.shape[1] // groups
            mask = torch.block_diag(*[torch.ones(k, k)] * groups)
            return rearrange(beta * (full * mask) @ a + a, "b c (h w) -> b c h w", h=x.shape[2])
        X = {"official": lambda: torch.softmax(energy.amax(-1, keepdim=True) - energy, -1),
             "dim j": lambda: torch.softmax(energy, -2),
             "stable": lambda: torch.softmax(energy - energy.amax(-1, keepdim=True), -1)}.get(
            how, lambda: torch.softmax(energy, -1))()
        if how == "map":
            return X
        out = rearrange(einsum(X, ag, "b g j i, b g i n -> b g j n"), pattern.split(" -> ")[1] + " -> " +
                        pattern.split(" -> ")[0], g=g)
        out = rearrange(out, "b c (h w) -> b c h w", h=x.shape[2])
        return {"no residual": lambda: beta * out, "no beta": lambda: out + x,
                "cropped": lambda: (beta * out + x)[..., :-1]}.get(how, lambda: beta * out + x)()
    return fn


def test_cam_grouped():
    assert ex.check_cam_grouped(_cam_grouped("stable")), "the max-subtracted (stable) softmax is the same X"
    m = attncourse.create("cam", 8).double()                          # one group is the chapter's module
    x = torch.randn(3, 8, 5, 7, dtype=torch.float64)
    with torch.no_grad():
        m.beta.fill_(0.6)
    torch.testing.assert_close(_cam_grouped()(x, m.beta, 1), m(x))
    _check_table(ex.check_cam_grouped, _cam_grouped(), {
        "interleaved groups": (_cam_grouped("interleaved"), "interleaved"),
        "G and C/G exchanged": (_cam_grouped("size G"), "C/groups groups"),
        "no groups": (_cam_grouped("ungrouped"), "over all C channels"),
        "softmax then mask": (_cam_grouped("masked"), "zeroed"),
        "official affinity": (_cam_grouped("official"), "official code's affinity"),
        "softmax over j": (_cam_grouped("dim j"), "sum to 1 over i"),
        "no residual": (_cam_grouped("no residual"), "residual"),
        "no beta": (_cam_grouped("no beta"), "scale β"),
        "returned X": (_cam_grouped("map"), "shape of the weights X"),
        "wrong shape": (_cam_grouped("cropped"), "the shape is"),
        "crash": (lambda x, beta, groups: x @ x, "raised"),
    })


# --- Exercise 3: position attention, chunk by chunk --------------------------------------------

def _pam(how="right"):
    def fn(x, wq, bq, wk, bk, wv, bv, alpha, chunk):
        a = rearrange(x, "b c h w -> b c (h w)")
        q, k, v = wq @ a + bq[:, None], wk @ a + bk[:, None], wv @ a + bv[:, None]
        if how == "swapped":
            q, k = k, q
        if how == "no value":
            v = a
        n = a.shape[-1]
        if how == "full":
            starts = [0]
            chunk = n
        elif how == "remainder dropped":
            starts = range(0, n - chunk + 1, chunk)
        else:
            starts = range(0, n, chunk)
        out = a.clone() if how == "remainder dropped" else torch.empty_like(a)
        for s in starts:
            if how == "key chunks":            # every query at once, the keys in chunks
                if s > 0:
                    continue
                logits = q.transpose(1, 2) @ k
                S = torch.cat([torch.softmax(p, -1) for p in logits.split(chunk, -1)], -1)
                ctx = v @ S.transpose(1, 2)
                out = alpha * ctx + a
                break
            logits = q[:, :, s:s + chunk].transpose(1, 2) @ k           # (b, chunk, N): [j, i]
            if how == "scaled":
                logits = logits / q.shape[1] ** 0.5
            S = {"softmax over j": lambda: torch.softmax(logits, 1), "sigmoid": lambda: torch.sigmoid(logits)}.get(
                how, lambda: torch.softmax(logits, -1))()
            if how == "map":
                return torch.softmax(q.transpose(1, 2) @ k, -1)
            if how == "D S":
                full = torch.softmax(q.transpose(1, 2) @ k, -1)
                ctx = v @ full[:, :, s:s + chunk]
            else:
                ctx = v @ S.transpose(1, 2)                             # (b, c, chunk)
            out[:, :, s:s + chunk] = {"no residual": lambda: alpha * ctx, "no alpha": lambda: ctx + a[:, :, s:s + chunk]}.get(
                how, lambda: alpha * ctx + a[:, :, s:s + chunk])()
        return rearrange(out, "b c (h w) -> b c h w", h=x.shape[2])
    return fn


def _pam_listed(x, wq, bq, wk, bk, wv, bv, alpha, chunk):
    """The right numbers, but every chunk's weights are kept in a list: the whole S at once."""
    a = rearrange(x, "b c h w -> b c (h w)")
    q, k, v = wq @ a + bq[:, None], wk @ a + bk[:, None], wv @ a + bv[:, None]
    rows = [torch.softmax(q[:, :, s:s + chunk].transpose(1, 2) @ k, -1) for s in range(0, a.shape[-1], chunk)]
    ctx = torch.cat([v @ S.transpose(1, 2) for S in rows], -1)
    return rearrange(alpha * ctx + a, "b c (h w) -> b c h w", h=x.shape[2])


def test_pam_chunked():
    _check_table(ex.check_pam_chunked, _pam(), {
        "last chunk dropped": (_pam("remainder dropped"), "the last chunk is shorter"),
        "key chunks": (_pam("key chunks"), "split the keys"),
        "whole S at once": (_pam("full"), "whole N × N matrix"),
        "whole S in a list": (_pam_listed, "whole N × N matrix"),
        "query/key swapped": (_pam("swapped"), "exchanged"),
        "D S": (_pam("D S"), "that is D S"),
        "softmax over j": (_pam("softmax over j"), "over the output positions j"),
        "scaled": (_pam("scaled"), "1/√d"),
        "sigmoid": (_pam("sigmoid"), "sigmoid"),
        "no value conv": (_pam("no value"), "aggregated A itself"),
        "no residual": (_pam("no residual"), "residual"),
        "no alpha": (_pam("no alpha"), "scale α"),
        "returned S": (_pam("map"), "attention map S"),
        "crash": (lambda x, *w: x @ w[0], "raised"),
    })


def test_the_two_full_matrix_answers_share_a_message():
    """All at once, or chunk by chunk with every chunk kept: the same peak, the same message."""
    assert ex.check_pam_chunked(_pam("full")).message.split("held")[0] == ex.check_pam_chunked(_pam_listed).message.split("held")[0]


def test_pam_chunked_solution_equals_the_module():
    """The checker's reference is the package's PositionAttention with the same weights."""
    m = attncourse.create("pam", 8, reduction=4).double()
    with torch.no_grad():
        for p in m.parameters():
            p.normal_()
    x = torch.randn(3, 8, 4, 5, dtype=torch.float64)
    w = lambda conv: (conv.weight[:, :, 0, 0], conv.bias)  # noqa: E731
    got = _pam()(x, *w(m.query), *w(m.key), *w(m.value), m.alpha, 6)
    torch.testing.assert_close(got, m(x))
