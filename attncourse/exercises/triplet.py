"""Checkers for the exercises of the triplet chapter (Part II).

Above each checker, a comment lists the mistakes a learner typically makes on that exercise;
each one gets its own message (``tests/test_checkers_triplet.py`` tries every one of them).
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from einops import rearrange

from . import Feedback, check_number, failed, is_unanswered, judge_tensor, not_attempted, passed, run_answer

__all__ = ["check_triplet_parameters", "check_rotation", "check_z_pool", "check_gate_sizes"]


def _params(k: int, branches: int) -> int:
    return branches * (2 * k * k + 2)


def _variant(k_rotated: int = 3, k_spatial: int = 7, *, rotated: int = 2, spatial: int = 1, bn: int = 2,
             maps: int = 2, bias: int = 0) -> int:
    """Parameters of a Triplet variant with ``rotated`` branches of kernel ``k_rotated`` and ``spatial``
    of ``k_spatial``; each branch a k x k conv over ``maps`` maps (+ ``bias``) and ``bn`` numbers of batch norm."""
    return rotated * (maps * k_rotated**2 + bias + bn) + spatial * (maps * k_spatial**2 + bias + bn)


# Exercise 1, a variant with k = 3 in the two rotated branches (hc, cw) and k = 7 in branch 3 (hw), at C = 256:
# 2 (2·3² + 2) + (2·7² + 2) = 140.
# Typical mistakes:
#   - one k for all three branches: k = 7 (the module's default, 300) or k = 3 (60)
#   - the kernels the other way round: k = 7 in the rotated branches, 3 in branch 3
#   - a branch left out: the rotated branches only (branch 3 forgotten), or only one rotated branch
#   - the batch norms forgotten (only the convolutions' 2k² weights)
#   - the batch norms' running mean and variance counted, with or without the batch counter: buffers
#   - a bias on the convolutions (the official BasicConv has bias=False)
#   - only γ counted for each batch norm (β forgotten)
#   - one input map for the convolution (k², not 2k²): the Z-pool gives two maps, max and mean
#   - the convolution reading C channels instead of the two Z-pool maps (a count that grows with C)
def check_triplet_parameters(answer: Any) -> Feedback:
    """Exercise 1: parameters of a Triplet variant with k = 3 in hc and cw, k = 7 in hw, at C = 256."""
    C = 256
    return check_number(
        answer,
        _variant(),
        what="Parameters of the variant (k = 3 in hc and cw, k = 7 in hw)",
        hints={
            _variant(7, 7): "That is k = 7 in all three branches, the module's default (300); here the two rotated "
            "branches have k = 3.",
            _variant(3, 3): "That is k = 3 in all three branches; branch 3, the H × W gate, keeps k = 7.",
            _variant(7, 3): "The kernels are the other way round: k = 3 in the two rotated branches (hc, cw), k = 7 "
            "in branch 3 (hw).",
            _variant(spatial=0): "That is the two rotated branches only; branch 3 (k = 7) adds 2·7² + 2.",
            _variant(rotated=1): "One rotated branch is missing: there are two, hc and cw, each with k = 3.",
            _variant(bn=0): "Only the convolutions are counted; each of the three batch norms adds its γ and β.",
            _variant(bn=4): "That counts the batch norms' running mean and variance: they are buffers, updated by "
            "training but not learned, and count_parameters leaves them out.",
            _variant(bn=5): "That counts the batch norms' buffers (running mean, running variance, batch counter): "
            "they are not parameters.",
            _variant(bias=1): "The convolutions have no bias (bias=False in the official code: the batch norm's β "
            "that follows would make it redundant).",
            _variant(bn=1): "Each batch norm learns two numbers, γ and β; one is missing.",
            _variant(maps=1): "The convolution reads two maps, the Z-pool's max and mean: 2k² weights, not k².",
            _variant(maps=C): "The convolution does not read the C channels: it reads the Z-pool's two maps, so "
            "the count does not depend on C.",
        },
    )


# Exercise 2, branch 2's rotation for a channels-last input "b h w c" (as TensorFlow or JAX models store it):
# rotate to the paper's χ̂2, (B, H, C, W), and back to "b h w c", as two einops patterns.
# Typical mistakes:
#   - the channels-first pattern copied ("b c h w -> b h c w"): on a "b h w c" tensor it gives (B, W, H, C),
#     branch 1's layout (W leads); the same result as writing branch 1's rotation
#   - no rotation: a channels-last tensor already leads with H, but its plane is W × C, the transpose of the
#     paper's C × W map
#   - a conversion to channels-first, (B, C, H, W): branch 3's input
#   - the batch axis moved
#   - axes merged or split (not a permutation)
#   - a pattern einops refuses (a typo, axes that do not match on both sides)
#   - back goes to channels-first instead of back to "b h w c"
#   - back returns the rotated tensor unchanged, or otherwise does not undo rotate
def _apply(pattern: Any, x: torch.Tensor, what: str) -> tuple[torch.Tensor | None, Feedback | None]:
    if not isinstance(pattern, str):
        return None, failed(f"{what} should be an einops pattern string such as \"b h w c -> b w h c\", "
                            f"got {type(pattern).__name__}.")
    try:
        return rearrange(x, pattern), None
    except Exception as err:  # einops' own message says which axis is wrong
        lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
        first = lines[-1] if lines else type(err).__name__  # einops' last line names the offending axes
        return None, failed(f"einops could not apply {what} {pattern!r} to a (B, H, W, C) tensor: {first}")


def check_rotation(answer: Any) -> Feedback:
    """Exercise 2: ``answer = (rotate, back)``, two einops patterns: branch 2's rotation of a
    channels-last tensor ``(B, H, W, C)`` to χ̂2 = ``(B, H, C, W)``, and the way back to ``(B, H, W, C)``."""
    what = "Your patterns"
    if is_unanswered(answer) or (isinstance(answer, (tuple, list)) and any(is_unanswered(a) for a in answer)):
        return not_attempted(what)
    if not isinstance(answer, (tuple, list)) or len(answer) != 2:
        return failed(f"{what}: expected two patterns, (rotate, back), got {answer!r}.")
    rotate, back = answer
    x = torch.arange(2 * 4 * 5 * 3).reshape(2, 4, 5, 3)  # channels-last: b=2, h=4, w=5, c=3, every size different
    r, fb = _apply(rotate, x, "rotate")
    if fb is not None:
        return fb
    right = x.permute(0, 1, 3, 2)  # (B, H, C, W)
    if r.dim() != 4:
        return failed(f"{what}: rotate gives a tensor with {r.dim()} axes; a rotation only reorders the four axes "
                      "(no axes merged or split).")
    if not torch.equal(r, right):
        if torch.equal(r, x.permute(0, 2, 1, 3)):
            return failed(f"{what}: rotate gives (B, W, H, C): W leads, the layout of branch 1's rotated tensor. "
                          "If you wrote the channels-first pattern \"b c h w -> b h c w\", einops read the names "
                          "as positions: here the input is channels-last, (B, H, W, C).")
        if torch.equal(r, x):
            return failed(f"{what}: rotate leaves the tensor as it is. A channels-last tensor already leads with H, "
                          "but its plane is W × C, the transpose of the paper's C × W map: swap W and C.")
        if torch.equal(r, x.permute(0, 3, 1, 2)):
            return failed(f"{what}: rotate converts to channels-first, (B, C, H, W): C leads, branch 3's input. "
                          "Branch 2 needs H in front and a C × W plane.")
        if r.shape[0] != 2:  # every size differs, so a first axis of size 2 is the batch
            return failed(f"{what}: rotate moves the batch axis; it stays first, only H, W and C trade places.")
        return failed(f"{what}: rotate gives shape {tuple(r.shape)} for (B, H, W, C) = (2, 4, 5, 3); branch 2's "
                      "rotated tensor is (B, H, C, W) = (2, 4, 3, 5).")
    y, fb = _apply(back, r, "back")
    if fb is not None:
        return fb
    if not torch.equal(y, x):
        if torch.equal(y, r):
            return failed(f"{what}: back returns the rotated tensor unchanged; it must put W before C again.")
        if torch.equal(y, x.permute(0, 3, 1, 2)):
            return failed(f"{what}: back gives channels-first (B, C, H, W); the input was channels-last, and the "
                          "way back must return (B, H, W, C).")
        return failed(f"{what}: back does not undo rotate: back(rotate(x)) has shape {tuple(y.shape)}, not "
                      "x's (2, 4, 5, 3). Swapping two axes is its own inverse: swap C and W again.")
    return passed(f"{what}: {rotate!r} keeps H in front (it is pooled away) and leaves a C × W plane; {back!r} "
                  "swaps C and W back.")


# Exercise 3, z_pool_cw(t): branch 2's Z-pool straight from a channels-last tensor t of shape (B, H, W, C):
# [max; mean] over H, laid out as the C x W plane, shape (B, 2, C, W).
# Typical mistakes:
#   - the plane left as the input has it, W × C: (B, 2, W, C), the transpose of branch 2's map
#   - the order [mean; max] (the official ZPool and the module put max first; the conv's weights are tied to it)
#   - the sum instead of the mean
#   - only the max, or only the mean (one map)
#   - pooled over W, branch 1's Z-pool; also what the channels-first pattern "b c h w -> b c w" does to a
#     channels-last tensor (einops reads names as positions)
#   - pooled over C, branch 3's Z-pool
#   - the two maps stacked on a new first axis, (2, B, C, W), or on the last, (B, C, W, 2)
#   - pooled over all positions instead (CBAM's channel descriptors, (B, 2, C))
def _z(t: torch.Tensor, *, order=("max", "mean"), dim: int = 1, stack: int = 1, mean=None,
       layout: str = "b c w") -> torch.Tensor:
    """[max; mean] of the channels-last ``t`` along ``dim``, each map rearranged to ``layout``."""
    mean = mean or (lambda x, d: x.mean(d))
    rest = [a for a in "bhwc" if a != "bhwc"[dim]]
    maps = {"max": t.amax(dim), "mean": mean(t, dim)}
    maps = {k: rearrange(v, f"{' '.join(rest)} -> {layout}") for k, v in maps.items()}
    return torch.stack([maps[o] for o in order], dim=stack)


def check_z_pool(fn: Callable[..., Any]) -> Feedback:
    """Exercise 3: ``fn(t)`` maps a channels-last (B, H, W, C) tensor to branch 2's Z-pool (B, 2, C, W)."""
    what = "Your z_pool_cw"
    g = torch.Generator().manual_seed(9)
    for shape in [(3, 4, 5, 6), (7, 5, 6, 4)]:  # (B, H, W, C): no two sizes equal, none of them 2
        t = torch.randn(shape, generator=g, dtype=torch.float64)
        got, fb = run_answer(fn, t.clone(), what=what)
        if fb is not None:
            return fb
        expected = _z(t)
        known = {
            "the plane is W × C, as the channels-last input has it; branch 2's map is C × W: put C before W "
            "(\"b h w c -> b c w\")": _z(t, layout="b w c"),
            "the maps come as [mean; max]; the official ZPool and the module put the max first, and a trained "
            "convolution's two input channels are tied to that order": _z(t, order=("mean", "max")),
            "the second map is a sum over H; the Z-pool takes the mean (a sum grows with the size of the pooled "
            "axis)": _z(t, mean=lambda x, d: x.sum(d)),
            "only the max map: the Z-pool keeps two maps, [max; mean], stacked on axis 1": _z(t)[:, :1],
            "only the mean map: the Z-pool keeps two maps, [max; mean], stacked on axis 1": _z(t)[:, 1:],
            "that pools over W, branch 1's Z-pool (its plane is H × C); branch 2 pools H. If you wrote the "
            "channels-first pattern \"b c h w -> b c w\", einops read the names as positions: here the input is "
            "(B, H, W, C)": _z(t, dim=2, layout="b h c"),
            "that pools over the channels, branch 3's Z-pool (its plane is H × W); branch 2 pools H and keeps "
            "a C × W plane": _z(t, dim=3, layout="b h w"),
            "the two maps are stacked on a new first axis, (2, B, C, W); stack them on axis 1, as two channels for "
            "the convolution: (B, 2, C, W)": _z(t, stack=0),
            "the two maps are stacked on the last axis, (B, C, W, 2); stack them on axis 1, as two channels for "
            "the convolution: (B, 2, C, W)": _z(t, stack=3),
            "that pools over all positions, CBAM's channel descriptors; the Z-pool pools one axis, H, and keeps "
            "the C × W plane": torch.stack([t.amax((1, 2)), t.mean((1, 2))], 1),
        }
        bad = judge_tensor(got, expected, known, what=what)
        if bad is not None:
            return bad
    return passed(f"{what} gives [max; mean] over H as two C × W maps per sample: branch 2's Z-pool.")


