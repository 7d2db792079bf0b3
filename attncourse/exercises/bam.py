"""Checkers for the exercises of the BAM chapter.

Above each checker, a comment lists the mistakes a learner typically makes on that exercise;
each one gets its own message (``tests/test_checkers_hybrid.py`` tries every one of them).
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from . import Feedback, check_number, compare_tensors, failed, match_mistake, passed, run_answer

__all__ = ["check_three_conv_parameters", "check_border_inputs", "check_spatial_grad"]


def _branch_params(c: int, r: int, *, taps: int = 9, biases: bool = True, convs: int = 2) -> tuple[int, int]:
    """Parameters of the channel and spatial branches without any BN (weights and, if asked, biases),
    with ``convs`` dilated 3×3 convolutions (``taps`` weights per input and output channel)."""
    m = c // r
    b = 1 if biases else 0
    channel = 2 * c * m + b * (m + c)
    spatial = c * m + b * m + convs * (taps * m * m + b * m) + m + b
    return channel, spatial


# Exercise 1, BAM(192) with r = 16 (m = 12), the paper's layout (one BN at the end of each
# branch), and a spatial branch with three dilated 3×3 convolutions instead of two. The chapter's
# bam_parameters counts the two-convolution module, so calling it gives the first wrong answer.
# Typical mistakes:
#   - the paper's two dilated convolutions (bam_parameters(192)): the third one forgotten
#   - the third convolution without its bias / counted as 9m weights (one per channel and tap)
#   - no batch norm at all / only the channel BN / only the spatial BN
#   - the official code's layout (a BN after each of the five hidden layers) instead of the paper's
#   - BN's running mean and variance counted (buffers, not parameters)
#   - only one branch counted (channel or spatial)
#   - a dilated 3×3 kernel counted as 9×9 weights (its span), not 3×3
#   - the biases forgotten everywhere / r forgotten (a hidden width of C)
def check_three_conv_parameters(answer: Any) -> Feedback:
    """Exercise 1: parameters of BAM(192), r = 16, BN at both outputs, three dilated 3×3 convolutions."""
    c, r = 192, 16
    m = c // r
    ch, sp = _branch_params(c, r, convs=3)
    right = ch + sp + 2 * c + 2
    ch2, sp2 = _branch_params(c, r)
    ch_nb, sp_nb = _branch_params(c, r, biases=False, convs=3)
    ch9, sp9 = _branch_params(c, r, taps=81, convs=3)
    ch1, sp1 = _branch_params(c, 1, convs=3)
    return check_number(
        answer,
        right,
        what="Parameters of BAM(192), r = 16, BN at the branch outputs, three dilated convolutions",
        hints={
            ch2 + sp2 + 2 * c + 2: "That is the paper's BAM with two dilated convolutions (the chapter's "
            "bam_parameters(192)); the third one adds 9m² weights and m biases.",
            right - m: "The third dilated convolution has a bias too, one per output channel: m = 12.",
            right - 9 * m * m + 9 * m: "A 3×3 convolution from m to m channels has 9·m·m weights: each of the m "
            "output channels reads all m input channels, not one.",
            ch + sp: "That has no batch norm at all: eqs. (3) and (4) end in a BN, with 2C and 2 parameters (γ, β).",
            ch + sp + 2 * c: "The channel BN is counted, but the spatial branch ends in a BN too: one channel, 2 parameters.",
            ch + sp + 2: "The spatial BN is counted, but the channel BN has a γ and a β for each of the C channels: 2C.",
            ch + sp + 10 * m: "That is the official code's layout (a BN after each of the five hidden layers, 10m); "
            "the question asks for the paper's, one BN at the end of each branch.",
            right + 2 * c + 2: "A batch norm's running mean and variance are buffers, not parameters: count only γ and β.",
            ch + 2 * c: "That is only the channel branch; add the spatial branch (f0, three dilated 3×3 convs, f3, BN).",
            sp + 2: "That is only the spatial branch; add the channel branch (W0, W1 and its BN).",
            ch9 + sp9 + 2 * c + 2: "A dilated 3×3 kernel still has 3×3 = 9 weights per input and output channel; "
            "dilation spreads them over a wider span without adding any.",
            ch_nb + sp_nb + 2 * c + 2: "The biases are missing: W0, W1 and the five convolutions each have one per "
            "output channel.",
            ch1 + sp1 + 2 * c + 2: "That uses a hidden width of C, as if r were 1: the hidden width is "
            "m = ⌊C/r⌋ = 12.",
        },
    )


# Exercise 2, how many input positions M_s(1, 6) depends on, on a 16×16 map with d = 4 and a
# padding of d: rows 1 + 4a and columns 6 + 4a (a ∈ {-2, ..., 2}) that fall inside the map,
# 3 × 4 = 12. (Far from the border the answer is 25 whatever d is, so a reader who ignores the
# dilation would pass; at the border it depends on d.)
# Typical mistakes:
#   - 25: the count far from the border (the padding is not an input position)
#   - 20: the dense 5×5 block of two undilated 3×3 convs, clipped by the border
#   - 150 / 289: the 17×17 span, clipped or not, as if it were dense
#   - 81: the number of paths (a tap of f1, then a tap of f2)
#   - 6: one dilated convolution only
#   - 9 / 16: one axis' count used for both axes
#   - 15: the rows clipped, the columns not
#   - 7: the two axes' counts added
#   - 3 / 4 / 5: one axis only
#   - 17: the side of the span
def check_border_inputs(answer: Any) -> Feedback:
    """Exercise 2: input positions that M_s(1, 6) depends on (16×16 map, d = 4, padding d)."""
    return check_number(
        answer,
        12,
        what="Input positions seen by M_s(1, 6)",
        hints={
            25: "That is the count far from the border: 5 offsets 4a, a ∈ {-2, ..., 2}, on each axis. At row 1 and "
            "column 6 some of them fall outside the 16×16 map, into the zero padding, which is not an input.",
            20: "That is two 3×3 convolutions without dilation (d = 1): the dense 5×5 block, clipped by the border. "
            "With d = 4 the taps are 4 pixels apart: rows 1 + 4a and columns 6 + 4a.",
            150: "That is the 17×17 span clipped to the map, counted as if it were dense; a dilated convolution "
            "reads only every d-th pixel of it.",
            289: "17 × 17 is the span of the receptive field far from the border, as if it were dense; count the "
            "rows 1 + 4a and the columns 6 + 4a that lie inside the map.",
            81: "9 × 9 counts paths (one tap of f1, then one of f2); offsets add, 4a₁ + 4a₂ = 4(a₁ + a₂), so different "
            "paths land on the same position, and at the border some land in the padding.",
            6: "That is one dilated 3×3 convolution (2 rows × 3 columns); there are two, f1 and f2, and their "
            "offsets add.",
            9: "That uses row 1's count (3) for both axes; column 6 is further from the edge: count the columns "
            "6 + 4a inside 0..15 on their own.",
            16: "That uses column 6's count (4) for both axes; row 1 is one pixel from the top: count the rows "
            "1 + 4a inside 0..15 on their own.",
            15: "The rows are clipped (3) but not the columns: 6 − 8 = −2 is outside the map, so 4 columns remain.",
            7: "That adds the two axes' counts; every row can pair with every column: multiply them.",
            3: "That is the number of rows only; the map has two axes: multiply by the number of columns.",
            4: "That is the number of columns only; the map has two axes: multiply by the number of rows.",
            5: "That is the number of offsets along one axis, far from the border; count both axes, at the border.",
            17: "That is the side of the span (1 + 2·2·d); the question asks for the number of positions read.",
        },
    )


def _spatial_grad_reference(f, mc, ms, g, combine, how="right"):
    """dL/dM_s for F' = F + F ⊗ σ(a), a = M_c + M_s or M_c · M_s, L = Σ G ⊗ F'; with one mistake."""
    mc4, ms4 = mc[:, :, None, None], ms[:, None]
    a = mc4 + ms4 if combine == "sum" else mc4 * ms4
    s = torch.sigmoid(a)
    ds = s if how == "sigma" else s * (1 - s)                  # σ'(a), or σ(a) by mistake
    factor = {"right": 1.0 if combine == "sum" else mc4, "no-mc": 1.0, "always-mc": mc4,
              "ms": 1.0 if combine == "sum" else ms4}.get(how, 1.0 if combine == "sum" else mc4)
    per = g * (1 if how == "no-f" else f) * ds * factor
    if how == "residual":
        per = g * (1 + f * ds) * factor
    if how == "per-channel":
        return per
    if how == "mean":
        return per.mean(1)
    return per.sum(1)


# Exercise 3, spatial_grad(f, mc, ms, g, combine): the gradient of L = Σ G ⊗ F' with respect to
# the spatial logits M_s, by hand, for F' = F + F ⊗ σ(M_c + M_s) (sum) and σ(M_c · M_s) (product).
# f, g (B, C, H, W), mc (B, C), ms (B, H, W); the answer has M_s's shape (B, H, W).
# Typical mistakes:
#   - not summed over the channels ((B, C, H, W)): M_s reaches every channel
#   - summed over the positions instead ((B, C)) / the channel axis kept ((B, 1, H, W))
#   - a mean over the channels instead of the sum
#   - σ(a) in place of its derivative σ(a)(1 − σ(a))
#   - the product's factor M_c forgotten / the factor M_c used for the sum too / M_s as the factor
#   - the factor F forgotten
#   - the residual's 1 kept: F' = F + ..., but F does not depend on M_s
def check_spatial_grad(fn: Callable[..., Any]) -> Feedback:
    """Exercise 3: ``fn(f, mc, ms, g, combine)`` returns ∂L/∂M_s, (B, H, W), for both combinations."""
    what = "Your spatial_grad"
    gen = torch.Generator().manual_seed(5)
    for shape in [(3, 5, 4, 7), (4, 6, 7, 5)]:
        B, C, H, W = shape
        f = torch.randn(shape, generator=gen, dtype=torch.float64)
        g = torch.randn(shape, generator=gen, dtype=torch.float64)
        mc = torch.randn(B, C, generator=gen, dtype=torch.float64)
        ms = torch.randn(B, H, W, generator=gen, dtype=torch.float64)
        for combine in ["sum", "product"]:
            label = f"{what} (combine={combine!r})"
            got, fb = run_answer(fn, f.clone(), mc.clone(), ms.clone(), g.clone(), combine, what=what)
            if fb is not None:  # a crash says for which combine; "not attempted" needs no label
                return failed(label + fb.message[len(what):]) if fb.attempted else fb
            # the reference by autograd
            ms_grad = ms.clone().requires_grad_(True)
            a = mc[:, :, None, None] + ms_grad[:, None] if combine == "sum" else mc[:, :, None, None] * ms_grad[:, None]
            expected = torch.autograd.grad(((f + f * torch.sigmoid(a)) * g).sum(), ms_grad)[0]
            if isinstance(got, torch.Tensor):
                got = got.detach().to(torch.float64)
                if tuple(got.shape) == (B, C, H, W):
                    return failed(f"{label}: the shape is (B, C, H, W): not summed over the channels. One value "
                                  "M_s(i, j) is added to the logits of all C channels, so its gradient collects "
                                  "Σ_c over them: the result has M_s's shape (B, H, W).")
                if tuple(got.shape) == (B, C):
                    return failed(f"{label}: the shape is (B, C), M_c's shape: you summed over the positions; "
                                  "M_s has one value per position, so sum over the channels: (B, H, W).")
                if tuple(got.shape) == (B, 1, H, W):
                    return failed(f"{label}: the shape is (B, 1, H, W); drop the channel axis, so the gradient "
                                  "has M_s's shape (B, H, W).")
                if got.shape == expected.shape:
                    known = {
                        "this is a mean over the channels; M_s(i, j) enters all C logits, and their contributions "
                        "add up: a sum": _spatial_grad_reference(f, mc, ms, g, combine, "mean"),
                        "you used σ(a) where the chain rule needs its derivative σ'(a) = σ(a)(1 − σ(a))":
                            _spatial_grad_reference(f, mc, ms, g, combine, "sigma"),
                        "for the product the logit is a = M_c · M_s, so ∂a/∂M_s = M_c: multiply by M_c (this is why "
                        "a channel with M_c ≈ 0 passes no gradient to the spatial branch)":
                            _spatial_grad_reference(f, mc, ms, g, combine, "no-mc"),
                        "for the sum the logit is a = M_c + M_s, so ∂a/∂M_s = 1: the factor M_c belongs to the "
                        "product only": _spatial_grad_reference(f, mc, ms, g, combine, "always-mc"),
                        "for the product a = M_c · M_s, so ∂a/∂M_s = M_c, not M_s":
                            _spatial_grad_reference(f, mc, ms, g, combine, "ms"),
                        "the factor F is missing: F' = F + F ⊗ σ(a), so ∂F'/∂a = F σ'(a)":
                            _spatial_grad_reference(f, mc, ms, g, combine, "no-f"),
                        "the residual's 1 should not be there: the F in F + F ⊗ σ(a) does not depend on M_s, so "
                        "∂F'/∂a = F σ'(a)": _spatial_grad_reference(f, mc, ms, g, combine, "residual"),
                    }
                    fb = match_mistake(got, known, what=label, expected=expected, end=".")
                    if fb is not None:
                        return fb
            bad = compare_tensors(got, expected, what=label)
            if bad is not None:
                return bad
    return passed(f"{what} equals autograd's ∂L/∂M_s for the sum and the product: "
                  "Σ_c G F σ'(a), times M_c for the product.")
