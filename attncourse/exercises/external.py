"""Checkers for the exercises of the external chapter (Part IV): External Attention.

Above each checker, a comment lists the mistakes a learner typically makes on that exercise;
each one gets its own message (``tests/test_checkers_external.py`` tries every one of them).
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from einops import rearrange

from . import Feedback, check_number, judge_tensor, passed, run_answer

__all__ = ["check_tied_parameters", "check_double_normalise_official", "check_mhea_core"]

# Exercise 1: the learnable numbers of the official block at C = 384, S = 96 as the official code
# builds it before .cuda(): M_v a view of M_k (one tensor of S·C numbers), and without the inert bias
# b_1 of the first convolution. The chapter counts ExternalAttention (two memories, b_1 kept):
# 2C² + 2SC + 3C; here 2C² + SC + 2C.
PARAM_C, PARAM_S = 384, 96


# Typical mistakes:
#   - the package's count, 2C² + 2SC + 3C (count_parameters(ExternalAttention(384, memory_units=96)))
#   - both memories counted (the tie ignored): 2C² + 2SC + 2C
#   - one C too many: b_1 kept, or a bias given to W_2 (the number cannot tell which)
#   - BatchNorm forgotten (2C² + SC) / its running mean and variance counted (buffers): 2C² + SC + 4C
#   - one of the two 1×1 convolutions forgotten: C² + SC + 2C
#   - the default S = 64 instead of the exercise's 96
def check_tied_parameters(answer: Any) -> Feedback:
    """Exercise 1: distinct learnable numbers with M_v tied to M_k and b_1 dropped, C = 384, S = 96."""
    c, s = PARAM_C, PARAM_S
    right = 2 * c * c + s * c + 2 * c
    return check_number(
        answer,
        right,
        what="Learnable numbers of the tied block",
        hints={
            2 * c * c + 2 * s * c + 3 * c: "That is ExternalAttention(384, memory_units=96)'s count, with two free "
            "memories and b_1; here M_v is a view of M_k (one S × C tensor) and the inert b_1 is dropped.",
            2 * c * c + 2 * s * c + 2 * c: "That counts M_k and M_v apart; tied, they are one block of memory: S·C "
            "numbers, once.",
            2 * c * c + s * c + 3 * c: "One C too many: b_1 is dropped here (it changes no output), and W_2 has no "
            "bias.",
            2 * c * c + s * c: "BatchNorm is missing: it learns a scale γ and a shift β per channel (2C).",
            2 * c * c + s * c + 4 * c: "BatchNorm's running mean and variance are buffers, not learned: count only "
            "γ and β.",
            c * c + s * c + 2 * c: "The block has two 1×1 convolutions, W_1 before the memory and W_2 after: 2C².",
            2 * c * c + 64 * c + 2 * c: "That is S = 64, the default; the exercise sets S = 96.",
        },
    )


def _double(logits: torch.Tensor, how: str = "right", *, units: int = 1, positions: int = 2,
            eps: float = 1e-9) -> torch.Tensor:
    """The double normalisation with the memory units on axis ``units`` and the positions on axis
    ``positions``, and its typical wrong versions."""
    if how == "right":
        a = torch.softmax(logits, dim=positions)
        return a / (a.sum(units, keepdim=True) + eps)
    if how == "memory":
        return torch.softmax(logits, dim=units)
    if how == "positions":
        return torch.softmax(logits, dim=positions)
    if how == "swapped":
        a = torch.softmax(logits, dim=units)
        return a / (a.sum(positions, keepdim=True) + eps)
    if how == "l1 first":
        a = logits / (logits.sum(units, keepdim=True) + eps)
        return torch.softmax(a, dim=positions)
    if how == "joint":
        return torch.softmax(logits.flatten(-2), dim=-1).reshape(logits.shape)
    raise ValueError(how)


# Exercise 2: double_normalise_official(attn): the official code's layout, attn = (B, S, N), memory units
# on axis 1, positions last -> A in the same layout. The chapter's double_normalise works on (B, N, S).
# Test shapes: (2, 5, 12) and (3, 4, 7), no two axes of one size.
# Typical mistakes:
#   - the chapter's axes copied (softmax over dim 1, ℓ1 over dim 2): in this layout that is the softmax
#     over the units and the ℓ1 step over the positions, the axes swapped
#   - one softmax over the memory units (rows of self-attention)
#   - the softmax over the positions alone, without the ℓ1 step
#   - the two steps in the wrong order (ℓ1 of the logits, then the softmax)
#   - one softmax over all S·N entries
#   - the result in the chapter's (B, N, S) layout (transposed): caught by the shape
def check_double_normalise_official(fn: Callable[..., Any]) -> Feedback:
    """Exercise 2: ``fn(attn)`` is the double normalisation of ``(B, S, N)`` logits."""
    what = "Your double_normalise_official"
    g = torch.Generator().manual_seed(5)
    for shape in [(2, 5, 12), (3, 4, 7)]:
        logits = torch.randn(shape, generator=g, dtype=torch.float64) * 2
        expected = _double(logits)
        got, fb = run_answer(fn, logits.clone(), what=what)
        if fb is not None:
            return fb
        known = {
            "those are the chapter's axes (softmax over dim 1, ℓ1 over dim 2), which belong to the (B, N, S) "
            "layout; here the units are axis 1 and the positions axis 2: softmax over dim 2, then ℓ1 over dim 1":
                _double(logits, "swapped"),
            "that is one softmax over the memory units (dim 1): each position's weights sum to 1, but the units "
            "never compete over the positions; first a softmax over the N positions (dim 2), then ℓ1 over the "
            "units (dim 1)": _double(logits, "memory"),
            "that is the softmax over the positions alone: the ℓ1 step over the S units (dim 1) is missing, so a "
            "position's weights do not sum to 1": _double(logits, "positions"),
            "the steps are in the wrong order: first the softmax over the positions (on the logits), then the ℓ1 "
            "normalisation over the units": _double(logits, "l1 first"),
            "that is one softmax over all S·N entries; the paper normalises each unit over the positions "
            "(softmax), then each position over the units (ℓ1)": _double(logits, "joint"),
        }
        fb = judge_tensor(got, expected, known, what=what)
        if fb is not None:
            return fb
    return passed(f"{what} takes the softmax over the positions (dim 2), then divides by the sum over the units "
                  "(dim 1), in the official layout.")


def _mhea(f: torch.Tensor, m_k: torch.Tensor, m_v: torch.Tensor, heads: int, how: str = "right") -> torch.Tensor:
    """Multi-head External Attention's core: every head's e channels attend to the same memories."""
    order = "e h" if how == "split (e h)" else "h e"
    t = rearrange(f, f"b n ({order}) -> b h n e", h=heads)
    if how == "swapped":
        m_k, m_v = m_v, m_k
    logits = t @ m_k.T  # (b, h, n, s)
    if how == "joint positions":  # one column softmax over the positions of all heads together
        a = torch.softmax(rearrange(logits, "b h n s -> b (h n) s"), dim=1)
        a = rearrange(a, "b (h n) s -> b h n s", h=heads)
        a = a / a.sum(-1, keepdim=True)
    elif how == "memory":
        a = torch.softmax(logits, dim=-1)
    elif how == "no l1":
        a = torch.softmax(logits, dim=-2)
    else:
        a = torch.softmax(logits, dim=-2)
        a = a / a.sum(-1, keepdim=True)
    out = a @ m_v  # (b, h, n, e)
    merge = "e h" if how in ("split (e h)", "merge (e h)") else "h e"
    out = rearrange(out, f"b h n e -> b n ({merge})")
    return out + f if how == "residual" else out


# Exercise 3: mhea_core(f, m_k, m_v, heads): the multi-head form (MHEA): tokens f (B, N, C), C split into
# `heads` groups of e = C / heads in (h e) order, ONE pair of memories (S, e) shared by every head; each
# head computes Norm(F_h M_kᵀ) M_v with its own column softmax; heads concatenated back in (h e) order.
# Test shapes: B = 2, N = 15, C = 12, heads 3, e 4, S = 5; then B = 3, N = 10, C = 8, heads 2, e 4, S = 6.
# Typical mistakes:
#   - the heads split as (e h) (and merged the same way)
#   - split (h e) but merged (e h)
#   - one column softmax over the positions of all heads together
#   - one softmax over the memory units; the ℓ1 step missing
#   - M_k and M_v swapped
#   - the residual f added
#   - the heads not merged back, (B, h, N, e): caught by the shape
def check_mhea_core(fn: Callable[..., Any]) -> Feedback:
    """Exercise 3: ``fn(f, m_k, m_v, heads)`` is multi-head External Attention's core."""
    what = "Your mhea_core"
    g = torch.Generator().manual_seed(9)
    for b, n, c, heads, s in [(2, 15, 12, 3, 5), (3, 10, 8, 2, 6)]:
        e = c // heads
        f = torch.randn(b, n, c, generator=g, dtype=torch.float64)
        m_k, m_v = (torch.randn(s, e, generator=g, dtype=torch.float64) for _ in range(2))
        expected = _mhea(f, m_k, m_v, heads)
        got, fb = run_answer(fn, f.clone(), m_k.clone(), m_v.clone(), heads, what=what)
        if fb is not None:
            return fb
        known = {
            "the channels are split into heads as (e h), channel c going to head c % heads; the heads are "
            "groups (h e): head 0 owns channels 0 … e - 1": _mhea(f, m_k, m_v, heads, "split (e h)"),
            "the heads are split (h e) but concatenated back as (e h): merge them in the order you split them":
                _mhea(f, m_k, m_v, heads, "merge (e h)"),
            "that is one softmax over the positions of all heads together; each head has its own column "
            "softmax over its N positions": _mhea(f, m_k, m_v, heads, "joint positions"),
            "that is one softmax over the memory units; Norm is a softmax over the N positions, then ℓ1 over "
            "the S units, in every head": _mhea(f, m_k, m_v, heads, "memory"),
            "the ℓ1 step over the units is missing (the softmax over the positions alone)":
                _mhea(f, m_k, m_v, heads, "no l1"),
            "M_k and M_v are swapped: the logits are F_h M_kᵀ, the output A M_v": _mhea(f, m_k, m_v, heads, "swapped"),
            "the residual F was added; the core returns the heads' A M_v (the block adds its own residual)":
                _mhea(f, m_k, m_v, heads, "residual"),
        }
        fb = judge_tensor(got, expected, known, what=what)
        if fb is not None:
            return fb
    return passed(f"{what} splits the channels into heads, lets every head attend to the shared memories with its "
                  "own double normalisation, and concatenates the heads back.")
