"""Checkers for the exercises of the Selective Kernel chapter (``chapters/channel/sk.md``)."""

from __future__ import annotations

from typing import Any, Callable

import torch

from . import Feedback, check_number, compare_tensors, failed, passed, run_answer

__all__ = ["check_parameters", "check_select", "check_dilation_saving"]


def _sk_params(C: int, M: int = 2, G: int = 32, r: int = 16, L: int = 32) -> int:
    d = max(C // r, L)
    return M * (9 * C * C // G + 2 * C) + C * d + 2 * d + M * C * d


def check_parameters(answer: Any) -> Feedback:
    """Exercise 1: parameters of ``SelectiveKernel(256)`` with the defaults M=2, G=32, r=16, L=32."""
    C, M, G, d = 256, 2, 32, 32
    expected = _sk_params(C)
    hints = {
        expected - M * 2 * C - 2 * d: "You left out the batch norms: each has a scale and a shift per channel "
        "(2C for each branch's BN, 2d for the BN on z).",
        expected - M * 2 * C: "You left out the branches' batch norms (2C parameters each).",
        expected - 2 * d: "You left out the batch norm on z (2d parameters).",
        M * (9 * C * C + 2 * C) + C * d + 2 * d + M * C * d: "You counted full convolutions: with G groups "
        "a 3×3 convolution from C to C channels has 9·C·(C/G) weights, not 9·C².",
        M * (9 * C * C // G + 2 * C) + C * 16 + 2 * 16 + M * C * 16: "d is max(C/r, L) = max(16, 32) = 32, "
        "not C/r = 16.",
        expected - (M - 1) * C * d: "There is one A_m ∈ R^{C×d} per branch: M·C·d, not C·d.",
        expected + C + M * C + d: "SK's convolutions and fully connected layers have no biases (the official "
        "model sets bias_term: false; a BN follows every one of them).",
        expected - M * (9 * C * C // G + 2 * C): "You counted only what the attention adds; the branches "
        "(convolution + BN) belong to the module too.",
    }
    return check_number(answer, expected, what="Parameters of SelectiveKernel(256)", hints=hints)


def _reference_select(u: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    B, M, C = u.shape[:3]
    a = logits.view(B, M, C).softmax(dim=1)
    return (a[..., None, None] * u).sum(1)


def check_select(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> Feedback:
    """Exercise 2: ``fn(u, logits)`` computes eqs. (5)-(6) for any number of branches M.

    ``u`` has shape ``(B, M, C, H, W)``; ``logits`` has shape ``(B, M·C)``, laid out as ``(m c)``
    (the output of the stacked A). The answer returns V of shape ``(B, C, H, W)``.
    """
    what = "select"
    gen = torch.Generator().manual_seed(0)
    for M in (2, 3):
        B, C, H, W = 2, 4, 3, 5
        u = torch.randn(B, M, C, H, W, generator=gen, dtype=torch.float64)
        logits = 2 * torch.randn(B, M * C, generator=gen, dtype=torch.float64)
        out, fb = run_answer(fn, u.clone(), logits.clone(), what=what)
        if fb is not None:
            if M == 3 and fb.attempted:
                return failed(f"{fb.message} (with M = 2 it was right: take M from u.shape[1] instead of fixing it at 2)")
            return fb
        expected = _reference_select(u, logits)
        wrong = compare_tensors(out, expected, what=f"{what} (M = {M})")
        if wrong is None:
            continue
        if not isinstance(out, torch.Tensor) or out.shape != expected.shape:
            return wrong
        out = out.to(torch.float64)
        a_mc = logits.view(B, M, C)
        variants = {
            "the softmax runs over the channels; it must run over the branches (dim of size M), so that the "
            "weights of each channel sum to 1": (a_mc.softmax(2)[..., None, None] * u).sum(1),
            "the logits are read as (c m); the stacked A gives them as (m c), i.e. "
            "rearrange(logits, 'b (m c) -> b m c', m=M)": (
                logits.view(B, C, M).transpose(1, 2).softmax(1)[..., None, None] * u
            ).sum(1),
            "you used a sigmoid per branch (as SE would); SK normalises across branches with a softmax": (
                a_mc.sigmoid()[..., None, None] * u
            ).sum(1),
            "the weights are exp(A_m z) without dividing by their sum over the branches": (
                a_mc.exp()[..., None, None] * u
            ).sum(1),
            "you averaged the branches instead of weighting them by a": u.mean(1),
            "you summed the branches instead of weighting them by a": u.sum(1),
        }
        for why, v in variants.items():
            if torch.allclose(out, v, atol=1e-6):
                return failed(f"{what} (M = {M}): {why}.")
        return wrong
    return passed(f"{what}: right, for M = 2 and M = 3: a = softmax over m of A_m z, and V = Σ_m a_m ⊙ U_m.")


def check_dilation_saving(answer: Any) -> Feedback:
    """Exercise 3: weights saved in one SK unit (C=256, G=32) by a dilated 3×3 instead of a true 5×5."""
    C, G = 256, 32
    expected = (25 - 9) * C * C // G
    hints = {
        (25 - 9) * C * C: "Remember the groups: each output channel sees only C/G input channels.",
        25 * C * C // G: "That is what a 5×5 grouped convolution costs; the question asks how much the dilated "
        "3×3 saves compared with it.",
        9 * C * C // G: "That is what the dilated 3×3 costs; the question asks how much it saves compared with a 5×5.",
        (25 - 9) * C // G: "Count all C output channels, each with (C/G)·k² weights.",
    }
    return check_number(answer, expected, what="Weights saved by the dilated 3×3", hints=hints)
