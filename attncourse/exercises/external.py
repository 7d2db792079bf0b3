"""Checkers for the exercises of the external chapter (Part IV): External Attention.

Above each checker, a comment lists the mistakes a learner typically makes on that exercise;
each one gets its own message (``tests/test_checkers_external.py`` tries every one of them).
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from . import Feedback, check_number, judge_tensor, passed, run_answer

__all__ = ["check_block_parameters", "check_double_normalise", "check_external_core"]

# Exercise 1: the parameters of ExternalAttention(384, memory_units=96), the official block.
PARAM_C, PARAM_S = 384, 96


# Typical mistakes:
#   - BN forgotten (2C² + 2SC + C) / BN's running mean and variance counted (buffers, not parameters)
#   - the first conv's bias forgotten, or BN counted with γ only: both give 2C² + 2SC + 2C
#   - M_v counted as the same tensor as M_k (the official code's view): 2C² + SC + 3C
#   - one of the two 1×1 convolutions forgotten: C² + 2SC + 3C
#   - only the memories (2SC), or everything but the biases and BN (2C² + 2SC)
#   - the default S = 64 instead of the exercise's 96
def check_block_parameters(answer: Any) -> Feedback:
    """Exercise 1: learnable parameters of ``ExternalAttention(384, memory_units=96)``."""
    c, s = PARAM_C, PARAM_S
    right = 2 * c * c + 2 * s * c + 3 * c
    return check_number(
        answer,
        right,
        what="Parameters of ExternalAttention(384, memory_units=96)",
        hints={
            2 * c * c + 2 * s * c + c: "BatchNorm is missing: it learns a scale γ and a shift β per channel (2C).",
            2 * c * c + 2 * s * c + 5 * c: "BatchNorm's running mean and variance are buffers, not learned "
            "parameters: count only γ and β.",
            2 * c * c + 2 * s * c + 2 * c: "One C-sized vector is missing: the first 1×1 convolution has a bias "
            "(C), and BatchNorm learns both γ and β (2C).",
            2 * c * c + s * c + 3 * c: "M_v was counted as M_k: in the package (and in the official training, "
            "after .cuda()) M_k and M_v are two S × C tensors.",
            c * c + 2 * s * c + 3 * c: "The block has two 1×1 convolutions, W_1 before the memories and W_2 "
            "after: 2C².",
            2 * s * c: "That is the two memories only; the block also has its two 1×1 convolutions, the bias of "
            "the first and BatchNorm.",
            2 * c * c + 2 * s * c: "The biases and BatchNorm are missing: b_1 (C) and BN's γ, β (2C).",
            2 * c * c + 2 * 64 * c + 3 * c: "That is S = 64, the default; the exercise sets memory_units=96.",
        },
    )


def _double(logits: torch.Tensor, how: str = "right", eps: float = 1e-9) -> torch.Tensor:
    """The paper's double normalisation of (B, N, S) logits, and its typical wrong versions."""
    if how == "right":
        a = torch.softmax(logits, dim=-2)
        return a / (a.sum(-1, keepdim=True) + eps)
    if how == "memory":
        return torch.softmax(logits, dim=-1)
    if how == "positions":
        return torch.softmax(logits, dim=-2)
    if how == "swapped":
        a = torch.softmax(logits, dim=-1)
        return a / (a.sum(-2, keepdim=True) + eps)
    if how == "l1 first":
        a = logits / (logits.sum(-1, keepdim=True) + eps)
        return torch.softmax(a, dim=-2)
    if how == "joint":
        b, n, s = logits.shape
        return torch.softmax(logits.reshape(b, n * s), dim=-1).reshape(b, n, s)
    raise ValueError(how)


