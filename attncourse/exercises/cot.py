"""Checkers for the exercises of the CoT chapter (Part V): the Contextual Transformer block.

Above each checker, a comment lists the mistakes a learner typically makes on that exercise;
each one gets its own message (``tests/test_checkers_cot.py`` tries every one of them).
"""

from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F

from . import Feedback, check_number, judge_tensor, passed, run_answer

__all__ = ["check_coxt_parameters", "check_dilated_aggregation", "check_reach"]

# Exercise 1: the learnable numbers of the official CoXtLayer (JDAI-CV/CoTNet, models/cotnet.py, the
# layer of CoTNeXt) at C = 96, k = 3: K¹'s k × k convolution with groups 8 (CoT: 4); W_θ, W_δ and W_v
# grouped by dw_group = 2; everything else as CotLayer (W_δ and the fusion's two layers with biases,
# GroupNorm with C/8 groups and an affine, fusion width d = max(2C // 4, 32) = 48).
COXT_C = 96


def coxt_parameters(c: int, k: int = 3) -> int:
    """The CoXtLayer's learnable numbers (its batch norms' running statistics are buffers)."""
    kk, d = k * k, max(2 * c // 4, 32)
    return (kk * c * c // 8 + 2 * c  # K¹: k x k conv, groups 8; BN
            + (2 * c) * (c // 2) // 2 + 2 * (c // 2)  # W_θ, groups 2; BN
            + (c // 2) * (kk * c // 8) // 2 + kk * c // 8 + 2 * kk * c // 8  # W_δ, groups 2, bias; GroupNorm
            + c * c // 2 + 2 * c  # W_v, groups 2; BN
            + 2 * c  # the BN after the aggregation
            + c * d + d + 2 * d + d * 2 * c + 2 * c)  # fusion: C -> d (bias), BN, d -> 2C (bias)


# Typical mistakes:
#   - CoT's count at C = 96 (the CoXt groups ignored: K¹ with groups 4, W_θ, W_δ, W_v dense)
#   - K¹ with CoT's groups 4 instead of 8 (the rest right)
#   - W_θ or W_v counted dense (one of them; the same number, one message)
#   - W_δ counted dense
#   - W_δ's bias forgotten
#   - GroupNorm's affine (a scale and a shift per channel) forgotten
#   - the batch norms' running mean and variance counted (buffers)
#   - the fusion width taken as 32 (the minimum) instead of max(C/2, 32) = 48
#   - the fusion's biases forgotten
def check_coxt_parameters(answer: Any) -> Feedback:
    """Exercise 1: the learnable numbers of the official CoXtLayer at C = 96, k = 3."""
    c, kk, d = COXT_C, 9, 48
    right = coxt_parameters(c)
    cot = right + kk * c * c // 8 + c * c // 2 + (c // 2) * (kk * c // 8) // 2 + c * c // 2
    return check_number(
        answer,
        right,
        what="Learnable numbers of CoXtLayer(96, 3)",
        hints={
            cot: "That is CotLayer's count (ContextualTransformer2d(96)): CoXt's K¹ has groups 8, and its W_θ, W_δ "
            "and W_v are grouped by dw_group = 2, which halves each of them.",
            right + kk * c * c // 8: "K¹'s k × k convolution has groups=8 in CoXtLayer (CotLayer's has 4): "
            "k² C² / 8 weights.",
            right + c * c // 2: "One of the 1 × 1 convolutions W_θ (2C → C/2) or W_v (C → C) is counted dense; "
            "both have groups=dw_group=2, which halves their weights.",
            right + (c // 2) * (kk * c // 8) // 2: "W_δ (C/2 → k² C/8) is counted dense; it has groups=2 too.",
            right - kk * c // 8: "W_δ has a bias (the code leaves its default bias=True): k² C/8 more.",
            right - 2 * kk * c // 8: "GroupNorm has an affine scale and shift per channel: 2 k² C/8 more.",
            right + 2 * (3 * c + c // 2 + d): "A batch norm's running mean and variance are buffers, not learned: "
            "count only its scale and shift.",
            right - 3 * c * (d - 32) - 3 * (d - 32): "The fusion's hidden width is max(2C // 4, 32) = 48 at C = 96, "
            "not the minimum 32.",
            right - d - 2 * c: "The fusion's two 1 × 1 convolutions have biases (d and 2C).",
        },
    )


def _dilated(v: torch.Tensor, a: torch.Tensor, dilation: int, how: str = "right") -> torch.Tensor:
    """The local aggregation with dilated neighbours, and its typical wrong versions."""
    b, c, h, w = v.shape
    g, kk = a.shape[1], a.shape[2]
    k = int(round(kk**0.5))
    p = (k - 1) // 2
    d = 1 if how == "no dilation" else dilation
    if how == "transposed":
        a = a.reshape(b, g, k, k, h, w).transpose(2, 3).reshape(b, g, kk, h, w)
    if how == "flipped":
        a = a.flip(2)
    per_channel = a.repeat_interleave(c // g, dim=1) if how == "blocks" else a.repeat(1, c // g, 1, 1, 1)
    if how == "circular":
        cols = F.unfold(F.pad(v, (p * d,) * 4, mode="circular"), k, dilation=d)
    else:
        cols = F.unfold(v, k, dilation=d, padding=p * d)
    out = (cols.view(b, c, kk, h, w) * per_channel).sum(2)
    return out / kk if how == "mean" else out


# Exercise 2: dilated_aggregation(v, a, dilation): V ⊛ A with the neighbours of (h, w) at
# (h + (i - p) d, w + (j - p) d), zero outside the map (the kernel of aggregation_zeropad_dilate.py in the
# official repository; CoT uses d = 1). v: (B, C, H, W); a: (B, G, k², H, W), neighbour (i, j) at index
# i k + j, channel c with map c mod G. Test cases: B 3, C 12, G 4, k 3, H 5, W 7, d 2; B 2, C 6, G 3, k 5,
# H 7, W 6, d 2 (no two axes of one size within a case, and C/G > 1 so that the map assignment shows).
# Typical mistakes:
#   - the dilation ignored (d = 1): the chapter's aggregation
#   - the maps assigned to contiguous blocks of channels (c // (C/G)) instead of c mod G
#   - the neighbour index read as j k + i (rows and columns swapped)
#   - the offsets flipped, (p - i) d: a convolution's flipped kernel instead of the kernel's correlation
#   - circular padding (torch.roll) instead of zeros outside the map
#   - the k² products averaged instead of summed
#   - the padding p instead of p d: a smaller output (caught by the shape) or a crash in unfold
def check_dilated_aggregation(fn: Callable[..., Any]) -> Feedback:
    """Exercise 2: ``fn(v, a, dilation)`` is the dilated local aggregation of the CUDA kernel."""
    what = "Your dilated_aggregation"
    gen = torch.Generator().manual_seed(3)
    for b, c, g, k, h, w, d in [(3, 12, 4, 3, 5, 7, 2), (2, 6, 3, 5, 7, 6, 2)]:
        v = torch.randn(b, c, h, w, generator=gen, dtype=torch.float64)
        a = torch.randn(b, g, k * k, h, w, generator=gen, dtype=torch.float64)
        expected = _dilated(v, a, d)
        got, fb = run_answer(fn, v.clone(), a.clone(), d, what=what)
        if fb is not None:
            return fb
        known = {
            "that is the undilated aggregation: with dilation d the neighbour (i, j) of (h, w) is at "
            "(h + (i - p) d, w + (j - p) d), and the zero padding is p d": _dilated(v, a, d, "no dilation"),
            "the weight maps are assigned to contiguous blocks of channels; the kernel gives channel c the map "
            "c mod G (c % weight_channels), so channels c, c + G, c + 2G, ... share one": _dilated(v, a, d, "blocks"),
            "rows and columns of the k × k weights are swapped: neighbour (i, j), i the row offset, is at index "
            "i k + j": _dilated(v, a, d, "transposed"),
            "the offsets are flipped, (p - i) d as in a convolution's flipped kernel; the kernel reads "
            "h_in = h - p d + i d, the weight index i k + j": _dilated(v, a, d, "flipped"),
            "the map wraps round its border (circular padding or torch.roll); outside the map the kernel "
            "adds nothing (zero padding)": _dilated(v, a, d, "circular"),
            "the k² products are averaged; the aggregation sums them (the weights are not normalised to sum "
            "to 1)": _dilated(v, a, d, "mean"),
        }
        fb = judge_tensor(got, expected, known, what=what)
        if fb is not None:
            return fb
    return passed(f"{what} reads the neighbours d apart, with zero padding p d, and weighs channel c with map "
                  "c mod G.")


# Exercise 3: two CoT blocks stacked, k = 3 then k = 5, on a 20 × 20 map; both blocks' GroupNorm statistics
# and fusion weights held fixed. How many input positions can change the output at (10, 10)? A block reads
# radius p = (k - 1) / 2 (K¹, A and V ⊛ A each read the k × k neighbourhood; A reads K¹ at the position
# only), so the stack reads radius 1 + 2 = 3: 7 × 7 = 49.
REACH_K, REACH_SIDE = (3, 5), 20


# Typical mistakes:
#   - a block counted as radius 2p (A's K¹ and the aggregation each add p): 13 × 13 = 169
#   - the side k₁ + k₂ + 1 = 9 (81) or k₁ + k₂ = 8 (64) instead of k₁ + k₂ - 1 = 7
#   - the areas added (9 + 25 = 34) or multiplied (9 × 25 = 225)
#   - one block only (25, the last; 9, the first)
#   - the statistics left live: every position of the map (400)
#   - the side given, not the number of positions (7)
def check_reach(answer: Any) -> Feedback:
    """Exercise 3: input positions that reach the output at (10, 10) of two stacked CoT blocks (k = 3,
    5) on a 20 × 20 map, with the GroupNorm statistics and the fusion weights held fixed."""
    right = 7 * 7
    return check_number(
        answer,
        right,
        what="Positions that reach (10, 10)",
        hints={
            13 * 13: "Each block reads only radius p = (k - 1) / 2, not 2p: A at a position comes from 1 × 1 "
            "convolutions of the query and K¹ *at that position*, so K¹'s reach and the aggregation's do not add.",
            9 * 9: "The radii add, 1 + 2 = 3, so the side is 2 · 3 + 1 = 7 (k₁ + k₂ - 1), not 9.",
            8 * 8: "A reach centred on a position has an odd side: 2 (p₁ + p₂) + 1 = 7, not k₁ + k₂ = 8.",
            9 + 25: "The two neighbourhoods are not added: every position the second block reads was itself "
            "computed from its own 3 × 3 neighbourhood, so the radii add.",
            9 * 25: "The areas do not multiply: the neighbourhoods overlap; the radii add, 1 + 2.",
            25: "That is the second block alone; each of the 25 positions it reads depends on its own 3 × 3 "
            "neighbourhood of the input.",
            9: "That is the first block alone; the second block reads a 5 × 5 neighbourhood of the first one's output.",
            20 * 20: "That is every position, true with the statistics live (GroupNorm's mean and variance and the "
            "fusion's pool run over the whole map); here they are held fixed.",
            7: "7 is the side of the square; the question asks how many positions it holds.",
        },
    )
