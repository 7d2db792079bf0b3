"""Checkers for the exercises of "FAN: attention over channels inside a ViT block".

Above each checker, a comment lists the mistakes a learner typically makes on that exercise;
each one gets its own message (``tests/test_checkers_fan.py`` tries every one of them).
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from einops import rearrange

from . import Feedback, check_number, failed, is_unanswered, judge_tensor, not_attempted, passed, run_answer

__all__ = ["check_gates_cn", "check_value_reach", "check_peak_input"]


def _gates_cn(q: torch.Tensor, k: torch.Tensor, tau: torch.Tensor, how: str = "right") -> torch.Tensor:
    """FAN's gates from channels-first q, k ``(B, C, N)`` and τ ``(h,)``, as ``(B, C)``; ``how`` makes a known mistake."""
    h = tau.numel()
    qh, kh = (rearrange(z, "b (h d) n -> b h d n", h=h) for z in (q, k))
    axis = -2 if how == "softmax over channels" else -1  # -1: over the tokens
    qs = qh.softmax(axis)
    ks = kh if how == "k without softmax" else kh.softmax(axis)
    if how == "sum over channels":
        kbar = ks.sum(-2)
    elif how == "mean over all channels":
        kbar = rearrange(ks, "b h d n -> b (h d) n").mean(-2, keepdim=True).expand(-1, h, -1)
    else:
        kbar = ks.mean(-2)  # (B, h, N)
    logits = torch.einsum("bhdn,bhn->bhd", qs, kbar)
    t = tau.reshape(1, h, 1)
    if how == "tau inside":
        g = torch.sigmoid(logits * t)
    elif how == "no sigmoid":
        g = logits * t
    else:
        g = torch.sigmoid(logits) * t
    if how == "(d h)":
        return rearrange(g, "b h d -> b (d h)")
    return rearrange(g, "b h d -> b (h d)")


# Exercise 1: gates_cn(q, k, tau) -> (B, C): eq. (7)'s gates from q and k laid out channels-first,
# (B, C, N), with τ one value per head (h,), channel c of head i at c = i·d + j.
# Typical mistakes:
#   - the softmaxes over the channels (the axis of size C or d) instead of over the N tokens
#   - k used without its softmax (the mean of raw keys)
#   - k̄ as the sum over the head's channels instead of the mean
#   - k̄ averaged over all C channels, not within each head
#   - τ multiplied into the logits (a temperature in the usual sense) instead of the sigmoid's output
#   - no sigmoid
#   - the channels ordered (d h) instead of (h d)
#   - the result per head, (B, h, d), instead of (B, C)
def check_gates_cn(fn: Callable[..., Any]) -> Feedback:
    """Exercise 1: FAN's channel gates from channels-first queries and keys."""
    what = "gates_cn(q, k, tau)"
    b, h, d, n = 3, 2, 4, 5  # no two axes of the same size
    g = torch.Generator().manual_seed(0)
    q = 2 * torch.randn(b, h * d, n, generator=g, dtype=torch.float64)
    k = 2 * torch.randn(b, h * d, n, generator=g, dtype=torch.float64)
    tau = torch.tensor([1.5, 0.5], dtype=torch.float64)
    got, fb = run_answer(fn, q.clone(), k.clone(), tau.clone(), what=what)
    if fb is not None:
        return fb
    want = _gates_cn(q, k, tau)
    if isinstance(got, torch.Tensor) and tuple(got.shape) == (b, h, d):
        return failed(f"{what}: the gates are per head, {tuple(got.shape)}; return one per channel, (B, C) = "
                      f"{(b, h * d)}, with channel i·d + j for channel j of head i.")
    known = {
        "the softmaxes run over the channels; FAN's run over the N tokens (the last axis here), one distribution "
        "over the tokens per channel": _gates_cn(q, k, tau, "softmax over channels"),
        "k needs its softmax over the tokens too before the mean: k̄ is a mean of distributions": _gates_cn(
            q, k, tau, "k without softmax"),
        "k̄ is the mean over the head's d channels, not their sum (the official code's adaptive_avg_pool2d)": _gates_cn(
            q, k, tau, "sum over channels"),
        "k̄ is averaged within each head, over its d channels, not over all C": _gates_cn(
            q, k, tau, "mean over all channels"),
        "τ multiplies the sigmoid's output, τ·σ(·); it does not scale the logits inside the sigmoid": _gates_cn(
            q, k, tau, "tau inside"),
        "the sigmoid is missing: the gate is τ·σ(Q̄ᵀk̄)": _gates_cn(q, k, tau, "no sigmoid"),
        "the channels are ordered (d h); channel j of head i is channel i·d + j, (h d)": _gates_cn(q, k, tau, "(d h)"),
    }
    wrong = judge_tensor(got, want, known, what=what, atol=1e-10, rtol=1e-8)
    if wrong is not None:
        return wrong
    return passed(f"{what}: right; {b} × {h * d} gates, between {want.min().item():.3f} and {want.max().item():.3f}.")


