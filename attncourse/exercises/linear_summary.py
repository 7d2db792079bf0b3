"""Checkers for the exercises of "Part IV side by side".

Above each checker, a comment lists the mistakes a learner typically makes on that exercise;
each one gets its own message (``tests/test_checkers_linear_summary.py`` tries every one of them).
"""

from __future__ import annotations

import math
from typing import Any, Callable

import torch

from . import Feedback, failed, is_unanswered, not_attempted, passed, run_answer

__all__ = ["check_wider", "check_side", "check_entropy"]

_VARIANTS = ("MHSA", "Linear", "External", "FLatten")


def _params(c: int, *, heads: int = 2, memory: int = 64, dwc_channels: int | None = None) -> dict[str, int]:
    d = c // heads if dwc_channels is None else dwc_channels
    return {
        "MHSA": 4 * c * c + 4 * c,
        "Linear": 4 * c * c + 4 * c,
        "External": 2 * c * c + 2 * memory * c + 3 * c,
        "FLatten": 4 * c * c + 4 * c + 25 * d + d,
    }


# Exercise 1, what each module adds at a middle block of 48 channels, as a dict.
# Typical mistakes:
#   - not a dict, or other names than the four variants
#   - the protocol's own width, 32, or C = 64 (the chapter's first table)
#   - FLatten's depthwise convolution with C channels (one per channel, or one per head not shared)
#     instead of d = C / h shared by the heads
#   - External without its two memories (2SC), or without the BN and biases (3C)
#   - Linear given parameters of its own beyond MHSA's (it adds none)
def check_wider(answer: Any) -> Feedback:
    """Exercise 1: parameters of the four modules at C = 48 with the protocol's settings."""
    what = "Parameters at a 48-channel block"
    if is_unanswered(answer):
        return not_attempted(what)
    if not isinstance(answer, dict) or set(answer) != set(_VARIANTS):
        got = sorted(answer) if isinstance(answer, dict) else type(answer).__name__
        return failed(f"{what}: expected a dict with the keys {list(_VARIANTS)}, got {got}")
    try:
        got = {k: int(v) for k, v in answer.items()}
    except (TypeError, ValueError):
        return failed(f"{what}: expected whole numbers, got {answer!r}")
    right = _params(48)
    if got == right:
        return passed(f"{what}: right: {right}. Linear attention adds nothing to MHSA's projections; FLatten adds "
                      f"a 5 × 5 depthwise convolution of d = 24 channels; External trades W^Q, W^K for 2SC memory.")
    for c, hint in ((32, "that is the protocol's width, 32; the exercise widens the block to 48"),
                    (64, "that is C = 64, the chapter's table; the exercise asks for C = 48")):
        if got == _params(c):
            return failed(f"{what}: {hint}.")
    wrong = [k for k in _VARIANTS if got[k] != right[k]]
    if wrong == ["FLatten"] and got["FLatten"] == _params(48, dwc_channels=48)["FLatten"]:
        return failed(f"{what}: FLatten's depthwise convolution has d = C / h = 24 channels, shared by the two heads "
                      "(as the official code does), not one per channel: 25 · 24 weights and 24 biases.")
    if wrong == ["External"] and got["External"] == 2 * 48 * 48 + 3 * 48:
        return failed(f"{what}: External's two memories M_k and M_v are S × C each, 2 · 64 · 48 parameters.")
    if wrong == ["External"] and got["External"] == 2 * 48 * 48 + 2 * 64 * 48:
        return failed(f"{what}: External also has the first 1 × 1 convolution's bias (C) and the BN's weight and "
                      "bias (2C): 3C.")
    if wrong == ["Linear"]:
        return failed(f"{what}: Linear has exactly MHSA's projections: φ = elu + 1 has no parameters.")
    return failed(f"{what}: {', '.join(wrong)} not right; use the chapter's formulas at C = 48 (d = 24).")


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


# Exercise 3, entropy(weights): the mean entropy (nats) of the rows, with 0 log 0 = 0.
def _cases() -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    soft = torch.softmax(torch.randn(2, 3, 7, 7, generator=g, dtype=torch.float64) * 2, dim=-1)
    relu = torch.relu(torch.randn(5, 9, generator=g, dtype=torch.float64)) + torch.tensor([1.0] + [0.0] * 8, dtype=torch.float64)
    relu = relu / relu.sum(-1, keepdim=True)  # rows with exact zeros
    onehot = torch.eye(4, 6, dtype=torch.float64)  # entropy 0
    return [soft, relu, onehot]


def _entropy(w: torch.Tensor) -> torch.Tensor:
    return -torch.special.xlogy(w, w).sum(-1).mean()


# Typical mistakes:
#   - w * log(w) gives NaN at w = 0 (0 · -inf)
#   - log2 (bits) instead of the natural logarithm (nats)
#   - the minus sign forgotten (a negative entropy)
#   - the sum over every row instead of the mean
#   - the entropy of the columns (the last two axes swapped)
def check_entropy(fn: Callable[[torch.Tensor], Any]) -> Feedback:
    """Exercise 3: ``entropy(weights)``, the mean row entropy in nats with 0 log 0 = 0."""
    what = "entropy(weights)"
    for w in _cases():
        got, fb = run_answer(fn, w.clone(), what=what)
        if fb is not None:
            return fb
        if is_unanswered(got):  # a body of `...` returns None
            return not_attempted(what)
        want = _entropy(w)
        try:
            got_t = torch.as_tensor(got, dtype=torch.float64)
        except (TypeError, ValueError, RuntimeError):
            return failed(f"{what}: expected a number (or a 0-d tensor), got {type(got).__name__}")
        if got_t.numel() != 1:
            return failed(f"{what}: expected one number, the mean over rows, got a tensor of shape {tuple(got_t.shape)}")
        value = got_t.reshape(()).item()
        if math.isnan(value):
            return failed(f"{what}: NaN on rows that hold zeros: w · log(w) is 0 · (−inf) there. Use "
                          "torch.special.xlogy(w, w), which is 0 at w = 0.")
        if math.isclose(value, want.item(), rel_tol=1e-6, abs_tol=1e-9):
            continue
        rows = w.numel() // w.shape[-1]
        hints = [
            (want.item() / math.log(2), "that is in bits (log2); use the natural logarithm (nats)"),
            (-want.item(), "the sign: entropy is −Σ w ln w, which is ≥ 0"),
            (want.item() * rows, "that is the sum over all rows; return their mean"),
            ((-torch.special.xlogy(w, w).sum(-2).mean()).item(),
             "that sums over the columns (axis −2); a row is one query's weights, along the last axis"),
        ]
        for wrong, hint in hints:
            if math.isclose(value, wrong, rel_tol=1e-6, abs_tol=1e-9):
                return failed(f"{what}: {value:.4g} instead of {want.item():.4g}: {hint}.")
        return failed(f"{what}: {value:.4g} instead of {want.item():.4g} on weights of shape {tuple(w.shape)}.")
    return passed(f"{what}: right on softmax rows, ReLU rows with exact zeros, and one-hot rows (0 nats).")
