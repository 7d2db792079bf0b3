"""Checkers for the exercises of the BAM chapter."""

from __future__ import annotations

from typing import Any, Callable

import torch

from . import Feedback, check_number, compare_tensors, failed, passed, run_answer

__all__ = ["check_bam_parameters", "check_spatial_inputs", "check_bam_refine"]


def _branch_params(c: int, r: int) -> tuple[int, int]:
    """Parameters of the channel and spatial branches without any BN (weights and biases only)."""
    h = c // r
    return 2 * c * h + h + c, c * h + h + 2 * (9 * h * h + h) + h + 1


def check_bam_parameters(answer: Any) -> Feedback:
    """Exercise 1: parameters of ``BAM(256)`` with the paper's layout (r = 16, BN at both outputs)."""
    c, r = 256, 16
    h = c // r
    ch, sp = _branch_params(c, r)
    right = ch + sp + 2 * c + 2
    return check_number(
        answer,
        right,
        what="Parameters of BAM(256), r = 16, BN at the branch outputs",
        hints={
            ch + sp: "That has no batch norm at all: eqs. (3) and (4) end in a BN, with 2C and 2 parameters (γ, β).",
            ch + sp + 2 * c: "The channel BN is counted, but the spatial branch ends in a BN too: one channel, 2 parameters.",
            ch + sp + 2: "The spatial BN is counted, but the channel BN has a γ and a β for each of the C channels: 2C.",
            ch + sp + 8 * h: "That is the official code's layout (BN after the four hidden layers, 8 C/r); the question asks for the paper's.",
            ch + 2 * c: "That is only the channel branch; add the spatial branch (f0, two dilated 3×3 convs, f3, BN).",
            sp + 2: "That is only the spatial branch; add the channel branch (W0, W1 and its BN).",
            ch + sp + 2 * c + 2 - (9 * h * h + h): "One dilated 3×3 convolution is missing: eq. (4) has two, f1 and f2.",
            ch + sp + 2 * c + 2 + 16 * h * h: "The dilated convolutions have 3×3 kernels on C/r channels: 9 (C/r)² weights each, not 17×17.",
        },
    )


def check_spatial_inputs(answer: Any) -> Feedback:
    """Exercise 2: how many input positions one value of M_s depends on (d = 4, large map)."""
    return check_number(
        answer,
        25,
        what="Input positions seen by one value of M_s",
        hints={
            289: "17 × 17 is the span of the receptive field, but a dilated 3×3 conv only reads every d-th pixel: "
            "which offsets can two of them reach?",
            81: "Two 3×3 convs without dilation would see 5 × 5 positions; with dilation the offsets are multiples of d. "
            "Count the offsets i + d·a with a ∈ {−2, …, 2}.",
            9: "That is one dilated 3×3 conv. There are two, f1 and f2, and their offsets add.",
            17: "That is the side of the span (1 + 2·2·d); the question asks for the number of positions read.",
            5: "That is the number of offsets along one axis; the map has two axes.",
        },
    )


def check_bam_refine(fn: Callable[..., Any]) -> Feedback:
    """Exercise 3: ``fn(f, mc, ms)`` with f (B, C, H, W), mc (B, C), ms (B, H, W) returns F' of eqs. (1)-(2)."""
    what = "Your bam_refine"
    g = torch.Generator().manual_seed(5)
    for shape in [(2, 6, 4, 7), (1, 3, 5, 5)]:
        b, c, h, w = shape
        f = torch.randn(shape, generator=g, dtype=torch.float64)
        mc = torch.randn(b, c, generator=g, dtype=torch.float64)
        ms = torch.randn(b, h, w, generator=g, dtype=torch.float64)
        got, fb = run_answer(fn, f.clone(), mc.clone(), ms.clone(), what=what)
        if fb is not None:
            if fb.attempted and "size of tensor" in fb.message:
                return failed(
                    f"{fb.message}. The branches broadcast only once M_c is (B, C, 1, 1) and M_s is "
                    f"(B, 1, H, W): rearrange(mc, 'b c -> b c 1 1') and rearrange(ms, 'b h w -> b 1 h w')."
                )
            return fb
        mc4, ms4 = mc[:, :, None, None], ms[:, None]
        m = torch.sigmoid(mc4 + ms4)
        expected = f + f * m
        if isinstance(got, torch.Tensor) and got.shape == expected.shape:
            known = {
                "you returned F ⊗ M(F): eq. (1) adds it to F (the residual form, F' = F + F ⊗ M(F))": f * m,
                "you combined the branches with a product (the official code's choice); eq. (2) sums them": f + f * torch.sigmoid(mc4 * ms4),
                "the sigmoid σ of eq. (2) is missing": f + f * (mc4 + ms4),
                "you returned the attention M(F); eq. (1) applies it to F": m,
            }
            for hint, wrong in known.items():
                if torch.allclose(got.to(wrong.dtype), wrong):
                    return failed(f"{what}: {hint}.")
        bad = compare_tensors(got, expected, what=what)
        if bad is not None:
            return bad
    return passed(f"{what} computes F + F ⊗ σ(M_c + M_s) with the right broadcasting.")