# Exercise 2: how many input tokens can change V at the token of row 1, column 3 of a map of
# H = 5 rows and W = 4 columns (two 3 × 3 depthwise convolutions with zero padding; fc1, fc2 and
# LN act per token).
# Typical mistakes:
#   - 25: a 5 × 5 neighbourhood, ignoring the map's border
#   - 6: only one 3 × 3 convolution
#   - 20: the whole map (that is what the gates and the token attention see, not V)
#   - 1: only the token itself (fc1, fc2 are per token, but the DWConv mixes neighbours)
#   - 16: H and W swapped
def check_value_reach(answer: Any) -> Feedback:
    """Exercise 2: the tokens that can change one token's value V."""
    return check_number(answer, 12, what="reach", hints={
        25: "that is a full 5 × 5 neighbourhood; the token is next to the map's border, where the zero padding "
            "brings in no tokens.",
        6: "that is the reach of one 3 × 3 convolution; DWConv has two, one after the other.",
        20: "that is the whole map: the gates and the token attention see every token, but V goes through "
            "convolutions of limited reach.",
        1: "fc1, fc2 and LN act on each token alone, but the DWConv between them mixes each token with its neighbours.",
        16: "H and W are swapped: the map has 5 rows and 4 columns, and the token sits in row 1, column 3.",
    })


def _peak_gates(t: torch.Tensor) -> torch.Tensor:
    """The gates of one head with W_q = I, no bias, τ = 1, for tokens ``(N, C)``: ``(C,)``."""
    p = t.double().softmax(0)  # Q̄ = softmax over tokens of Q = T, and the same for K = T
    kbar = p.mean(1)  # (N,)
    return torch.sigmoid(p.t() @ kbar)


# Exercise 3: tokens t of shape (N, C) = (6, 4) for which every gate of one head (W_q = I, no bias,
# τ = 1) is at least 0.7 (the largest possible is σ(1) ≈ 0.731).
# Typical mistakes:
#   - the channels peak at different tokens (k̄ averages them and spreads its mass)
#   - a peak too low: softmax over the tokens leaves mass on the other tokens
#   - a large negative value at one token: softmax moves mass *away* from it
#   - the tensor laid out (C, N)
def check_peak_input(t: Any) -> Feedback:
    """Exercise 3: an input that drives the gates to their maximum."""
    what = "t"
    n, c = 6, 4
    if is_unanswered(t):
        return not_attempted(what)
    if not isinstance(t, torch.Tensor) or not t.is_floating_point():
        return failed(f"{what}: expected a floating-point torch.Tensor of shape (N, C) = {(n, c)}, got "
                      f"{type(t).__name__ if not isinstance(t, torch.Tensor) else t.dtype}.")
    if tuple(t.shape) == (c, n):
        return failed(f"{what}: the shape is (C, N) = {(c, n)}; tokens are rows, (N, C) = {(n, c)}.")
    if tuple(t.shape) != (n, c):
        return failed(f"{what}: expected shape (N, C) = {(n, c)}, got {tuple(t.shape)}.")
    if not torch.isfinite(t).all():
        return failed(f"{what}: holds NaN or infinite values.")
    gates = _peak_gates(t)
    shown = ", ".join(f"{v:.3f}" for v in gates.tolist())
    if (gates >= 0.7).all():
        return passed(f"{what}: right; the gates are {shown}, near the ceiling σ(1) = 0.731.")
    p = t.double().softmax(0)
    top = p.argmax(0)
    if len(set(top.tolist())) > 1:
        return failed(f"{what}: the gates are {shown}. The channels put their softmax mass on different tokens "
                      f"({top.tolist()}); k̄ is the mean over the head's channels, so its mass is split between "
                      "those tokens and each channel's Q̄ meets only part of it. Peak all channels at one token.")
    if (t.min(0).values < -5).any() and (p.max(0).values < 0.5).all():
        return failed(f"{what}: the gates are {shown}. A large negative value takes softmax mass away from its "
                      "token and spreads it over the others; the softmax concentrates on the largest value.")
    return failed(f"{what}: the gates are {shown}. The peak is not sharp enough: the softmax over the tokens still "
                  f"leaves mass on the others (largest share {p.max().item():.2f}); raise the peak token's values "
                  "well above the rest (a gap of several units).")
