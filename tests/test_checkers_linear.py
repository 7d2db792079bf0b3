"""The linear-attention chapter's exercise checkers: each typical mistake gets its own message, the
right answer passes, a blank answer is "not attempted" without raising.

One table per exercise: (wrong answer, a fragment of the message it must get). The mistakes are the
ones listed above each checker in ``attncourse/exercises/linear.py``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from attncourse.exercises import linear as ex

from checker_tables import check_table as _check_table

EPS = 1e-6


def _masked(mask="tril", normalise="causal", phi_again=False, eps=EPS):
    def fn(fq, fk, v):
        if phi_again:
            fq, fk = F.elu(fq) + 1, F.elu(fk) + 1
        sim = fq @ fk.transpose(-2, -1)
        n = sim.shape[-1]
        keep = {"tril": sim.new_ones(n, n).tril(), "strict": sim.new_ones(n, n).tril(-1),
                "triu": sim.new_ones(n, n).triu(), "none": sim.new_ones(n, n)}[mask]
        num = (sim * keep) @ v
        if normalise == "none":
            return num
        den = (sim * keep if normalise == "causal" else sim).sum(-1, keepdim=True)
        return num / (den + eps)
    return fn


def _loop(update_after_read=False):
    def fn(fq, fk, v):
        s = fq.new_zeros(*fq.shape[:-2], fq.shape[-1], v.shape[-1])
        z = fq.new_zeros(*fq.shape[:-2], fq.shape[-1])
        out = []
        for i in range(fq.shape[-2]):
            if not update_after_read:
                s, z = s + fk[..., i, :, None] * v[..., i, None, :], z + fk[..., i, :]
            o = (fq[..., i, None, :] @ s)[..., 0, :] / ((fq[..., i, :] * z).sum(-1, keepdim=True) + EPS)
            out.append(o)
            if update_after_read:
                s, z = s + fk[..., i, :, None] * v[..., i, None, :], z + fk[..., i, :]
        return torch.stack(out, -2)
    return fn


def _cumsum(axis=-3, reverse=False):
    def fn(fq, fk, v):
        kv = fk[..., :, None] * v[..., None, :]  # (..., n, d, e)
        if reverse:
            s, z = kv.flip(-3).cumsum(-3).flip(-3), fk.flip(-2).cumsum(-2).flip(-2)
        else:
            s, z = kv.cumsum(axis), fk.cumsum(-2 if axis == -3 else -1)
        return (fq[..., None, :] @ s)[..., 0, :] / ((fq * z).sum(-1, keepdim=True) + EPS)
    return fn


def _blank(*args):
    raise NotImplementedError


def test_causal_three_ways():
    right = _masked()

    def three(loop=_loop(), cumsum=_cumsum(), masked=right):
        return (loop, cumsum, masked)

    rows = {
        "non-causal": three(masked=_masked(mask="none")),
        "strict mask": three(masked=_masked(mask="strict")),
        "state read before update": three(loop=_loop(update_after_read=True)),
        "future": three(masked=_masked(mask="triu")),
        "reversed cumsum": three(cumsum=_cumsum(reverse=True)),
        "no normaliser": three(masked=_masked(normalise="none")),
        "full normaliser": three(masked=_masked(normalise="all")),
        "phi again": three(masked=_masked(phi_again=True)),
        "cumsum over features": three(cumsum=_cumsum(axis=-2)),
        "a crash": three(cumsum=lambda *a: 1 / 0),
    }
    fragments = {
        "non-causal": "non-causal form",
        "strict mask": "diagonal is missing",
        "state read before update": "diagonal is missing",
        "future": "future keys",
        "reversed cumsum": "future keys",
        "no normaliser": "normaliser is missing",
        "full normaliser": "whole sequence",
        "phi again": "φ was applied again",
        "cumsum over features": "values differ",
        "a crash": "ZeroDivisionError",
    }
    assert ex.check_causal_three_ways(*three())
    messages = {}
    for label, answer in rows.items():
        fb = ex.check_causal_three_ways(*answer)
        assert not fb and fb.attempted, f"{label}: {fb!r}"
        assert fragments[label] in fb.message, f"{label}: {fb.message!r}"
        messages[label] = fb.message
    # the message names the form that is wrong
    assert "causal_masked" in messages["non-causal"] and "causal_loop" in messages["state read before update"]
    assert "causal_cumsum" in messages["reversed cumsum"]
    # two mistakes that are one mistake (the diagonal) share a message up to the form's name; the others differ
    distinct = {m.split(":", 1)[1] for k, m in messages.items() if k not in ("state read before update", "reversed cumsum")}
    assert len(distinct) == len(messages) - 2
    blank = ex.check_causal_three_ways(_blank, _blank, _blank)
    assert not blank and not blank.attempted and "not attempted" in blank.message
    fb = ex.check_causal_three_ways(_loop(), _blank, right)
    assert not fb and fb.attempted and "2 of the three" in fb.message
    fb = ex.check_causal_three_ways(..., ..., ...)
    assert not fb and not fb.attempted


def test_flop_ratio():
    n, d = 56 * 56, 64
    assert n / d == 49
    _check_table(ex.check_flop_ratio, 49, {
        "inverted": (d / n, "linear over softmax"),
        "C not d": (n / 256, "C = 256"),
        "side": (56 / d, "not the side"),
        "N/d²": (n / d**2, "not N / d²"),
        "N²/d²": (n**2 / d**2, "one N and one d cancel"),
        "h N / d": (4 * n / d, "and cancel."),
    })


def test_state_bytes():
    h, d = 8, 64
    right = h * (d * d + d) * 4
    assert right == 133_120
    _check_table(ex.check_state_bytes, right, {
        "no Z": (h * d * d * 4, "S alone"),
        "one head": ((d * d + d) * 4, "one head"),
        "C x C": ((512**2 + 512) * 4, "C × C"),
        "numbers": (h * (d * d + d), "4 bytes"),
        "float16": (h * (d * d + d) * 2, "float16"),
        "float64": (h * (d * d + d) * 8, "float64"),
    })
