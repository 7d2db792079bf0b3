"""Checkers for the exercises of the Selective Kernel chapter (``chapters/channel/sk.md``)."""

from __future__ import annotations

from typing import Any, Callable

import torch

from . import Feedback, check_number, compare_tensors, failed, passed, run_answer

__all__ = ["check_variant_parameters", "check_select_two", "check_dilation_saving", "check_parameters", "check_select"]


def _sk_params(C: int, M: int = 2, G: int = 32, r: int = 16, L: int = 32) -> int:
    d = max(C // r, L)
    return M * (9 * C * C // G + 2 * C) + C * d + 2 * d + M * C * d


# Exercise 1 (SelectiveKernel(192, branches=3, groups=16) with the layers of the public versions:
# no batch norm on z, W with a bias, the stacked A with a bias; r = 16, L = 32, so d = 32):
# typical mistakes: the module as it is (the chapter's sk_parameters); A's bias left out; W's bias
# left out; the batch norm on z kept; A's bias counted per channel (C) or per branch (M) instead
# of per branch and channel (M·C); W's bias counted as C; biases given to the branch convolutions
# too; the branches' batch norms dropped along with z's.
def check_variant_parameters(answer: Any) -> Feedback:
    """Exercise 1: SelectiveKernel(192, branches=3, groups=16) without the BN on z, with biases on W and A."""
    C, M, G, d = 192, 3, 16, 32
    module = _sk_params(C, M, G)
    right = module - 2 * d + d + M * C
    hints = {
        module: "That is SelectiveKernel as it is (the chapter's P_SK): the variant drops the batch norm on z "
        "(−2d), gives W a bias (+d) and the stacked A a bias (+M·C).",
        module - 2 * d + d: "The select layer's bias is missing: Linear(d, M·C) with a bias has M·C of them.",
        module - 2 * d + M * C: "W's bias is missing: Linear(C, d) with a bias has d of them.",
        module + d + M * C: "The variant has no batch norm on z: remove its 2d parameters.",
        module - 2 * d + d + C: "The select bias has one entry per branch and channel, (m, c): M·C = 576, not C.",
        module - 2 * d + d + M: "The select bias has one entry per branch and channel, (m, c): M·C = 576, not M.",
        module - 2 * d + C + M * C: "W maps C to d: its bias has d = 32 entries, not C.",
        right + M * C: "The branch convolutions still have no bias: each is followed by a batch norm, which would "
        "cancel it.",
        right - M * 2 * C: "Only the batch norm on z is dropped; each branch keeps its batch norm (2C).",
    }
    return check_number(answer, right, what="Parameters of the SK variant with biases on W and A, no BN on z",
                        hints=hints)


# The former exercise 1 (its answer was the chapter's sk_parameters(192, 3, 16)); kept for older
# copies. SelectiveKernel(192, branches=3, groups=16), r = 16, L = 32, typical mistakes:
# biases added to the two linear layers (d + M·C), biases added to the convolutions (M·C), both,
# the batch norms left out (all, the branches' or z's), full convolutions (G forgotten), d = C/r
# without the floor L, one A for all branches, only what the attention adds (no branches), the
# defaults M = 2 or G = 32 kept, real 5×5 and 7×7 kernels for the dilated branches.
def check_parameters(answer: Any) -> Feedback:
    """Exercise 1: parameters of ``SelectiveKernel(192, branches=3, groups=16)`` (r = 16, L = 32)."""
    C, M, G, d = 192, 3, 16, 32
    expected = _sk_params(C, M, G)
    conv = 9 * C * C // G
    hints = {
        expected + d + M * C: "The two linear layers (W: C → d, and the stacked A: d → M·C) have no biases: "
        "W is followed by a batch norm, whose mean subtraction would cancel a bias, and the official model "
        "sets bias_term: false for A too. Leave out their d + M·C biases.",
        expected + M * C: "The branch convolutions have no biases: each is followed by a batch norm, which "
        "would cancel them. Leave out M·C.",
        expected + M * C + d + M * C: "Neither the convolutions nor the linear layers have biases (a batch norm "
        "follows each convolution and W; the official model has none on A either).",
        expected - M * 2 * C - 2 * d: "You left out the batch norms: each has a scale and a shift per channel "
        "(2C for each branch's BN, 2d for the BN on z).",
        expected - M * 2 * C: "You left out the branches' batch norms (2C parameters each).",
        expected - 2 * d: "You left out the batch norm on z (2d parameters).",
        expected - M * conv + M * 9 * C * C: "You counted full convolutions: with G groups a 3×3 convolution "
        "from C to C channels has 9·C·(C/G) weights, not 9·C².",
        _sk_params(C, M, G, L=1): "d is max(C/r, L) = max(12, 32) = 32, not C/r = 12.",
        expected - (M - 1) * C * d: "There is one A_m ∈ R^{C×d} per branch: M·C·d, not C·d.",
        expected - M * (conv + 2 * C): "You counted only what the attention adds; the branches "
        "(convolution + BN) belong to the module too.",
        _sk_params(C, 2, G): "That is M = 2 branches (the default); the exercise has branches=3.",
        _sk_params(C, M, 32): "That is G = 32 groups (the default); the exercise has groups=16.",
        expected + (25 - 9 + 49 - 9) * C * C // G: "The dilated branches are 3×3 kernels with dilation 2 and 3: "
        "9 weights per input channel each, not 25 and 49.",
    }
    return check_number(answer, expected, what="Parameters of SelectiveKernel(192, branches=3, groups=16)", hints=hints)


def _reference_select(u: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    B, M, C = u.shape[:3]
    a = logits.view(B, M, C).softmax(dim=1)
    return (a[..., None, None] * u).sum(1)


# The former exercise 2 (its answer was close to the chapter's sk_einops and the module's source);
# kept for older copies. Typical mistakes: the softmax over the channels (or over the batch) instead of the
# branches, the logits read as (c m), a sigmoid per branch (SE's gate), exp without normalising,
# the branches averaged or summed without weights, the weighted branches not summed over m
# (shape (B, M, C, H, W)), M fixed at 2.
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
        if isinstance(out, torch.Tensor) and out.shape == u.shape:
            return failed(f"{what} (M = {M}): the shape is {tuple(out.shape)}: you weighted the branches but did not "
                          "sum them over m; eq. (6) is V = Σ_m a_m ⊙ U_m, shape (B, C, H, W).")
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
            "the softmax runs over the batch; it must run over the branches (dim of size M)": (
                a_mc.softmax(0)[..., None, None] * u
            ).sum(1),
            "you averaged the branches instead of weighting them by a": u.mean(1),
            "you summed the branches instead of weighting them by a": u.sum(1),
        }
        for why, v in variants.items():
            if torch.allclose(out, v, atol=1e-6):
                return failed(f"{what} (M = {M}): {why}.")
        return wrong
    return passed(f"{what}: right, for M = 2 and M = 3: a = softmax over m of A_m z, and V = Σ_m a_m ⊙ U_m.")


# Exercise 2 (two branches, one logit difference per channel), typical mistakes: the branches
# swapped (σ(Δ) on U_2), 1 − σ(Δ) left out (V = σ(Δ)·U_1 only), both branches weighted by σ(Δ),
# Δ used without the sigmoid, a softmax over the channels of Δ, the branches averaged, the
# difference taken the other way (σ(−Δ)·U_1 + σ(Δ)·U_2 is the swap), e^Δ without normalising,
# the two weighted branches stacked instead of summed. B, C, H and W all differ from each other
# and from the two branches, so that no axis passes for another.
def check_select_two(fn: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]) -> Feedback:
    """Exercise 2: ``fn(u1, u2, diff)`` with diff = Δ = A z − B z (one entry per channel), shape (B, C): V of eqs. (5)-(6) for M = 2."""
    what = "select_two"
    gen = torch.Generator().manual_seed(3)
    B, C, H, W = 3, 4, 5, 6
    u1 = torch.randn(B, C, H, W, generator=gen, dtype=torch.float64)
    u2 = torch.randn(B, C, H, W, generator=gen, dtype=torch.float64)
    diff = 2 * torch.randn(B, C, generator=gen, dtype=torch.float64)
    out, fb = run_answer(fn, u1.clone(), u2.clone(), diff.clone(), what=what)
    if fb is not None:
        return fb
    a = torch.sigmoid(diff)[..., None, None]
    expected = a * u1 + (1 - a) * u2
    wrong = compare_tensors(out, expected, what=what)
    if wrong is None:
        return passed(f"{what}: right. With two branches the softmax is a sigmoid of the difference: "
                      "a_c = e^{A_c z}/(e^{A_c z} + e^{B_c z}) = σ(A_c z − B_c z), and b_c = 1 − a_c.")
    if isinstance(out, torch.Tensor) and tuple(out.shape) in {(2, B, C, H, W), (B, 2, C, H, W)}:
        return failed(f"{what}: the shape is {tuple(out.shape)}: you stacked the weighted branches; eq. (6) adds them, "
                      "V = a_c U_1 + b_c U_2, shape (B, C, H, W).")
    if not isinstance(out, torch.Tensor) or out.shape != expected.shape:
        return wrong
    out = out.to(torch.float64)
    d = diff[..., None, None]
    variants = {
        "the branches are swapped: a_c = σ(A_c z − B_c z) weights the first branch U_1, b_c = 1 − a_c the second":
            (1 - a) * u1 + a * u2,
        "b_c · U_2 is missing: with b_c = 1 − a_c, V = a_c U_1 + (1 − a_c) U_2": a * u1,
        "both branches are weighted by σ(Δ): the second branch's weight is b_c = 1 − a_c": a * (u1 + u2),
        "the sigmoid is missing: Δ is a logit difference, a_c = σ(Δ_c)": d * u1 + (1 - d) * u2,
        "that is a softmax over the channels; with two branches the softmax over the branches is "
        "σ(Δ) per channel": diff.softmax(1)[..., None, None] * u1 + (1 - diff.softmax(1)[..., None, None]) * u2,
        "you averaged the branches instead of weighting them by a": (u1 + u2) / 2,
        "e^Δ is not a weight: normalise over the two branches, a_c = e^{Δ}/(e^{Δ} + 1) = σ(Δ)":
            d.exp() * u1 + (1 - d.exp()) * u2,
    }
    for why, v in variants.items():
        if torch.allclose(out, v, atol=1e-6):
            return failed(f"{what}: {why}.")
    return wrong


# Exercise 3 (C = 128, G = 32), typical mistakes: the groups forgotten, the cost of the 5×5 or of
# the dilated 3×3 given instead of the difference, (5 − 3)² instead of 5² − 3², one output channel
# only, the saving over both branches (the first branch was 3×3 anyway).
def check_dilation_saving(answer: Any) -> Feedback:
    """Exercise 3: weights saved in one SK unit (C=128, G=32) by a dilated 3×3 instead of a true 5×5."""
    C, G = 128, 32
    expected = (25 - 9) * C * C // G
    hints = {
        (25 - 9) * C * C: "Remember the groups: each output channel sees only C/G input channels.",
        25 * C * C // G: "That is what a 5×5 grouped convolution costs; the question asks how much the dilated "
        "3×3 saves compared with it.",
        9 * C * C // G: "That is what the dilated 3×3 costs; the question asks how much it saves compared with a 5×5.",
        (5 - 3) ** 2 * C * C // G: "A k×k kernel has k² weights per input channel: the saving is 5² − 3² = 16 "
        "per input channel, not (5 − 3)² = 4.",
        (25 - 9) * C // G: "Count all C output channels, each with (C/G)·k² weights.",
        2 * (25 - 9) * C * C // G: "Only the second branch changes: the first is a 3×3 in both designs.",
    }
    return check_number(answer, expected, what="Weights saved by the dilated 3×3", hints=hints)
