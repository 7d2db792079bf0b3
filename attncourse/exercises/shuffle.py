"""Checkers for the exercises of the Shuffle Attention (SA-Net) chapter (Part II).

Above each checker, a comment lists the mistakes a learner typically makes on that exercise;
each one gets its own message (``tests/test_checkers_shuffle.py`` tries every one of them).
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from . import Feedback, check_number, failed, judge_tensor, passed, run_answer

__all__ = ["check_resnet101_parameters", "check_channel_shuffle", "check_spatial_half"]

# ResNet-101's bottlenecks: output widths and block counts per stage.
_RESNET101 = [(256, 3), (512, 4), (1024, 23), (2048, 3)]
_RESNET50 = [(256, 3), (512, 4), (1024, 6), (2048, 3)]


def _total(stages, per_module) -> int:
    return sum(n * per_module(c) for c, n in stages)


# Exercise 1, the parameters that SA modules (official code: G = 64, GroupNorm with its affine)
# add to ResNet-101, one module per bottleneck.
# Typical mistakes:
#   - GroupNorm's affine γ, β forgotten (2C/G per module: the paper's four vectors only)
#   - ResNet-50's block counts (3, 4, 6, 3) instead of ResNet-101's (3, 4, 23, 3)
#   - one module per stage instead of one per bottleneck
#   - every group with its own weights (G times too many): the groups share them
#   - the vectors sized C/G (a whole group) instead of C/2G (a half)
#   - C/2G per vector but only one vector per half (W only, no b): C/G per module
def check_resnet101_parameters(answer: Any) -> Feedback:
    """Exercise 1: parameters of all SA modules in an SA-ResNet-101 (G = 64, the official code's count)."""
    G = 64
    right = _total(_RESNET101, lambda c: 3 * c // G)
    return check_number(
        answer,
        right,
        what="Parameters of SA-ResNet-101's attention modules",
        hints={
            _total(_RESNET101, lambda c: 2 * c // G): "That counts W1, b1, W2, b2 only (2C/G per module). The official "
            "code's nn.GroupNorm(C/2G, C/2G) has its own affine weight and bias, C/2G each: 3C/G per module.",
            _total(_RESNET50, lambda c: 3 * c // G): "That is ResNet-50 (3, 4, 6, 3 bottlenecks); ResNet-101's third "
            "stage has 23 bottlenecks, not 6.",
            sum(3 * c // G for c, _ in _RESNET101): "That is one module per stage; SA-Net puts one in every bottleneck "
            "(3 + 4 + 23 + 3 = 33 of them).",
            G * right: "That gives every group its own weights; the G groups are folded into the batch axis and share "
            "one set of C/2G-long vectors.",
            _total(_RESNET101, lambda c: 6 * c // G): "Each vector has C/2G entries (one per channel of a half), not "
            "C/G (a whole group): that doubles the count.",
            _total(_RESNET101, lambda c: c // G): "Each half has a weight and a bias (W1, b1 and W2, b2), plus "
            "GroupNorm's γ and β: six vectors of C/2G, not two.",
        },
    )


def _shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    b, c, h, w = x.shape
    return x.reshape(b, groups, c // groups, h, w).transpose(1, 2).reshape(b, c, h, w)


# Exercise 2, channel_shuffle(x, groups): ShuffleNet's channel shuffle, (B, C, H, W) -> (B, C, H, W),
# output channel j·groups + i is input channel i·C/groups + j.
# Typical mistakes:
#   - the transposed pattern "b (c g) ... -> b (g c) ..." with g = groups: the inverse permutation
#     (it equals a shuffle with C/groups groups)
#   - no shuffle at all (the input returned)
#   - groups ignored: always 2, as in SA-Net
#   - the width axis shuffled instead of the channels
#   - the channel order reversed
#   - the two halves swapped (concatenation in the wrong order), not interleaved
def check_channel_shuffle(fn: Callable[..., Any]) -> Feedback:
    """Exercise 2: ``fn(x, groups)`` is the channel shuffle with ``groups`` groups."""
    what = "Your channel_shuffle"
    g = torch.Generator().manual_seed(15)
    for groups, shape in [(2, (2, 12, 3, 6)), (3, (1, 12, 2, 6)), (4, (2, 24, 4, 4))]:
        x = torch.randn(shape, generator=g, dtype=torch.float64)
        got, fb = run_answer(fn, x.clone(), groups, what=what)
        if fb is not None:
            return fb
        C, W = shape[1], shape[3]
        known = {
            "that is the inverse permutation (the transposed pattern, 'b (c g) h w -> b (g c) h w'); the shuffle "
            "splits the channels as (g c), g groups of consecutive channels, and reads them out as (c g)":
                _shuffle(x, C // groups),
            "the channels come back in their input order; the shuffle interleaves the groups": x,
            "that interleaves two groups whatever `groups` is; use the argument (SA-Net calls it with 2, ShuffleNet "
            "with its own group count)": _shuffle(x, 2) if groups != 2 else None,
            "that permutes the width axis; the shuffle permutes the channel axis (axis 1)":
                _shuffle(x.transpose(1, 3), groups).transpose(1, 3) if W % groups == 0 else None,
            "that reverses the channel order; the shuffle takes one channel from each group in turn": x.flip(1),
            "that swaps the groups as blocks; the shuffle interleaves them channel by channel":
                torch.cat(list(x.chunk(groups, dim=1))[::-1], dim=1),
        }
        bad = judge_tensor(got, _shuffle(x, groups), known, what=what)
        if bad is not None:
            return bad
    return passed(f"{what} interleaves the groups: output channel j·g + i is input channel i·C/g + j.")


def _gn(x: torch.Tensor, eps: float = 1e-5, unbiased: bool = False, dims=(2, 3)) -> torch.Tensor:
    mu = x.mean(dim=dims, keepdim=True)
    var = x.var(dim=dims, keepdim=True, unbiased=unbiased)
    return (x - mu) / torch.sqrt(var + eps)


def _spatial(x2, w2, b2, *, norm=None, gate_only=False, sigmoid=True) -> torch.Tensor:
    z = _gn(x2) if norm is None else norm(x2)
    a = w2[:, None, None] * z + b2[:, None, None]
    a = torch.sigmoid(a) if sigmoid else a
    return a if gate_only else a * x2


# Exercise 3, spatial_half(x2, w2, b2): X'_k2 = σ(W2 · GN(X_k2) + b2) · X_k2, GN with one channel per
# group (eps 1e-5, no affine of its own), x2 of shape (N, K, H, W), w2 and b2 of shape (K,).
# Typical mistakes:
#   - GN over all K channels of the half together (GroupNorm(1, K)) instead of one channel per group
#   - batch statistics (BatchNorm: mean and variance over N, H, W)
#   - the unbiased variance (divides by HW - 1; GroupNorm divides by HW)
#   - eps forgotten (only visible for channels of small variance)
#   - centred but not divided by the standard deviation
#   - the channel half's formula: the global mean in place of GN(X_k2)
#   - the gate σ(·) returned, not the gated X_k2 / the sigmoid forgotten
def check_spatial_half(fn: Callable[..., Any]) -> Feedback:
    """Exercise 3: ``fn(x2, w2, b2)`` returns σ(w2 · GN(x2) + b2) · x2 with GN over each channel's H × W."""
    what = "Your spatial_half"
    g = torch.Generator().manual_seed(16)
    for shape, scale in [((3, 4, 3, 4), 1.0), ((2, 3, 5, 2), 0.003)]:
        x2 = scale * torch.randn(shape, generator=g, dtype=torch.float64) + torch.randn(
            shape[:2] + (1, 1), generator=g, dtype=torch.float64)
        w2 = torch.randn(shape[1], generator=g, dtype=torch.float64)
        b2 = torch.randn(shape[1], generator=g, dtype=torch.float64)
        got, fb = run_answer(fn, x2.clone(), w2.clone(), b2.clone(), what=what)
        if fb is not None:
            return fb
        known = {
            "GN normalises the half's K channels together (GroupNorm(1, K)); SA-Net's GN has one channel per group: "
            "each channel is normalised over its own H × W values": _spatial(x2, w2, b2, norm=lambda t: _gn(t, dims=(1, 2, 3))),
            "those are batch statistics (mean and variance over N, H and W, as BatchNorm); GN normalises each image's "
            "channel over its own H × W": _spatial(x2, w2, b2, norm=lambda t: _gn(t, dims=(0, 2, 3))),
            "the variance is the unbiased one (divided by HW − 1); GroupNorm divides by HW (unbiased=False)":
                _spatial(x2, w2, b2, norm=lambda t: _gn(t, unbiased=True)),
            "ε is missing under the square root: GroupNorm divides by √(var + 1e-5), which matters for channels of "
            "small variance" if scale < 1 else "": _spatial(x2, w2, b2, norm=lambda t: _gn(t, eps=0.0)) if scale < 1 else None,
            "the channel is centred but not divided by its standard deviation; GN standardises it":
                _spatial(x2, w2, b2, norm=lambda t: t - t.mean(dim=(2, 3), keepdim=True)),
            "that is the channel half's formula, σ(W1 · GAP(X) + b1) · X; the spatial half puts GN(X_k2), one value per "
            "pixel, in place of the global mean": _spatial(x2, w2, b2, norm=lambda t: t.mean(dim=(2, 3), keepdim=True)),
            "that is the gate σ(W2 · GN(X_k2) + b2); multiply it by X_k2": _spatial(x2, w2, b2, gate_only=True),
            "the sigmoid is missing: the gate is σ(W2 · GN(X_k2) + b2)": _spatial(x2, w2, b2, sigmoid=False),
        }
        known = {m: t for m, t in known.items() if m}
        bad = judge_tensor(got, _spatial(x2, w2, b2), known, what=what)
        if bad is not None:
            return bad
    return passed(f"{what} gates each channel per pixel with σ(W2 · GN(X) + b2), GN over the channel's own H × W.")
