"""Checkers for the exercises of the CCNet (criss-cross attention) chapter.

Above each checker, a comment lists the mistakes a learner typically makes on that exercise;
each one gets its own message (``tests/test_checkers_ccnet.py`` tries every one of them).
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from . import Feedback, check_number, compare_tensors, failed, match_mistake, passed, run_answer

__all__ = ["check_unshared_parameters", "check_cross3d_entries", "check_criss_cross_3d"]


def _pass_params(c: int, inner: int, *, value: int | None = None, biases: bool = True, gamma: bool = True) -> int:
    """One pass's parameters: query and key 1×1 convolutions C → inner, value C → value, and γ."""
    value = c if value is None else value
    return 2 * (c * inner + (inner if biases else 0)) + c * value + (value if biases else 0) + (1 if gamma else 0)


# Exercise 1: a criss-cross module with C = 96, reduction=4 (C' = 24) and R = 3 passes that do NOT
# share their weights (each pass its own three convolutions and γ): 3 × 13,969 = 41,907.
# Typical mistakes:
#   - one pass's parameters only (the shared module's count): 13,969
#   - the module's default width C/8 instead of C/4: 3 × 11,641; or the module itself, shared, at C/8
#   - the default R = 2 instead of 3
#   - one γ for all passes (the convolutions × 3, γ once) / γ forgotten
#   - the convolutions' biases forgotten
#   - the value projection reduced to C' like the query and key
#   - the query and key kept at C channels (no reduction)
def check_unshared_parameters(answer: Any) -> Feedback:
    """Exercise 1: parameters of three criss-cross passes with their own weights, C = 96, C' = 24."""
    c, inner, r = 96, 24, 3
    one = _pass_params(c, inner)
    right = r * one
    return check_number(
        answer,
        right,
        what="Parameters of three unshared passes (C = 96, reduction=4)",
        hints={
            one: "That is one pass's set, all that the module's shared passes need; here each of the three "
            "passes has its own convolutions and γ: three sets.",
            r * _pass_params(c, c // 8): "That is the default width C/8 = 12; with reduction=4 the query and key "
            "have C' = C/4 = 24 channels.",
            _pass_params(c, c // 8): "That is CrissCrossAttention(96) itself: the default width C/8 and shared "
            "passes. Here C' = C/4 = 24 and each of the three passes has its own weights.",
            2 * one: "R = 2 is the module's default; the question has R = 3 passes.",
            r * (one - 1) + 1: "Each pass has its own γ too, not only its own convolutions: three γ.",
            r * (one - 1): "γ, the learned scale of each pass's output (one scalar per pass), is a parameter too.",
            r * _pass_params(c, inner, biases=False): "The three 1×1 convolutions of each pass have biases "
            "(C' + C' + C of them).",
            r * _pass_params(c, inner, value=inner): "The value projection keeps all C channels (its output is "
            "added to the input); only the query and key are reduced to C' = C/4.",
            r * _pass_params(c, c): "The query and key have C' = C/4 = 24 channels, not C.",
        },
    )


# Exercise 2: the non-zero entries of one pass's dense (N × N) attention matrix for a 3-D cross
# (each voxel's three axis-aligned lines, itself once), on a T × H × W = 6 × 20 × 30 volume, batch 1:
# N (T + H + W - 2) = 3,600 × 54.
# Typical mistakes:
#   - the centre counted in every line: N (T + H + W)
#   - the centre counted twice (masked in one line only, as if the 2-D rule were "mask one line"): N (T + H + W - 1)
#   - the centre left out: N (T + H + W - 3)
#   - one query's path only: T + H + W - 2
#   - full attention: N²
#   - the 2-D cross in each slice (no line along T): N (H + W - 1)
def check_cross3d_entries(answer: Any) -> Feedback:
    """Exercise 2: non-zero weights of one 3-D criss-cross pass on a 6 × 20 × 30 volume (batch 1)."""
    t, h, w = 6, 20, 30
    n = t * h * w
    return check_number(
        answer,
        n * (t + h + w - 2),
        what="Non-zero attention weights of the 3-D cross at T = 6, H = 20, W = 30",
        hints={
            n * (t + h + w): "The voxel itself lies on all three lines but is a key once: mask it in two of them, "
            "T + H + W - 2 keys per query.",
            n * (t + h + w - 1): "The voxel itself is still counted twice: on three lines it must be masked in two "
            "of them (in 2-D, in one of two), leaving T + H + W - 2 keys per query.",
            n * (t + h + w - 3): "The voxel itself is one of its keys (once): T + H + W - 2 keys per query.",
            t + h + w - 2: "That is one query's path; every one of the N = T·H·W voxels is a query.",
            n * n: "That is full attention (N² weights); the 3-D cross keeps only each voxel's three lines.",
            n * (h + w - 1): "That is the 2-D cross within each slice; the 3-D cross adds the line along T.",
        },
    )


_LINES = {"t": "bcthw,bcshw->bthws", "h": "bcthw,bctgw->bthwg", "w": "bcthw,bcthv->bthwv"}
_AGG = {"t": "bthws,bcshw->bcthw", "h": "bthwg,bctgw->bcthw", "w": "bthwv,bcthv->bcthw"}


def _cross3d(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, how: str = "right") -> torch.Tensor:
    """Σ_i A_{i,u} Φ_{i,u} of one pass of a 3-D criss-cross: the T, H and W lines through u, u once."""
    _, c, t, h, w = q.shape
    lines = ["h", "w"] if how == "no t" else ["t", "h", "w"]
    energy = {a: torch.einsum(_LINES[a], q, k) for a in lines}
    if how == "scaled":
        energy = {a: e / c**0.5 for a, e in energy.items()}
    masked = {"right": ["t", "h"], "scaled": ["t", "h"], "three softmaxes": ["t", "h"], "no t": ["h"],
              "thrice": [], "twice": ["t"], "none": ["t", "h", "w"]}[how]
    size = {"t": t, "h": h, "w": w}
    for a in masked:                                     # u itself: key index = query index on that line
        eye = torch.eye(size[a], dtype=torch.bool)
        shape = {"t": (t, 1, 1, t), "h": (1, h, 1, h), "w": (1, 1, w, w)}[a]
        energy[a] = energy[a].masked_fill(eye.view(shape), float("-inf"))
    if how == "three softmaxes":
        weights = {a: e.softmax(-1) for a, e in energy.items()}
    else:
        joint = torch.cat([energy[a] for a in lines], -1).softmax(-1)
        weights = dict(zip(lines, joint.split([size[a] for a in lines], -1)))
    return sum(torch.einsum(_AGG[a], weights[a], v) for a in lines)


def _full3d(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    a = torch.einsum("bcn,bcm->bnm", q.flatten(2), k.flatten(2)).softmax(-1)
    return torch.einsum("bnm,bcm->bcn", a, v.flatten(2)).view_as(v)


# Exercise 3: criss_cross_3d(q, k, v): Σ_i A_{i,u} Φ_{i,u} of one pass of a 3-D criss-cross (no γ,
# no residual); q, k are (batch, C', T, H, W), v is (batch, C, T, H, W).
# Typical mistakes:
#   - the centre counted three times (no -inf anywhere)
#   - the centre counted twice (-inf on one line only, as in 2-D)
#   - the centre left out (-inf on all three lines)
#   - the line along T missing: the 2-D criss-cross in each slice
#   - three softmaxes, one per line, instead of one over the whole path
#   - the logits scaled by 1/sqrt(C') (the Transformer's habit; CCNet does not scale)
#   - full attention over all N voxels (no cross)
#   - q and k swapped in the affinity
#   - the attention weights returned instead of the aggregated values (a shape message)
def check_criss_cross_3d(fn: Callable[..., Any]) -> Feedback:
    """Exercise 3: ``fn(q, k, v)`` returns the 3-D criss-cross aggregation of one pass, (batch, C, T, H, W)."""
    what = "Your criss_cross_3d"
    g = torch.Generator().manual_seed(11)
    # every axis a different size: batch, C', C, T, H, W
    for b, c_qk, c, t, h, w in [(2, 3, 5, 4, 6, 7), (1, 2, 3, 5, 4, 6)]:
        q = torch.randn(b, c_qk, t, h, w, generator=g, dtype=torch.float64)
        k = torch.randn(b, c_qk, t, h, w, generator=g, dtype=torch.float64)
        v = torch.randn(b, c, t, h, w, generator=g, dtype=torch.float64)
        got, fb = run_answer(fn, q, k, v, what=what)
        if fb is not None:
            return fb
        expected = _cross3d(q, k, v)
        if isinstance(got, torch.Tensor) and got.shape == expected.shape:
            known = {
                "the voxel itself is counted three times, once on each line; put -inf on the diagonal (key "
                "index = query index) of two of the three lines": _cross3d(q, k, v, "thrice"),
                "the voxel itself is still counted twice: in 2-D one -inf (on the column) suffices, on three "
                "lines it takes two": _cross3d(q, k, v, "twice"),
                "the voxel itself is left out: with -inf on all three lines it is no key at all; leave it on "
                "one line": _cross3d(q, k, v, "none"),
                "that is the 2-D criss-cross within each slice; the 3-D cross also takes the line along T "
                "(the keys (s, h, w) for every s)": _cross3d(q, k, v, "no t"),
                "you took one softmax per line; CCNet takes one softmax over the whole path, so that a "
                "query's T + H + W - 2 weights sum to 1": _cross3d(q, k, v, "three softmaxes"),
                "the logits are divided by sqrt(C'); CCNet's affinity d = Q_u Ω_{i,u}ᵀ is not scaled":
                    _cross3d(q, k, v, "scaled"),
                "that is full attention over all T·H·W voxels; keep only each voxel's three lines": _full3d(q, k, v),
                "q and k are swapped in the affinity: the weights of query u come from Q_u and the keys on "
                "u's path, d_{i,u} = Q_u Ω_{i,u}ᵀ": _cross3d(k, q, v),
            }
            fb = match_mistake(got, known, what=what, expected=expected, end=".")
            if fb is not None:
                return fb
        bad = compare_tensors(got, expected, what=what)
        if bad is not None:
            return bad
    return passed(f"{what} computes one 3-D criss-cross aggregation: one softmax over each voxel's T + H + W - 2 keys.")
