"""Checkers for the exercises of the Shuffle Attention (SA-Net) chapter (Part II).

Above each checker, a comment lists the mistakes a learner typically makes on that exercise;
each one gets its own message (``tests/test_checkers_shuffle.py`` tries every one of them).
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from . import Feedback, failed, is_unanswered, judge_tensor, not_attempted, passed, run_answer

__all__ = ["check_follow_channel", "check_shuffle_weight", "check_spatial_half"]


def _source(C: int, groups: int = 2) -> torch.Tensor:
    """The channel shuffle with ``groups`` groups: output channel o reads input channel _source(C)[o]."""
    return torch.arange(C).reshape(groups, C // groups).T.flatten()


def _half(channel: int, C: int, G: int) -> str:
    """Which half of its group a channel is in, in the layout (g t k)."""
    K = C // (2 * G)
    return ["channel", "spatial"][channel // K % 2]


# Exercise 1, ShuffleAttention(24, groups=3): output channel 9 depends on input channel 16, which the channel
# half gated (group 2, t = 0, k = 0). Answer: (16, "channel").
# Typical mistakes:
#   - the shuffle left out (output 9 is input 9)
#   - the inverse permutation (the transposed pattern): input 18
#   - ShuffleNet's shuffle with G = 3 groups instead of SA-Net's 2: input 3
#   - counting from 1: 17
#   - the right channel, but the halves taken over the whole channel axis, (t g k): channel 16 >= C/2 read as
#     "spatial"; SA-Net halves each group
#   - not a (channel, half) pair; a half that is neither "channel" nor "spatial"
def check_follow_channel(answer: Any) -> Feedback:
    """Exercise 1: ``(input channel, half)`` for output channel 9 of ShuffleAttention(24, groups=3)."""
    C, G, out = 24, 3, 9
    what = f"Output channel {out} of ShuffleAttention({C}, groups={G})"
    if is_unanswered(answer) or (isinstance(answer, (tuple, list)) and any(is_unanswered(a) for a in answer)):
        return not_attempted(what)
    if not (isinstance(answer, (tuple, list)) and len(answer) == 2):
        return failed(f"{what}: expected a tuple (input channel, half), such as (5, \"spatial\"), got {answer!r}.")
    channel, half = answer
    try:
        channel = int(channel)
    except (TypeError, ValueError):
        return failed(f"{what}: the input channel should be a number, got {channel!r}.")
    right = int(_source(C)[out])
    if channel != right:
        hints = {
            out: "that is the channel before the shuffle, in the same place; the shuffle (4) moves it: output "
            "channel 2q + p reads input channel p·C/2 + q",
            int(torch.argsort(_source(C))[out]): "that is the inverse permutation (where input channel 9 goes, "
            "not where output channel 9 comes from): output channel 2q + p reads input channel p·C/2 + q",
            int(_source(C, G)[out]): "that is a shuffle with G = 3 groups, as ShuffleNet's with its group count; "
            "SA-Net shuffles with 2 groups, the two halves of the channel axis",
            right + 1: "the chapter counts channels from 0, as PyTorch does",
        }
        hint = hints.get(channel, "write 9 = 2q + p (q = 4, p = 1) and use equation (4)")
        return failed(f"{what}: input channel {channel} is not right: {hint}.")
    if not isinstance(half, str) or half.lower().replace("half", "").strip() not in ("channel", "spatial"):
        return failed(f"{what}: channel {channel} is right; name the half \"channel\" or \"spatial\", got {half!r}.")
    half = half.lower().replace("half", "").strip()
    if half != _half(right, C, G):
        return failed(f"{what}: channel {channel} is right, but it is in the channel half. SA-Net halves each "
                      f"group, not the whole channel axis: with G = {G} groups of {C // G} channels, channel "
                      f"{channel} is (g, t, k) = ({channel // (C // G)}, {channel // (C // (2 * G)) % 2}, "
                      f"{channel % (C // (2 * G))}), t = 0.")
    return passed(f"{what}: input channel {channel}, gated by the {half} half.")


# Exercise 2, shuffle_weight(C): the (C, C, 1, 1) weight of a 1×1 convolution, no bias, that performs SA-Net's
# channel shuffle: row o has a single 1, in column p·C/2 + q for o = 2q + p.
# Typical mistakes:
#   - the transposed matrix: the inverse permutation (a shuffle with C/2 groups)
#   - the identity (no shuffle)
#   - a (C, C) matrix, without the two trailing 1×1 axes of a conv weight
#   - the order of the channels reversed (an anti-diagonal)
#   - the two halves swapped as blocks, not interleaved
def check_shuffle_weight(fn: Callable[..., Any]) -> Feedback:
    """Exercise 2: ``fn(C)`` is a (C, C, 1, 1) conv weight that shuffles the channels as SA-Net does."""
    what = "Your shuffle_weight"
    for C in (12, 10):
        got, fb = run_answer(fn, C, what=what)
        if fb is not None:
            return fb
        expected = torch.zeros(C, C, dtype=torch.float64)
        expected[torch.arange(C), _source(C)] = 1.0
        if isinstance(got, torch.Tensor):
            got = got.detach().to(torch.float64)
            if tuple(got.shape) == (C, C) and torch.equal(got, expected):
                return failed(f"{what}: the right matrix, but a conv weight has four axes, (out, in, kh, kw): "
                              f"shape ({C}, {C}, 1, 1), e.g. rearrange(w, 'o i -> o i 1 1').")
        expected = expected[:, :, None, None]
        swap = torch.cat([torch.eye(C, dtype=torch.float64)[C // 2:], torch.eye(C, dtype=torch.float64)[:C // 2]])
        known = {
            "that is the transposed matrix, the inverse permutation: row o (output channel o) must hold its 1 in the "
            "column of the input channel it reads, p·C/2 + q for o = 2q + p": expected.transpose(0, 1),
            "that is the identity: no shuffle": torch.eye(C, dtype=torch.float64)[:, :, None, None],
            "that reverses the channel order; the shuffle interleaves the two halves": torch.eye(
                C, dtype=torch.float64).flip(1)[:, :, None, None],
            "that swaps the two halves as blocks; the shuffle interleaves them channel by channel":
                swap[:, :, None, None],
        }
        bad = judge_tensor(got, expected, known, what=what)
        if bad is not None:
            return bad
    return passed(f"{what} is a permutation matrix: a 1×1 convolution that shuffles, so the next layer can absorb "
                  "the shuffle into its own weights.")


def _shared(x2: torch.Tensor, w2: torch.Tensor, b2: torch.Tensor, *, pool: str = "mean", dims=(2, 3), eps: float = 1e-5,
            unbiased: bool = False, divide: bool = True, standardise: bool = True, gate_only: bool = False,
            sigmoid: bool = True, per_channel: bool = False, global_mean: bool = False) -> torch.Tensor:
    """The shared-map spatial half, right or with one mistake."""
    if per_channel:
        m = x2
    else:
        m = x2.mean(1, keepdim=True) if pool == "mean" else x2.amax(1, keepdim=True)
    if global_mean:
        z = x2.mean((2, 3), keepdim=True)
    elif standardise:
        mu = m.mean(dim=dims, keepdim=True)
        z = m - mu
        if divide:
            z = z / torch.sqrt(m.var(dim=dims, keepdim=True, unbiased=unbiased) + eps)
    else:
        z = m
    a = w2[:, None, None] * z + b2[:, None, None]
    a = torch.sigmoid(a) if sigmoid else a
    return a if gate_only else a * x2


# Exercise 3, spatial_half_shared(x2, w2, b2): one map per group, m = the mean of the half's K channels at every
# pixel, standardised over its own H × W (biased variance, eps 1e-5); channel k gated by σ(w2_k · m̂ + b2_k).
# Typical mistakes:
#   - SA's own spatial half: each channel standardised on its own (no look across channels)
#   - the mean map not standardised
#   - centred but not divided by its standard deviation
#   - batch statistics (mean and variance over N, H, W, as BatchNorm)
#   - the unbiased variance (divides by HW - 1; GroupNorm divides by HW)
#   - eps forgotten (only visible for a map of small variance)
#   - the maximum over the channels instead of the mean
#   - the channel half's formula: the global mean of each channel in place of the map
#   - the gate σ(·) returned, not the gated x2 / the sigmoid forgotten
def check_spatial_half(fn: Callable[..., Any]) -> Feedback:
    """Exercise 3: ``fn(x2, w2, b2)`` returns σ(w2 · std(mean_k x2) + b2) · x2, the standardisation over H × W."""
    what = "Your spatial_half_shared"
    g = torch.Generator().manual_seed(16)
    for shape, scale in [((3, 4, 5, 6), 1.0), ((5, 3, 6, 2), 0.003)]:  # (N, K, H, W): no two sizes equal
        x2 = scale * torch.randn(shape, generator=g, dtype=torch.float64) + torch.randn(
            shape[:2] + (1, 1), generator=g, dtype=torch.float64)
        w2 = torch.randn(shape[1], generator=g, dtype=torch.float64)
        b2 = torch.randn(shape[1], generator=g, dtype=torch.float64)
        got, fb = run_answer(fn, x2.clone(), w2.clone(), b2.clone(), what=what)
        if fb is not None:
            return fb
        known = {
            "that is SA's own spatial half: each channel standardised on its own. The variant standardises one "
            "map per group, the mean over the half's K channels at every pixel": _shared(x2, w2, b2, per_channel=True),
            "the mean map is not standardised: subtract its mean over H × W and divide by its standard deviation":
                _shared(x2, w2, b2, standardise=False),
            "the mean map is centred but not divided by its standard deviation": _shared(x2, w2, b2, divide=False),
            "those are batch statistics (mean and variance over N, H and W, as BatchNorm); standardise each image's "
            "map over its own H × W": _shared(x2, w2, b2, dims=(0, 2, 3)),
            "the variance is the unbiased one (divided by HW − 1); GroupNorm divides by HW (unbiased=False)":
                _shared(x2, w2, b2, unbiased=True),
            "ε is missing under the square root: divide by √(var + 1e-5), which matters for a map of small variance"
            if scale < 1 else "": _shared(x2, w2, b2, eps=0.0) if scale < 1 else None,
            "the map is the maximum over the channels; the variant averages them": _shared(x2, w2, b2, pool="max"),
            "that is the channel half's formula, σ(W · GAP(X) + b) · X; the spatial half gates every pixel with the "
            "standardised mean map": _shared(x2, w2, b2, global_mean=True),
            "that is the gate σ(w2 · m̂ + b2); multiply it by x2": _shared(x2, w2, b2, gate_only=True),
            "the sigmoid is missing: the gate is σ(w2 · m̂ + b2)": _shared(x2, w2, b2, sigmoid=False),
        }
        known = {m: t for m, t in known.items() if m}
        bad = judge_tensor(got, _shared(x2, w2, b2), known, what=what)
        if bad is not None:
            return bad
    return passed(f"{what} gates every channel of the half with one standardised map per group: a spatial gate "
                  "that looks across the half's channels.")
