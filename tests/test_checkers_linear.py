"""The linear-attention chapter's exercise checkers: each typical mistake gets its own message, the
right answer passes, a blank answer is "not attempted" without raising.

One table per exercise: (wrong answer, a fragment of the message it must get). The mistakes are the
ones listed above each checker in ``attncourse/exercises/linear.py``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import einsum

from attncourse.exercises import linear as ex

from checker_tables import check_table as _check_table

EPS = 1e-6


def _phi(t):
    return F.elu(t) + 1


def _block(mask="tril", state="both", normalise="causal", phi_again=False, eps=EPS, fill="zero", returns="right"):
    """A learner's causal_block in the masked n x n form, right or with one typical mistake."""
    def fn(fq, fk, v, s, z):
        s_in, z_in = s, z
        if phi_again:
            fq, fk = _phi(fq), _phi(fk)
        sim = fq @ fk.transpose(-2, -1)
        n = sim.shape[-1]
        keep = {"tril": sim.new_ones(n, n).tril(), "strict": sim.new_ones(n, n).tril(-1),
                "triu": sim.new_ones(n, n).triu(), "none": sim.new_ones(n, n)}[mask]
        masked = sim.masked_fill(keep == 0, float("-inf")) if fill == "-inf" else sim * keep
        num = masked @ v
        den = (sim if normalise == "all" else masked).sum(-1)
        if state in ("both", "num"):
            num = num + fq @ s
        if state in ("both", "den"):
            den = den + einsum(fq, z, "... n d, ... d -> ... n")
        out = num if normalise == "none" else num / (den[..., None] + eps)
        kv, ksum = fk.transpose(-2, -1) @ v, fk.sum(-2)
        return {
            "right": lambda: (out, s_in + kv, z_in + ksum),
            "one tensor": lambda: out,
            "pair": lambda: (out, s_in + kv),
            "S unchanged": lambda: (out, s_in, z_in + ksum),
            "S block only": lambda: (out, kv, z_in + ksum),
            "S last only": lambda: (out, s_in + fk[..., -1, :, None] * v[..., -1, None, :], z_in + ksum),
            "Z unchanged": lambda: (out, s_in + kv, z_in),
            "S transposed": lambda: (out, (s_in + kv).transpose(-2, -1), z_in + ksum),
        }[returns]()
    return fn


def _cumsum(s_axis=-3, z_axis=-2):
    """The running-sum form inside the block, with the cumsums along the given axes."""
    def fn(fq, fk, v, s, z):
        kv = fk[..., :, :, None] * v[..., :, None, :]  # (..., n, d, e)
        s_i, z_i = s[..., None, :, :] + kv.cumsum(s_axis), z[..., None, :] + fk.cumsum(z_axis)
        out = (fq[..., None, :] @ s_i)[..., 0, :] / ((fq * z_i).sum(-1, keepdim=True) + EPS)
        return out, s + kv.sum(-3), z + fk.sum(-2)
    return fn


def _softmax(scaled=True):
    def fn(fq, fk, v, s, z):
        n = fq.shape[-2]
        scores = (fq @ fk.transpose(-2, -1)) / (fq.shape[-1] ** 0.5 if scaled else 1)
        scores = scores.masked_fill(~torch.ones(n, n, dtype=torch.bool).tril(), float("-inf"))
        return scores.softmax(-1) @ v, s + fk.transpose(-2, -1) @ v, z + fk.sum(-2)
    return fn


def _chapter_forms(fq, fk, v, s, z):
    """The chapter's causal_masked copied: it starts from S = 0, Z = 0."""
    sim = (fq @ fk.transpose(-2, -1)).tril()
    return sim @ v / (sim.sum(-1, keepdim=True) + EPS), s + fk.transpose(-2, -1) @ v, z + fk.sum(-2)


def test_causal_block():
    _check_table(ex.check_causal_block, _block(), {
        "state ignored (the chapter's forms)": (_chapter_forms, "incoming state (s, z) is ignored"),
        "S without Z": (_block(state="num"), "Z is missing from the denominator"),
        "Z without S": (_block(state="den"), "S is missing from the numerator"),
        "no mask": (_block(mask="none"), "every key of the block"),
        "strict mask": (_block(mask="strict"), "diagonal is missing"),
        "future": (_block(mask="triu"), "future keys"),
        "no normaliser": (_block(normalise="none"), "normaliser is missing"),
        "block normaliser": (_block(normalise="all"), "denominator sums over every key"),
        "phi again": (_block(phi_again=True), "φ was applied again"),
        "no eps": (_block(eps=0.0), "the ε is missing"),
        "NaN (-inf mask)": (_block(fill="-inf"), "NaN"),
        "cumsum over d": (_cumsum(s_axis=-2, z_axis=-1), "cumsum runs over the wrong axis (S's over the feature axis d"),
        "cumsum over e": (_cumsum(s_axis=-1), "S's over the value axis e"),
        "Z's cumsum over d": (_cumsum(z_axis=-1), "S's over the positions, Z's over the feature axis d"),
        "softmax": (_softmax(), "softmax attention over the block's keys"),
        "softmax, unscaled": (_softmax(scaled=False), "φ(Q_i)ᵀφ(K_j), masked)"),
        "one tensor": (_block(returns="one tensor"), "returned one tensor"),
        "two things": (_block(returns="pair"), "of length 2"),
        "S unchanged": (_block(returns="S unchanged"), "returned S is the incoming one"),
        "S of the block only": (_block(returns="S block only"), "returned S holds only this block's sums"),
        "S of the last position": (_block(returns="S last only"), "returned S adds only the block's last position"),
        "Z unchanged": (_block(returns="Z unchanged"), "returned Z is the incoming one"),
        "S transposed": (_block(returns="S transposed"), "new S: the shape is"),
        "a crash": (lambda *a: 1 / 0, "ZeroDivisionError"),
    })
    # the cumsum form with the right axes passes too, and chained over blocks it is the chapter's causal form
    assert ex.check_causal_block(_cumsum())


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
