"""Checkers for the exercises of the GAM chapter (Part II).

Above each checker, a comment lists the mistakes a learner typically makes on that exercise;
each one gets its own message (``tests/test_checkers_gam.py`` tries every one of them).
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from ..hybrid.gam import GAM
from . import Feedback, check_number, judge_tensor, passed, run_answer

__all__ = ["check_gam_parameters", "check_channel_map", "check_gam_order"]


def _grouped(c: int = 128, r: int = 4, k: int = 7, *, g0: int = 4, g1: int = 4, mlp_groups: int = 1,
             bias_div: int = 1, bn_div: int = 1, buffers: bool = False) -> int:
    """Parameters of GAM(c) whose 7×7 convolutions f0, f1 have g0, g1 groups (1: dense), with variations."""
    h = c // r
    mlp = 2 * c * h // mlp_groups + h + c
    convs = k * k * c * h // g0 + k * k * h * c // g1 + (h + c) // bias_div
    bns = 2 * (h + c) // bn_div * (2 if buffers else 1)
    return mlp + convs + bns


# Exercise 1, GAM(128) (r = 4, k = 7) with both 7×7 convolutions grouped, groups = r = 4 (the copies' `group`
# option): 2Ch + h + C + 2k²Ch/4 + 3h + 3C = 109,184.
# Typical mistakes:
#   - the dense count, 410,240 (the grouping ignored)
#   - only one of the two convolutions grouped
#   - the weights divided by the number of groups squared (16) instead of 4
#   - the MLP's Linear layers divided by 4 as well (they are not grouped)
#   - the convolutions' biases, or the batch norms' γ and β, divided by 4 (they stay one per output channel)
#   - the batch norms' running mean and variance counted (buffers)
def check_gam_parameters(answer: Any) -> Feedback:
    """Exercise 1: parameters of ``GAM(128)`` with both 7×7 convolutions grouped (groups = 4)."""
    right = _grouped()
    return check_number(
        answer,
        right,
        what="Parameters of GAM(128) with grouped 7×7 convolutions",
        hints={
            _grouped(g0=1, g1=1): "That is the dense GAM(128). With groups=4 each output channel of a convolution "
            "reads only a quarter of its input channels: a quarter of the k²·C·C/r weights.",
            _grouped(g1=1): "Only one of the two convolutions is grouped; both f0 (C → C/r) and f1 (C/r → C) are.",
            _grouped(g0=16, g1=16): "The weights are divided by 16; grouping by 4 divides them by 4 (each of the "
            "C/r output channels reads C/4 inputs, not C/16).",
            _grouped(mlp_groups=4): "The MLP's two Linear layers are not grouped: they keep 2C·C/r weights.",
            _grouped(bias_div=4): "A grouped convolution still has one bias per output channel: C/r + C biases, "
            "not a quarter of them.",
            _grouped(bn_div=4): "The batch norms are not grouped: γ and β for each of the C/r and C channels.",
            _grouped(buffers=True): "The batch norms' running mean and variance are buffers, not parameters: "
            "count only γ and β.",
        },
    )


def _mc(f, w0, b0, w1, b1, how: str = "paper") -> torch.Tensor:
    z = f.permute(0, 2, 3, 1)  # (B, H, W, C)
    if how == "pooled":
        z = f.mean((2, 3))[:, None, None, :].expand(f.shape[0], f.shape[2], f.shape[3], f.shape[1])
    if how == "reshape":  # a (B, C, H, W) buffer read as (B, H, W, C)
        z = f.reshape(f.shape[0], f.shape[2], f.shape[3], f.shape[1])
    hidden = z @ w0.T + (0 if how == "no-bias" else b0)
    if how != "no-relu":
        hidden = torch.relu(hidden)
    out = hidden @ w1.T + (0 if how == "no-bias" else b1)
    if how == "softmax":
        out = torch.softmax(out, -1)
    elif how != "no-sigmoid":
        out = torch.sigmoid(out)
    return out.permute(0, 3, 1, 2)


# Exercise 2, channel_gate_at(f, i, j, a0, b0, a1, b1) = M_c(F)[:, :, i, j], shape (B, C): the MLP and the
# sigmoid on the C values at row i, column j.
# Typical mistakes:
#   - SE's habit: the channel vector averaged over H × W first (the same gate at every position)
#   - i and j swapped (row j, column i)
#   - the whole map (B, C, H, W) returned instead of its value at (i, j)
#   - the sigmoid forgotten (the copied GAM_Attention(in_channels, out_channels) form)
#   - a softmax over the channels instead of a sigmoid
#   - the ReLU forgotten; the biases forgotten
#   - the product M_c(F) ⊗ F at (i, j) returned instead of the gate
def check_channel_map(fn: Callable[..., Any]) -> Feedback:
    """Exercise 2: ``fn(f, i, j, a0, b0, a1, b1)`` returns M_c(f) at row i, column j, shape (B, C)."""
    what = "Your channel_gate_at"
    g = torch.Generator().manual_seed(3)
    # (B, C, H, W) with no two sizes equal (hidden width C/4 = 2 as well), and positions whose swap is valid
    for shape, (i, j) in [((3, 8, 5, 7), (1, 4)), ((5, 12, 6, 4), (3, 2))]:
        B, C, H, W = shape
        h = C // 4
        f = torch.randn(shape, generator=g, dtype=torch.float64)
        a0, b0 = torch.randn(h, C, generator=g, dtype=torch.float64), torch.randn(h, generator=g, dtype=torch.float64)
        a1, b1 = torch.randn(C, h, generator=g, dtype=torch.float64), torch.randn(C, generator=g, dtype=torch.float64)
        got, fb = run_answer(fn, f, i, j, a0, b0, a1, b1, what=what)
        if fb is not None:
            return fb
        full = _mc(f, a0, b0, a1, b1)
        expected = full[:, :, i, j]
        known = {
            "you averaged the channel vector over H × W first (SE's squeeze); GAM has no pooling: M_c at (i, j) "
            "depends only on the C values at that position": _mc(f, a0, b0, a1, b1, "pooled")[:, :, 0, 0],
            "row and column are swapped: f[:, :, i, j] is row i, column j": full[:, :, j, i],
            "that is the whole map M_c(F), (B, C, H, W); return its values at row i, column j, (B, C)": full,
            "the sigmoid is missing (that is the copied GAM_Attention(in_channels, out_channels) form); the "
            "paper's M_c ends with a sigmoid": _mc(f, a0, b0, a1, b1, "no-sigmoid")[:, :, i, j],
            "that is a softmax over the channels; M_c takes a sigmoid of each value independently":
                _mc(f, a0, b0, a1, b1, "softmax")[:, :, i, j],
            "the ReLU between the two layers is missing": _mc(f, a0, b0, a1, b1, "no-relu")[:, :, i, j],
            "the biases b0 and b1 are missing": _mc(f, a0, b0, a1, b1, "no-bias")[:, :, i, j],
            "that is the product M_c(F) ⊗ F at (i, j); return the gate itself": expected * f[:, :, i, j],
        }
        bad = judge_tensor(got, expected, known, what=what)
        if bad is not None:
            return bad
    return passed(f"{what} is the MLP and the sigmoid on the C values at that position alone: GAM's channel "
                  "gate is a per-pixel function.")


# Exercise 3, total_gate(f, channel_map, spatial_map) = G with F3 = G ⊗ F1: G = M_c(F1) ⊗ M_s(F2),
# F2 = M_c(F1) ⊗ F1.
# Typical mistakes:
#   - M_s computed from F1 (the two maps in parallel): M_c(F1) ⊗ M_s(F1)
#   - M_c recomputed on F2: M_c(F2) ⊗ M_s(F2)
#   - the spatial map first (the other order's gate): M_s(F1) ⊗ M_c(M_s(F1) ⊗ F1)
#   - F3 returned (the gate times F1)
#   - one gate only: M_c(F1), or M_s(F2)
#   - the maps added instead of multiplied: M_c(F1) + M_s(F2)
def check_gam_order(fn: Callable[..., Any]) -> Feedback:
    """Exercise 3: ``fn(f, channel_map, spatial_map)`` returns G with F3 = G ⊗ F1."""
    what = "Your total_gate"
    with torch.random.fork_rng():  # build the module without touching the reader's random state
        m = GAM(8, reduction=2, kernel_size=3).double().eval()
    g = torch.Generator().manual_seed(7)  # every parameter is drawn from here
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64))
    mc, ms = m.channel_map, m.spatial_map
    for shape in [(3, 8, 5, 6), (5, 8, 4, 7)]:  # no batch size equal to another axis
        f = torch.randn(shape, generator=g, dtype=torch.float64)
        with torch.no_grad():
            got, fb = run_answer(fn, f, mc, ms, what=what)
            if fb is not None:
                return fb
            f2 = mc(f) * f
            expected = mc(f) * ms(f2)
            fs = ms(f) * f
            known = {
                "M_s is computed from F1 (the two maps in parallel); GAM computes it from F2 = M_c(F1) ⊗ F1": mc(f) * ms(f),
                "M_c is computed again, on F2; the channel map comes from F1 and the spatial map from F2":
                    mc(f2) * ms(f2),
                "that is the gate of the other order, spatial first; GAM is channel first, then spatial":
                    ms(f) * mc(fs),
                "that is F3 itself, G ⊗ F1; return the gate G that multiplies F1": ms(f2) * f2,
                "that is M_c(F1) alone; the spatial map M_s(F2) multiplies it": mc(f),
                "that is M_s(F2) alone; it multiplies M_c(F1)": ms(f2),
                "the maps are added; GAM multiplies them in one after the other": mc(f) + ms(f2),
            }
            bad = judge_tensor(got, expected, known, what=what)
        if bad is not None:
            return bad
    return passed(f"{what}: G = M_c(F1) ⊗ M_s(F2), with M_s computed from F2 = M_c(F1) ⊗ F1.")
