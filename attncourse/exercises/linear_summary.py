"""Checkers for the exercises of "Part IV side by side".

Above each checker, a comment lists the mistakes a learner typically makes on that exercise;
each one gets its own message (``tests/test_checkers_linear_summary.py`` tries every one of them).
"""

from __future__ import annotations

import math
from typing import Any, Callable

import torch

from . import Feedback, check_number, failed, is_unanswered, not_attempted, passed, run_answer

__all__ = ["check_width", "check_side", "check_column_entropy"]

def _smallest_width(external, other) -> int:
    """The smallest even C (two heads) at which ``external(C) < other(C)``."""
    return next(c for c in range(2, 10_000, 2) if external(c) < other(c))


def _external(c: int, *, memory: int = 64, extra: int = 3) -> int:
    return 2 * c * c + 2 * memory * c + extra * c


def _flatten(c: int, *, dwc_channels: int | None = None) -> int:
    d = c // 2 if dwc_channels is None else dwc_channels
    return 4 * c * c + 4 * c + 25 * d + d


# Exercise 1, the smallest width C (even: FLatten's two heads) at which External Attention (S = 64) adds
# fewer parameters than FLatten (two heads, 5 × 5 DWC shared by the heads): 2C² + 131C < 4C² + 17C,
# C > 57, so 58. The chapter prints the counts at C = 32, 64, 256, 512 only (at 32 External adds more,
# at 64 fewer): the answer lies between and needs the formulas (or a search).
# Typical mistakes:
#   - 57, the break-even itself (there both are equal; and 57 channels do not split into two heads)
#   - 56: the last even width at which External still adds more (or External's 3C left out)
#   - 64, the chapter's printed width (or MHSA in place of FLatten: 2C² + 131C < 4C² + 4C)
#   - FLatten's DWC with C channels instead of d = C / 2 shared by the heads: 52
#   - External with one memory (the official code's tie): 26
def check_width(answer: Any) -> Feedback:
    """Exercise 1: the smallest even C with External's parameters below FLatten's."""
    right = _smallest_width(_external, _flatten)
    return check_number(
        answer,
        right,
        what="The smallest width",
        hints={
            57: "At C = 57 the two counts are equal (2C² = 114C), and FLatten's two heads need an even C: the first "
            "even C above the break-even is the answer.",
            right - 2: "At C = 56 External still adds more than FLatten (13,608 against 13,496); take the first width "
            "at which it adds fewer. (Or External's 3C, b_1 and BN's γ, β, was left out.)",
            _smallest_width(_external, lambda c: 4 * c * c + 4 * c): "That is where External passes MHSA (C = 64, the "
            "chapter's table shows it); FLatten adds its depthwise convolution, 25d + d, to MHSA's count.",
            _smallest_width(_external, lambda c: _flatten(c, dwc_channels=c)): "That counts FLatten's DWC with C "
            "channels; it has d = C / 2, shared by the two heads: 26 · C / 2 parameters.",
            _smallest_width(lambda c: _external(c, memory=32), _flatten): "That counts External with one memory "
            "(SC); the package's module has two, M_k and M_v: 2SC.",
        },
    )


# Exercise 2, the smallest side s (N = s^2) with MHSA's count >= 10 x Linear's, C = 64, two heads.
C_SIDE, HEADS_SIDE, FACTOR = 64, 2, 10


def _side(c: int, d: int, factor: float, *, projections: bool = True) -> int:
    p = 8 * c if projections else 0
    return next(s for s in range(1, 10_000) if p + 4 * s * s >= factor * (p + 4 * d + 2))


# Typical mistakes:
#   - the projections left out (attention terms only): side 19
#   - one head (d = C): side 43
#   - the crossover (factor 1) instead of 10: side 6
#   - N instead of the side (the number of positions)
#   - the side rounded down (38)
def check_side(answer: Any) -> Feedback:
    """Exercise 2: the smallest square side at which MHSA's counted FLOPs reach 10× Linear's."""
    what = "Smallest side"
    if is_unanswered(answer):
        return not_attempted(what)
    try:
        value = float(answer)
    except (TypeError, ValueError):
        return failed(f"{what}: expected a whole number, got {answer!r}")
    c, d = C_SIDE, C_SIDE // HEADS_SIDE
    right = _side(c, d, FACTOR)
    if value == right:
        return passed(f"{what}: {right} × {right} = {right * right:,} positions. Without the projections, which both "
                      f"modules pay, the answer would be {_side(c, d, FACTOR, projections=False)}: on small maps the "
                      "projections dominate both.")
    hints = {
        _side(c, d, FACTOR, projections=False): "that leaves out the projections, 8NC² in both counts; they are the "
                                                "same in both, but they make the ratio smaller",
        _side(c, c, FACTOR): "with two heads d = C / 2 = 32, not C",
        _side(c, d, 1): "that is where MHSA's count passes Linear's (a factor 1); the exercise asks for 10×",
        right - 1: "rounded down: at that side the ratio is still below 10; take the next whole side",
        right * right: "that is N, the number of positions; the exercise asks for the side",
    }
    for wrong, hint in hints.items():
        if value == wrong:
            return failed(f"{what}: {answer} is not right: {hint}.")
    return failed(f"{what}: {answer} is not right. Divide both counts by N·C and solve 8C + 4N ≥ 10 (8C + 4d + 2).")


