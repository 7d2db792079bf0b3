"""Checkers for the exercises of the BAM chapter.

Above each checker, a comment lists the mistakes a learner typically makes on that exercise;
each one gets its own message (``tests/test_checkers_hybrid.py`` tries every one of them).
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from . import Feedback, check_number, compare_tensors, failed, match_mistake, passed, run_answer

__all__ = ["check_bam_parameters", "check_spatial_inputs", "check_bam_refine"]


def _branch_params(c: int, r: int, *, taps: int = 9, biases: bool = True) -> tuple[int, int]:
    """Parameters of the channel and spatial branches without any BN (weights and, if asked, biases)."""
    h = c // r
    b = 1 if biases else 0
    channel = 2 * c * h + b * (h + c)
    spatial = c * h + b * h + 2 * (taps * h * h + b * h) + h + b
    return channel, spatial


# Exercise 1, BAM(128) with r = 16 (h = 8) and the paper's layout (one BN at the end of each branch).
# Typical mistakes:
#   - no batch norm at all / only the channel BN / only the spatial BN
#   - the official code's layout (BN after the four hidden layers) instead of the paper's
#   - BN's running mean and variance counted (buffers, not parameters)
#   - only one branch counted (channel or spatial)
#   - one dilated 3×3 convolution instead of two
#   - a dilated 3×3 kernel counted as 9×9 weights (its span), not 3×3
#   - the biases forgotten everywhere
def check_bam_parameters(answer: Any) -> Feedback:
    """Exercise 1: parameters of ``BAM(128)`` with the paper's layout (r = 16, BN at both outputs)."""
    c, r = 128, 16
    h = c // r
    ch, sp = _branch_params(c, r)
    right = ch + sp + 2 * c + 2
    ch_nb, sp_nb = _branch_params(c, r, biases=False)
    ch9, sp9 = _branch_params(c, r, taps=81)
    return check_number(
        answer,
        right,
        what="Parameters of BAM(128), r = 16, BN at the branch outputs",
        hints={
            ch + sp: "That has no batch norm at all: eqs. (3) and (4) end in a BN, with 2C and 2 parameters (γ, β).",
            ch + sp + 2 * c: "The channel BN is counted, but the spatial branch ends in a BN too: one channel, 2 parameters.",
            ch + sp + 2: "The spatial BN is counted, but the channel BN has a γ and a β for each of the C channels: 2C.",
            ch + sp + 8 * h: "That is the official code's layout (BN after the four hidden layers, 8 C/r); the question asks for the paper's.",
            right + 2 * c + 2: "A batch norm's running mean and variance are buffers, not parameters: count only γ and β.",
            ch + 2 * c: "That is only the channel branch; add the spatial branch (f0, two dilated 3×3 convs, f3, BN).",
            sp + 2: "That is only the spatial branch; add the channel branch (W0, W1 and its BN).",
            right - (9 * h * h + h): "One dilated 3×3 convolution is missing: eq. (4) has two, f1 and f2.",
            ch9 + sp9 + 2 * c + 2: "A dilated 3×3 kernel still has 3×3 = 9 weights per input and output channel; "
            "dilation spreads them over a 9×9 span without adding any.",
            ch_nb + sp_nb + 2 * c + 2: "The biases are missing: W0, W1 and the four convolutions f0-f3 each have one per output channel.",
        },
    )


# Exercise 2, how many input positions one value of M_s depends on (d = 4, a large map).
# Typical mistakes:
#   - 17 × 17 = 289: the span of the receptive field, as if it were dense
#   - 9 × 9 = 81: the number of paths (a tap of f1, then a tap of f2), or the span of one conv
#   - 9 + 9 = 18: the taps of the two convolutions added
#   - 9: one dilated convolution only
#   - 17: the side of the span
#   - 5: the offsets along one axis only
def check_spatial_inputs(answer: Any) -> Feedback:
    """Exercise 2: how many input positions one value of M_s depends on (d = 4, large map)."""
    return check_number(
        answer,
        25,
        what="Input positions seen by one value of M_s",
        hints={
            289: "17 × 17 is the span of the receptive field, but a dilated 3×3 conv only reads every d-th pixel: "
            "which offsets can two of them reach?",
            81: "9 × 9 counts paths (one tap of f1, then one of f2), or the span of one dilated conv; but offsets add, "
            "d·u + d·v = d·(u + v), and different paths land on the same position.",
            18: "The two convolutions do not add their taps: f2 reads f1's output, so each tap of f2 sees all of "
            "f1's taps, shifted. Count the distinct offsets d·(u + v).",
            9: "That is one dilated 3×3 conv. There are two, f1 and f2, and their offsets add.",
            17: "That is the side of the span (1 + 2·2·d); the question asks for the number of positions read.",
            5: "That is the number of offsets along one axis; the map has two axes.",
        },
    )


# Exercise 3, bam_refine(f, mc, ms) = F' of eqs. (1)-(2).
# Typical mistakes:
#   - M_c and M_s not reshaped for broadcasting (an error)
#   - F ⊗ M(F) returned, without the residual F + ...
#   - the branches multiplied (the official code) instead of summed (eq. 2)
#   - the sigmoid forgotten
#   - the attention M(F) returned instead of F'
#   - a sigmoid on each branch, then summed (σ(M_c) + σ(M_s)) / then multiplied (σ(M_c) σ(M_s), CBAM-like)
#   - the attention added to F (F + M) instead of multiplied in
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
                "you took a sigmoid of each branch and added them; eq. (2) adds the logits M_c + M_s, then takes "
                "one sigmoid": f + f * (torch.sigmoid(mc4) + torch.sigmoid(ms4)),
                "you multiplied a channel gate σ(M_c) and a spatial gate σ(M_s), as CBAM does; eq. (2) takes one "
                "sigmoid of the sum M_c + M_s": f + f * torch.sigmoid(mc4) * torch.sigmoid(ms4),
                "you added the attention to F (F + M); eq. (1) multiplies it in: F + F ⊗ M(F)": f + m,
            }
            fb = match_mistake(got, known, what=what, end=".")
            if fb is not None:
                return fb
        bad = compare_tensors(got, expected, what=what)
        if bad is not None:
            return bad
    return passed(f"{what} computes F + F ⊗ σ(M_c + M_s) with the right broadcasting.")
