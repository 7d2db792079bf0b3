"""Checkers for the exercises of the Squeeze-and-Excitation chapter."""

from __future__ import annotations

from typing import Any, Callable

import torch

from ..channel.se import SqueezeExcite
from . import Feedback, check_number, compare_tensors, failed, match_mistake, passed, run_answer

__all__ = [
    "check_floor_parameters",
    "check_input_placement_parameters",
    "check_se_parameters",
    "check_resnet101_se_parameters",
    "check_se_tokens",
    "check_resnet50_se_parameters",
    "check_se_function",
]


def _se_params(c: int, r: int, bias: bool = True) -> int:
    h = c // r
    return 2 * c * h + ((h + c) if bias else 0)


_RESNET101 = [(256, 3), (512, 4), (1024, 23), (2048, 3)]
_RESNET50 = [(256, 3), (512, 4), (1024, 6), (2048, 3)]


def _se_hidden(c: int, d: int, bias: bool = True) -> int:
    """An SE block on c channels with a bottleneck of d units: 2·c·d weights, d + c biases."""
    return 2 * c * d + ((d + c) if bias else 0)


# Exercise 1 (a bottleneck with a floor, d = max(C/r, 8), at C = 96, r = 16: d = 8), typical
# mistakes: the chapter's formula with d = C/r = 6 (the floor ignored), the floor added instead of
# taken as a maximum (d = C/r + 8), d read as C/8 (r = 8), the biases left out, one of the two
# biases left out, W1's biases taken as C, only one layer counted.
def check_floor_parameters(answer: Any) -> Feedback:
    """Exercise 1: parameters of an SE block whose bottleneck has d = max(C/r, 8) units, at C = 96, r = 16, with biases."""
    c, r, floor = 96, 16, 8
    d = max(c // r, floor)
    return check_number(
        answer,
        _se_hidden(c, d),
        what="Parameters of SE with d = max(C/r, 8) at C = 96, r = 16",
        hints={
            _se_hidden(c, c // r): "That is the chapter's P_SE with d = C/r = 6 hidden units; the floor raises the "
            "bottleneck to d = max(6, 8) = 8. Count 2·C·d weights and d + C biases.",
            _se_hidden(c, c // r + floor): "The floor is a maximum, d = max(C/r, 8) = 8, not C/r + 8 = 14.",
            _se_hidden(c, c // floor): "d = 8 units, not C/8 = 12: the floor is a number of units, not a reduction ratio.",
            _se_hidden(c, d, bias=False): "That is the two weight matrices without their biases: add d + C.",
            2 * c * d + d: "W2's C biases are missing: W1 has d biases, W2 has C.",
            2 * c * d + c: "W1's d biases are missing: W1 has d biases, W2 has C.",
            2 * c * d + 2 * c: "W1 has only d outputs, so d biases, not C.",
            c * d + d + c: "That counts only one weight matrix (C·d); W1 (d × C) and W2 (C × d) have C·d weights each.",
        },
    )


_RESNET50_INPUTS = [64, 256, 256, 256, 512, 512, 512, 512, 1024, 1024, 1024, 1024, 1024, 1024, 2048, 2048]


# Exercise 2 (SE on each bottleneck's input in ResNet-50, with biases), typical mistakes: the
# output widths (the chapter's placement), every block of a stage at the width of the stage's
# first input, the stem's 64 channels forgotten (the first block taken at 256), the biases left
# out, the inner 3x3 widths, one SE block per stage.
def check_input_placement_parameters(answer: Any) -> Feedback:
    """Exercise 2: parameters of SE (r = 16, biases) on the input of each of ResNet-50's 16 bottlenecks."""
    right = sum(_se_params(c, 16) for c in _RESNET50_INPUTS)
    firsts = (64, 256, 512, 1024)
    hints = {
        sum(n * _se_params(c, 16) for c, n in _RESNET50): "That is SE on every block's output, 256 ... 2048 (the "
        "chapter's placement). A block's input is the previous block's output: the first block of each stage "
        "receives the previous stage's width (64 from the stem, then 256, 512, 1024).",
        sum(n * _se_params(f, 16) for f, (_, n) in zip(firsts, _RESNET50)): "Only the first block of a stage receives "
        "the previous stage's width; the other blocks of the stage receive the stage's own output width.",
        sum(_se_params(c, 16) for c in [256, *_RESNET50_INPUTS[1:]]): "The very first bottleneck receives the stem's "
        "64 channels, not 256.",
        sum(_se_params(c, 16, bias=False) for c in _RESNET50_INPUTS): "That leaves out the biases; SqueezeExcite has "
        "C/r + C of them per block.",
        sum(n * _se_params(c // 4, 16) for c, n in _RESNET50): "Those are the inner 3x3 widths (64 ... 512); the "
        "block's input is the previous block's output.",
        sum(_se_params(f, 16) for f in firsts): "Every bottleneck has its own SE block (3, 4, 6, 3 per stage).",
    }
    return check_number(answer, right, what="Parameters of SE on the bottlenecks' inputs in ResNet-50", hints=hints)


# The former exercise 1 (its answer was the chapter's se_parameters(256)); kept for older copies.
# Typical mistakes: the biases left out (the paper's formula), one of the two biases left
# out, both biases taken as C, only one of the two layers counted, the reduction r forgotten.
def check_se_parameters(answer: Any) -> Feedback:
    """Exercise 1: parameters of SqueezeExcite(256) with r = 16 and biases."""
    c, r = 256, 16
    return check_number(
        answer,
        _se_params(c, r),
        what="Parameters of SE at C = 256, r = 16",
        hints={
            _se_params(c, r, bias=False): "That is W1 and W2 without their biases: add C/r + C.",
            c * c // r: "That counts only one of the two layers (and no biases).",
            c * c // r + c // r + c: "That counts only one weight matrix (C·C/r) but both biases: W1 and W2 each have C·C/r weights.",
            2 * c * c: "That forgets the reduction: W1 is (C/r) x C, not C x C.",
            2 * c * c + 2 * c: "That forgets the reduction: W1 is (C/r) x C, not C x C (and has C/r biases).",
            2 * c * c // r + c: "One bias is missing: W1 has C/r biases, W2 has C.",
            2 * c * c // r + c // r: "One bias is missing: W1 has C/r biases, W2 has C.",
            2 * c * c // r + 2 * c: "W1 has only C/r outputs, so C/r biases, not C.",
        },
    )




# The former exercise 2 (a loop of the chapter's se_parameters over the stages, as the chapter
# does for ResNet-50); kept for older copies. Typical mistakes: the paper's bias-free formula, the inner 3x3 width instead of the
# block's output width, one SE block per stage instead of per block, ResNet-50's block counts,
# the reduction forgotten, only one of the two layers counted.
def check_resnet101_se_parameters(answer: Any) -> Feedback:
    """Exercise 2: extra parameters of SE in all 33 bottlenecks of ResNet-101 (with biases)."""
    right = sum(n * _se_params(c, 16) for c, n in _RESNET101)
    hints = {
        sum(n * _se_params(c, 16, bias=False) for c, n in _RESNET101): "That is the paper's bias-free formula "
        "(2/r) Σ N_s C_s²; SqueezeExcite keeps the biases, as the released models do: add C/r + C per block.",
        sum(n * _se_params(c // 4, 16) for c, n in _RESNET101): "SE acts on the bottleneck's output (its expanded "
        "width 4 x 64, 4 x 128, ...), not on the inner 3 x 3 width.",
        sum(_se_params(c, 16) for c, _ in _RESNET101): "Every bottleneck has its own SE block: multiply by the number "
        "of blocks per stage (3, 4, 23, 3).",
        sum(n * _se_params(c, 16) for c, n in _RESNET50): "That is ResNet-50 (6 blocks in the third stage); "
        "ResNet-101 has 23 there.",
        sum(n * 2 * c * c for c, n in _RESNET101): "That forgets the reduction: each layer has C·C/r weights, not C².",
        sum(n * (c * c // 16) for c, n in _RESNET101): "That counts one layer per block (and no biases); SE has two.",
    }
    return check_number(answer, right, what="Extra parameters of SE-ResNet-101", hints=hints)


def check_resnet50_se_parameters(answer: Any) -> Feedback:
    """The former exercise 2 (ResNet-50, with biases); kept for readers of older copies of the chapter."""
    right = sum(n * _se_params(c, 16) for c, n in _RESNET50)
    return check_number(
        answer,
        right,
        what="Extra parameters of SE-ResNet-50",
        hints={
            sum(n * _se_params(c, 16, bias=False) for c, n in _RESNET50): "That is the paper's bias-free formula "
            "(2/r) Σ N_s C_s²; the released models keep the biases.",
            sum(n * _se_params(c // 4, 16) for c, n in _RESNET50): "SE acts on the bottleneck's output (its expanded "
            "width 4 x 64, 4 x 128, ...), not on the inner 3 x 3 width.",
            sum(_se_params(c, 16) for c, _ in _RESNET50): "Every bottleneck has its own SE block: multiply by the "
            "number of blocks per stage (3, 4, 6, 3).",
        },
    )


def _random_se(g: torch.Generator) -> tuple[SqueezeExcite, tuple[torch.Tensor, ...]]:
    """SqueezeExcite(12, r = 3) in float64 with random weights from ``g``, and its (w1, b1, w2, b2)."""
    m = SqueezeExcite(12, reduction=3).double()
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64))
    return m, (m.fc1.weight.detach(), m.fc1.bias.detach(), m.fc2.weight.detach(), m.fc2.bias.detach())


# The former exercise 3 (its answer was the chapter's own se_einops); kept for older copies.
# Typical mistakes: a maximum instead of the mean in the squeeze, the sigmoid left out,
# the ReLU left out, a sigmoid in place of the ReLU, the biases left out, the weights s returned
# instead of s·u, w1 used without transposing it (a shape error in the matrix product).
def check_se_function(fn: Callable[..., Any]) -> Feedback:
    """Exercise 3: a functional SE ``fn(u, w1, b1, w2, b2)`` that equals ``SqueezeExcite``."""
    what = "Your se_function"
    g = torch.Generator().manual_seed(3)
    m, (w1, b1, w2, b2) = _random_se(g)
    for shape in [(2, 12, 5, 7), (1, 12, 3, 3)]:
        u = torch.randn(shape, generator=g, dtype=torch.float64)
        got, fb = run_answer(fn, u, w1, b1, w2, b2, what=what)
        if fb is not None:
            if fb.attempted and "cannot be multiplied" in fb.message:
                return failed(f"{fb.message}. w1 has shape (C/r, C), as nn.Linear stores it: compute z @ w1.T "
                              "(or einsum 'b c, k c -> b k'), and likewise for w2.")
            return fb
        expected = m(u).detach()
        if isinstance(got, torch.Tensor) and got.shape == expected.shape:
            got = got.detach().to(torch.float64)
            z, z_max = u.mean((2, 3)), u.amax((2, 3))
            lin = lambda z, act=torch.relu, bias=True: (act(z @ w1.T + (b1 if bias else 0)) @ w2.T + (b2 if bias else 0))
            s = torch.sigmoid(lin(z))
            known = {
                "you squeezed with a maximum; eq. (2) is the mean over H x W.": u * torch.sigmoid(lin(z_max))[..., None, None],
                "the sigmoid σ of eq. (3) is missing, so the weights are not in (0, 1).": u * lin(z)[..., None, None],
                "the ReLU δ between the two layers of eq. (3) is missing.": u * torch.sigmoid(lin(z, act=lambda t: t))[..., None, None],
                "you used a sigmoid between the two layers; eq. (3) has the ReLU δ there, and the sigmoid σ only at the end.":
                    u * torch.sigmoid(lin(z, act=torch.sigmoid))[..., None, None],
                "the biases b1 and b2 are missing (the paper writes none, but SqueezeExcite has them, as the released models do).":
                    u * torch.sigmoid(lin(z, bias=False))[..., None, None],
                "you returned the weights s broadcast to the input's shape; eq. (4) multiplies them with u.":
                    s[..., None, None].expand_as(u),
            }
            fb = match_mistake(got, known, what=what, expected=expected)
            if fb is not None:
                return fb
        bad = compare_tensors(got, expected, what=what)
        if bad is not None:
            return bad
    return passed(f"{what} equals SqueezeExcite on random weights and inputs.")


# Exercise 3 (SE on tokens (B, N, C)), typical mistakes: the squeeze over the channel axis instead
# of the tokens, the weights broadcast over the wrong axis (scaling tokens, not channels), a
# maximum or a sum instead of the mean, the sigmoid or the ReLU left out, the biases left out, the
# weights s returned instead of s·x (broadcast, or as they are, (B, C)), w1 used without
# transposing it (a shape error). The first case has N = C on purpose, so that a squeeze or a
# broadcast over the wrong axis runs and can be named; the second has B, N and C all different,
# so that no answer passes by confusing two axes.
def check_se_tokens(fn: Callable[..., Any]) -> Feedback:
    """Exercise 3: ``fn(x, w1, b1, w2, b2)``: SE on tokens ``(B, N, C)``, squeeze over the N tokens."""
    what = "Your se_tokens"
    g = torch.Generator().manual_seed(4)
    m, (w1, b1, w2, b2) = _random_se(g)

    def excite(z, act=torch.relu, gate=torch.sigmoid, bias=True):
        return gate(act(z @ w1.T + (b1 if bias else 0)) @ w2.T + (b2 if bias else 0))

    # the first case has N = C, so that a squeeze or a broadcast over the wrong axis still runs
    for shape in [(2, 12, 12), (3, 5, 12)]:
        x = torch.randn(shape, generator=g, dtype=torch.float64)
        got, fb = run_answer(fn, x, w1, b1, w2, b2, what=what)
        if fb is not None:
            if fb.attempted and "cannot be multiplied" in fb.message:
                return failed(f"{fb.message}. w1 has shape (C/r, C), as nn.Linear stores it: compute z @ w1.T "
                              "(or einsum 'b c, k c -> b k'), and likewise for w2. (If z is (B, N), you squeezed "
                              "over the channels: the squeeze averages the N tokens, axis 1.)")
            return fb
        z = x.mean(1)
        s = excite(z)
        expected = x * s[:, None, :]
        if isinstance(got, torch.Tensor) and tuple(got.shape) == tuple(s.shape) and torch.allclose(
                got.detach().to(torch.float64), s):
            return failed(f"{what}: you returned the weights s, shape (B, C); eq. (4) multiplies them with every "
                          "token: x * rearrange(s, 'b c -> b 1 c').")
        if isinstance(got, torch.Tensor) and got.shape == expected.shape:
            got = got.detach().to(torch.float64)
            known = {
                "the squeeze runs over the channel axis; SE averages each channel over the N tokens "
                "('b n c -> b c', axis 1).": x * excite(x.mean(2))[:, :, None] if shape[1] == shape[2] else None,
                "the weights scale the tokens, not the channels: broadcast s over the tokens, "
                "'b c -> b 1 c'.": x * s[:, :, None] if shape[1] == shape[2] else None,
                "you squeezed with a maximum; the squeeze is the mean over the tokens.": x * excite(x.amax(1))[:, None, :],
                "you summed the tokens; the squeeze is their mean (divide by N).": x * excite(x.sum(1))[:, None, :],
                "the sigmoid σ of the excitation is missing, so the weights are not in (0, 1).":
                    x * excite(z, gate=lambda t: t)[:, None, :],
                "the ReLU δ between the two layers is missing.": x * excite(z, act=lambda t: t)[:, None, :],
                "the biases b1 and b2 are missing.": x * excite(z, bias=False)[:, None, :],
                "you returned the weights s broadcast to the input's shape; multiply them with x.":
                    s[:, None, :].expand_as(x),
            }
            fb = match_mistake(got, known, what=what, expected=expected)
            if fb is not None:
                return fb
        bad = compare_tensors(got, expected, what=what)
        if bad is not None:
            return bad
    return passed(f"{what} is SE on tokens: z = mean over N, s = σ(W2 δ(W1 z + b1) + b2), output x ⊙ s per channel.")