# Exercise 3, column_entropy(a): External Attention's weights a (B, N, S), rows summing to 1 over the S
# units; the mean, over images and units, of the entropy (nats) of each unit's column renormalised over
# the N positions (how spread the positions a unit reads from are), with 0 log 0 = 0. The chapter's
# row_entropy measures the rows (a query's weights over keys, or a position's over units).
def _cases() -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    out = []
    for b, n, s, scale in [(2, 7, 5, 2.0), (3, 6, 4, 4.0)]:
        logits = torch.randn(b, n, s, generator=g, dtype=torch.float64) * scale
        a = torch.softmax(logits, dim=1)
        a = a.masked_fill(a < 0.05, 0.0)  # exact zeros (a softmax that underflows)
        a[:, 0, :] += 1e-3  # no unit's column is all zero
        a[:, :, 0] += 1e-3  # no position's row is all zero
        out.append(a / a.sum(-1, keepdim=True))  # rows sum to 1 over the units
    return out


def _col_entropy(a: torch.Tensor, *, renormalise: bool = True, dim: int = 1, reduce: str = "mean") -> torch.Tensor:
    c = a / a.sum(dim, keepdim=True) if renormalise else a
    h = -torch.special.xlogy(c, c).sum(dim)
    return h.mean() if reduce == "mean" else h.sum()


# Typical mistakes:
#   - the entropy of the rows (over the units; the chapter's row_entropy as it is)
#   - the columns not renormalised (a column of A does not sum to 1 over the positions)
#   - w * log(w) gives NaN at w = 0 (0 · -inf)
#   - log2 (bits) instead of the natural logarithm (nats); the minus sign forgotten
#   - the sum over images and units instead of the mean
#   - one number per unit, or per image and unit, instead of their mean
def check_column_entropy(fn: Callable[[torch.Tensor], Any]) -> Feedback:
    """Exercise 3: ``column_entropy(a)``, the mean entropy of the units' renormalised columns."""
    what = "column_entropy(a)"
    for a in _cases():
        got, fb = run_answer(fn, a.clone(), what=what)
        if fb is not None:
            return fb
        if is_unanswered(got):  # a body of `...` returns None
            return not_attempted(what)
        want = _col_entropy(a).item()
        try:
            got_t = torch.as_tensor(got, dtype=torch.float64)
        except (TypeError, ValueError, RuntimeError):
            return failed(f"{what}: expected a number (or a 0-d tensor), got {type(got).__name__}")
        if got_t.numel() != 1:
            return failed(f"{what}: expected one number, the mean over images and units, got a tensor of shape "
                          f"{tuple(got_t.shape)}")
        value = got_t.reshape(()).item()
        if math.isnan(value):
            return failed(f"{what}: NaN on columns that hold zeros: w · log(w) is 0 · (−inf) there. Use "
                          "torch.special.xlogy(w, w), which is 0 at w = 0.")
        if math.isclose(value, want, rel_tol=1e-6, abs_tol=1e-9):
            continue
        hints = [
            (_col_entropy(a, dim=2).item(), "that is the entropy of the rows, a position's weights over the units; "
                                            "a unit's column runs over the positions (axis 1)"),
            (_col_entropy(a, renormalise=False).item(), "the columns were not renormalised: a column of A does not "
                                                       "sum to 1 over the positions; divide it by its sum first"),
            (want / math.log(2), "that is in bits (log2); use the natural logarithm (nats)"),
            (-want, "the sign: entropy is −Σ w ln w, which is ≥ 0"),
            (_col_entropy(a, reduce="sum").item(), "that is the sum over images and units; return their mean"),
        ]
        for wrong, hint in hints:
            if math.isclose(value, wrong, rel_tol=1e-6, abs_tol=1e-9):
                return failed(f"{what}: {value:.4g} instead of {want:.4g}: {hint}.")
        return failed(f"{what}: {value:.4g} instead of {want:.4g} on weights of shape {tuple(a.shape)}.")
    return passed(f"{what}: right on columns with exact zeros, renormalised over the positions, in nats.")
