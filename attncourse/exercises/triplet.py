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


# Exercise 1, parameters of TripletAttention(256, kernel_size=5, no_spatial=True): 2 (2k² + 2) = 104.
# Typical mistakes:
#   - three branches counted: no_spatial drops branch 3 (the (H, W) one)
#   - the default k = 7 used instead of 5
#   - the batch norms forgotten (only the convolutions' 2k² weights)
#   - the batch norms' running mean and variance (and the batch counter) counted: buffers, not parameters
#   - a bias on the convolutions (the official BasicConv has bias=False)
#   - only γ counted for each batch norm (β forgotten)
#   - one input map for the convolution (k², not 2k²): the Z-pool gives two maps, max and mean
#   - the convolution reading C channels instead of the two Z-pool maps (a count that grows with C)
def check_triplet_parameters(answer: Any) -> Feedback:
    """Exercise 1: parameters of ``TripletAttention(256, kernel_size=5, no_spatial=True)``."""
    k, C = 5, 256
    right = _params(k, 2)
    return check_number(
        answer,
        right,
        what="Parameters of TripletAttention(256, kernel_size=5, no_spatial=True)",
        hints={
            _params(k, 3): "no_spatial=True drops branch 3 (the (H, W) gate): two branches are left.",
            _params(7, 2): "That is k = 7, the default; this module has kernel_size=5.",
            2 * (2 * k * k): "Only the convolutions are counted; each branch's batch norm adds its γ and β.",
            2 * (2 * k * k + 4): "That counts the batch norms' running mean and variance: they are buffers, "
            "updated by training but not learned, and count_parameters leaves them out.",
            2 * (2 * k * k + 5): "That counts the batch norms' buffers (running mean, running variance, batch "
            "counter): they are not parameters.",
            2 * (2 * k * k + 1 + 2): "The convolutions have no bias (bias=False in the official code: the batch "
            "norm's β that follows would make it redundant).",
            2 * (2 * k * k + 1): "Each batch norm learns two numbers, γ and β; one is missing.",
            2 * (k * k + 2): "The convolution reads two maps, the Z-pool's max and mean: 2k² weights, not k².",
            2 * (k * k * C + 2): "The convolution does not read the C channels: it reads the Z-pool's two maps, so "
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


# Exercise 3, z_pool(x): [max; mean] along the leading (non-batch) axis, shape (B, 2, P, Q).
# Typical mistakes:
#   - the order [mean; max] (the official ZPool and the module put max first; the conv's weights are tied to it)
#   - the sum instead of the mean
#   - only the max, or only the mean (one map)
#   - pooled along another axis (H instead of the leading one)
#   - the two maps stacked on a new first axis, (2, B, P, Q)
#   - pooled over the positions instead (CBAM's channel descriptors, (B, 2, L))
def _z(x: torch.Tensor, *, order=("max", "mean"), dim: int = 1, stack: int = 1, mean=None) -> torch.Tensor:
    mean = mean or (lambda t, d: t.mean(d))
    maps = {"max": x.amax(dim), "mean": mean(x, dim)}
    return torch.stack([maps[o] for o in order], dim=stack)


def check_z_pool(fn: Callable[..., Any]) -> Feedback:
    """Exercise 3: ``fn(x)`` maps (B, L, P, Q) to the Z-pool (B, 2, P, Q) = [max; mean] along L."""
    what = "Your z_pool"
    g = torch.Generator().manual_seed(9)
    for shape in [(3, 4, 5, 6), (2, 7, 3, 4)]:
        x = torch.randn(shape, generator=g, dtype=torch.float64)
        got, fb = run_answer(fn, x.clone(), what=what)
        if fb is not None:
            return fb
        expected = _z(x)
        known = {
            "the maps come as [mean; max]; the official ZPool and the module put the max first, and a trained "
            "convolution's two input channels are tied to that order": _z(x, order=("mean", "max")),
            "the second map is a sum over the leading axis; the Z-pool takes the mean (a sum grows with the "
            "number of channels)": _z(x, mean=lambda t, d: t.sum(d)),
            "only the max map: the Z-pool keeps two maps, [max; mean], stacked on axis 1": x.amax(1, keepdim=True),
            "only the mean map: the Z-pool keeps two maps, [max; mean], stacked on axis 1": x.mean(1, keepdim=True),
            "that pools along the height (axis 2); the Z-pool pools the leading axis, axis 1, the one the "
            "rotation brought to the front": _z(x, dim=2),
            "that pools along the width (axis 3); the Z-pool pools the leading axis, axis 1": _z(x, dim=3),
            "the two maps are stacked on a new first axis, (2, B, P, Q); stack them on axis 1, as two channels for "
            "the convolution: (B, 2, P, Q)": _z(x, stack=0),
            "that pools over the positions, CBAM's channel descriptors; the Z-pool pools across the leading axis "
            "and keeps the P × Q plane": torch.stack([x.amax((2, 3)), x.mean((2, 3))], 1),
        }
        bad = judge_tensor(got, expected, known, what=what)
        if bad is not None:
            return bad
    return passed(f"{what} gives [max; mean] along the leading axis: two P × Q maps per sample.")


# Exercise 4, how many numbers the three gates of TripletAttention(64) hold for input (1, 64, 14, 10).
# Typical mistakes:
#   - three H × W maps (as if every branch were CBAM's spatial gate)
#   - the full C × H × W product (the gate the output is multiplied by, after broadcasting)
#   - three times that
#   - one branch's map only (H × C, C × W or H × W)
#   - H and W exchanged in the two rotated maps (same total: not a mistake that changes the count)
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
        },
    )