# Exercise 4, how many numbers the three gates of TripletAttention(64) hold for input (1, 64, 14, 10).
# Typical mistakes:
#   - three H × W maps (as if every branch were CBAM's spatial gate)
#   - the full C × H × W product (the gate the output is multiplied by, after broadcasting)
#   - three times that
#   - one branch's map only (H × C, C × W or H × W)
#   - the H × W map forgotten (the two rotated maps only: what no_spatial=True leaves), 1,536
#   - everything counted twice (e.g. the Z-pool's two maps per branch, the gate's input, for its one map), 3,352
#   - H and W swapped in one rotated map: branch 2's map taken as C × H (1,932), or branch 1's as W × C (1,420)
#   - (H and W exchanged in both rotated maps gives the same total: not a mistake the count can show)
def check_gate_sizes(answer: Any) -> Feedback:
    """Exercise 4: numbers in the three gates for input (1, 64, 14, 10)."""
    C, H, W = 64, 14, 10
    return check_number(
        answer,
        H * C + C * W + H * W,
        what="Numbers in the three gates",
        hints={
            3 * H * W: "That is three H × W maps; only branch 3's map covers (H, W). Branch 1's covers (H, C), "
            "branch 2's (C, W).",
            C * H * W: "That is the broadcast gate that multiplies χ (one value per channel and position); the "
            "three maps themselves are smaller: each covers two of the three axes.",
            3 * C * H * W: "That counts each map after broadcasting to C × H × W; each map covers two axes only.",
            H * C: "That is branch 1's (H, C) map only; add branch 2's (C, W) and branch 3's (H, W).",
            C * W: "That is branch 2's (C, W) map only; add branch 1's (H, C) and branch 3's (H, W).",
            H * W: "That is branch 3's (H, W) map only; add the two rotated branches' (H, C) and (C, W) maps.",
            H * C + C * W: "That is the two rotated branches' maps only (what no_spatial=True leaves); branch 3's "
            "H × W map, 14 · 10, is missing.",
            2 * (H * C + C * W + H * W): "That is twice the answer: each gate holds one map, (1, 1, P, Q). The "
            "Z-pool's two maps [max; mean] are the convolution's input, not the gate.",
            2 * H * C + H * W: "H and W are swapped in branch 2's map: it covers C × W = 64 · 10 (H is what branch 2 "
            "pools), not C × H.",
            2 * C * W + H * W: "H and W are swapped in branch 1's map: it covers H × C = 14 · 64 (W is what branch 1 "
            "pools), not W × C.",
        },
    )
