"""Checkers for the exercises of the GAM chapter (Part II).

Above each checker, a comment lists the mistakes a learner typically makes on that exercise;
each one gets its own message (``tests/test_checkers_gam.py`` tries every one of them).
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from ..hybrid.gam import GAM, gam_parameters
from . import Feedback, check_number, judge_tensor, passed, run_answer

__all__ = ["check_gam_parameters", "check_channel_map", "check_gam_order"]


# Exercise 1, GAM(128) with the defaults (r = 4, k = 7, biases everywhere, two batch norms).
# Typical mistakes:
#   - the biases of one pair of layers forgotten (the MLP's, or the convolutions'): -(h + C)
#   - all biases forgotten: -2(h + C)
#   - the batch norms forgotten: -2(h + C), the same count as all biases: one message for both
#   - the batch norms' running mean and variance counted (buffers): +2(h + C)
#   - only the weights, 25 C² (the approximation)
#   - only the channel branch (an SE-sized count) / only the spatial branch
#   - 3×3 convolutions instead of 7×7
#   - the convolutions without the reduction (C -> C -> C)
#   - SE's and CBAM's default r = 16 instead of GAM's r = 4
def check_gam_parameters(answer: Any) -> Feedback:
    """Exercise 1: parameters of ``GAM(128)`` with the defaults (r = 4, k = 7)."""
    c, r, k = 128, 4, 7
    h = c // r
    right = gam_parameters(c, r, k)
    mlp = 2 * c * h + h + c
    spatial = 2 * k * k * c * h + 3 * h + 3 * c
    return check_number(
        answer,
        right,
        what="Parameters of GAM(128)",
        hints={
            right - (h + c): "C/r + C = 160 short: one pair of layers lost its biases. The MLP's two Linear "
            "layers and the two convolutions all have biases (as in the copied code), 4 bias vectors in all.",
            right - 2 * (h + c): "2(C/r + C) = 320 short: either all four bias vectors or both batch norms' "
            "γ and β are missing; both are counted.",
            right + 2 * (h + c): "The batch norms' running mean and variance are buffers, not parameters: "
            "count only γ and β.",
            100 * c * h: "That is only the weights (100·C·C/r = 25C²): add the biases and the batch norms' γ, β.",
            mlp: "That is only the channel branch (the MLP); the spatial branch's two 7×7 convolutions hold "
            "most of the parameters.",
            spatial: "That is only the spatial branch; the channel MLP (2C·C/r + C/r + C) comes on top.",
            gam_parameters(c, r, 3): "That is with 3×3 convolutions; GAM's are 7×7.",
            gam_parameters(c, 16, k): "That is with r = 16, SE's and CBAM's default; GAM's copied code "
            "uses r = 4 (hidden width C/4 = 32).",
            2 * c * h + h + c + 2 * k * k * c * c + 2 * c + 4 * c: "The first convolution reduces C to C/r "
            "and the second restores C: both are C·(C/r)·k² weights, not C·C·k².",
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


# Exercise 2, channel_map(f, w0, b0, w1, b1) = M_c(F), (B, C, H, W).
# Typical mistakes:
#   - SE's habit: pooling over H × W first ((B, C) or a map constant over positions)
#   - the permutation done with reshape/view (values scrambled)
#   - the sigmoid forgotten (the copied GAM_Attention(in_channels, out_channels) form)
#   - a softmax over the channels instead of a sigmoid
#   - the ReLU forgotten; the biases forgotten
#   - the product M_c(F) ⊗ F returned instead of the map
#   - not permuted back: (B, H, W, C)
#   - permuted to the paper's (B, W, H, C) but undone as if it were (B, H, W, C): H and W swapped
def check_channel_map(fn: Callable[..., Any]) -> Feedback:
    """Exercise 2: ``fn(f, w0, b0, w1, b1)`` returns M_c(f), shape (B, C, H, W)."""
    what = "Your channel_map"
    g = torch.Generator().manual_seed(3)
    for shape in [(2, 8, 5, 7), (1, 8, 3, 3)]:
        B, C, H, W = shape
        h = C // 4
        f = torch.randn(shape, generator=g, dtype=torch.float64)
        w0, b0 = torch.randn(h, C, generator=g, dtype=torch.float64), torch.randn(h, generator=g, dtype=torch.float64)
        w1, b1 = torch.randn(C, h, generator=g, dtype=torch.float64), torch.randn(C, generator=g, dtype=torch.float64)
        got, fb = run_answer(fn, f, w0, b0, w1, b1, what=what)
        if fb is not None:
            return fb
        expected = _mc(f, w0, b0, w1, b1)
        pooled = _mc(f, w0, b0, w1, b1, "pooled")
        known = {
            "you pooled over H × W first (SE's squeeze); GAM has no pooling: the MLP runs on the channel "
            "vector at every position, so the map is (B, C, H, W) and varies with the position": pooled,
            "the same, with the H × W axes dropped; GAM has no pooling: the MLP runs on the channel vector "
            "at every position and the map is (B, C, H, W)": pooled[:, :, 0, 0],
            "the map is not permuted back: return (B, C, H, W), not (B, H, W, C)": expected.permute(0, 2, 3, 1),
            "H and W are swapped: the permutation was not undone by its own inverse (after 'b c h w -> b w h c' "
            "go back with 'b w h c -> b c h w')": expected.transpose(2, 3),
            "the channel vectors are scrambled: a reshape/view to (B, H, W, C) is not a permutation; use "
            "permute or rearrange 'b c h w -> b h w c'": _mc(f, w0, b0, w1, b1, "reshape"),
            "the sigmoid is missing (that is the copied GAM_Attention(in_channels, out_channels) form); the "
            "paper's M_c ends with a sigmoid": _mc(f, w0, b0, w1, b1, "no-sigmoid"),
            "that is a softmax over the channels; M_c takes a sigmoid of each value independently":
                _mc(f, w0, b0, w1, b1, "softmax"),
            "the ReLU between the two layers is missing": _mc(f, w0, b0, w1, b1, "no-relu"),
            "the biases b0 and b1 are missing": _mc(f, w0, b0, w1, b1, "no-bias"),
            "that is the product M_c(F) ⊗ F; return the map itself": expected * f,
        }
        bad = judge_tensor(got, expected, known, what=what)
        if bad is not None:
            return bad
    return passed(f"{what} computes M_c: the MLP over C at every position, then a sigmoid.")


# Exercise 3, gam(f, channel_map, spatial_map) = F3 from the two map functions.
# Typical mistakes:
#   - both maps from F1 (parallel): M_s(F1) instead of M_s(F2)
#   - spatial first: M_c(M_s(F1) ⊗ F1) ...
#   - F2 returned (the spatial map never applied) / only the spatial branch
#   - the maps added instead of multiplied: (M_c + M_s) ⊗ F
#   - the spatial map applied to F1 at the end: M_s(F2) ⊗ F1
def check_gam_order(fn: Callable[..., Any]) -> Feedback:
    """Exercise 3: ``fn(f, channel_map, spatial_map)`` returns F3 of GAM."""
    what = "Your gam"
    with torch.random.fork_rng():  # build the module without touching the reader's random state
        m = GAM(8, reduction=2, kernel_size=3).double().eval()
    g = torch.Generator().manual_seed(7)  # every parameter is drawn from here
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64))
    mc, ms = m.channel_map, m.spatial_map
    for shape in [(2, 8, 5, 6), (1, 8, 4, 4)]:
        f = torch.randn(shape, generator=g, dtype=torch.float64)
        with torch.no_grad():
            got, fb = run_answer(fn, f, mc, ms, what=what)
            if fb is not None:
                return fb
            expected = m(f)
            f2 = mc(f) * f
            fs = ms(f) * f
            known = {
                "both maps come from F1 (parallel); GAM computes M_s from F2 = M_c(F1) ⊗ F1": ms(f) * mc(f) * f,
                "the spatial map came first; GAM is channel first, then spatial": mc(fs) * fs,
                "that is F2 only; multiply by M_s(F2) as well": f2,
                "that is the spatial branch alone; M_c(F1) ⊗ F1 comes first": fs,
                "the maps are added; GAM multiplies them in one after the other": (mc(f) + ms(f)) * f,
                "M_s(F2) multiplies F1; it multiplies F2 (F3 = M_s(F2) ⊗ F2)": ms(f2) * f,
            }
            bad = judge_tensor(got, expected, known, what=what)
        if bad is not None:
            return bad
    return passed(f"{what}: F2 = M_c(F1) ⊗ F1, F3 = M_s(F2) ⊗ F2, as in the paper.")