# Exercise 2: double_normalise(logits): logits (B, N, S) = F M_kᵀ -> A (B, N, S).
# Typical mistakes:
#   - one softmax over the memory units (dim -1), as in self-attention's rows
#   - the softmax over the positions alone, without the ℓ1 step
#   - the axes swapped: softmax over the units, then ℓ1 over the positions
#   - the two steps in the wrong order (ℓ1 of the logits, then the softmax)
#   - one softmax over all N·S entries at once
def check_double_normalise(fn: Callable[..., Any]) -> Feedback:
    """Exercise 2: ``fn(logits)`` is the double normalisation of ``(B, N, S)`` logits."""
    what = "Your double_normalise"
    g = torch.Generator().manual_seed(5)
    for shape in [(2, 12, 5), (1, 7, 3)]:
        logits = torch.randn(shape, generator=g, dtype=torch.float64) * 2
        expected = _double(logits)
        got, fb = run_answer(fn, logits.clone(), what=what)
        if fb is not None:
            return fb
        known = {
            "that is one softmax over the memory units (dim -1): each position's row sums to 1, but the columns "
            "never compete over the positions; first a softmax over the N positions (dim -2), then ℓ1 over the "
            "units": _double(logits, "memory"),
            "that is the softmax over the positions alone: the ℓ1 step over the S units (dim -1) is missing, so "
            "a row does not sum to 1": _double(logits, "positions"),
            "the axes are swapped: the softmax runs over the positions (dim -2) and the ℓ1 step over the memory "
            "units (dim -1)": _double(logits, "swapped"),
            "the steps are in the wrong order: first the softmax over the positions (on the logits), then the "
            "ℓ1 normalisation over the units": _double(logits, "l1 first"),
            "that is one softmax over all N·S entries; the paper normalises the columns (softmax over N), then "
            "the rows (ℓ1 over S)": _double(logits, "joint"),
        }
        fb = judge_tensor(got, expected, known, what=what)
        if fb is not None:
            return fb
    return passed(f"{what} takes the softmax over the positions, then divides each row by its sum over the units.")


# Exercise 3: external_core(f, m_k, m_v): tokens f (B, N, C), memories (S, C) -> F_out = Norm(F M_kᵀ) M_v.
# Typical mistakes:
#   - M_k and M_v swapped (equal at initialisation, so only a trained or random pair shows it)
#   - M_k used for the values too / M_v used for the keys too
#   - one softmax over the memory units instead of the double normalisation
#   - the ℓ1 step missing
#   - the residual f added (the block adds its own residual, after W_2 and BN)
def check_external_core(fn: Callable[..., Any]) -> Feedback:
    """Exercise 3: ``fn(f, m_k, m_v)`` is External Attention's core ``Norm(F M_kᵀ) M_v``."""
    what = "Your external_core"
    g = torch.Generator().manual_seed(9)
    for b, n, c, s in [(2, 10, 6, 4), (1, 5, 3, 7)]:
        f = torch.randn(b, n, c, generator=g, dtype=torch.float64)
        m_k, m_v = (torch.randn(s, c, generator=g, dtype=torch.float64) for _ in range(2))
        expected = _double(f @ m_k.T) @ m_v
        got, fb = run_answer(fn, f.clone(), m_k.clone(), m_v.clone(), what=what)
        if fb is not None:
            return fb
        known = {
            "M_k and M_v are swapped: the logits are F M_kᵀ, the output A M_v": _double(f @ m_v.T) @ m_k,
            "M_k serves as the values too; the output is A M_v": _double(f @ m_k.T) @ m_k,
            "M_v serves as the keys too; the logits are F M_kᵀ": _double(f @ m_v.T) @ m_v,
            "that is one softmax over the memory units; the paper's Norm is a softmax over the N positions, "
            "then ℓ1 over the S units": _double(f @ m_k.T, "memory") @ m_v,
            "the ℓ1 step over the units is missing (the softmax over the positions alone)":
                _double(f @ m_k.T, "positions") @ m_v,
            "the residual F was added; the core returns A M_v (the block adds x after W_2 and BN)": expected + f,
        }
        fb = judge_tensor(got, expected, known, what=what)
        if fb is not None:
            return fb
    return passed(f"{what} computes A = Norm(F M_kᵀ) with the double normalisation, then A M_v.")
