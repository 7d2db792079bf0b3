"""Checkers for the exercises of the CBAM chapter.

Above each checker, a comment lists the mistakes a learner typically makes on that exercise;
each one gets its own message (``tests/test_checkers_hybrid.py`` tries every one of them).
"""

from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F

from ..hybrid.cbam import CBAM
from . import Feedback, check_number, compare_tensors, failed, match_mistake, passed, run_answer

__all__ = ["check_cbam_parameters", "check_spatial_map", "check_cbam_function"]


def _mlp_params(c: int, r: int, *, w0_bias: bool = True, w1_bias: bool = True) -> int:
    h = c // r
    return 2 * c * h + (h if w0_bias else 0) + (c if w1_bias else 0)


# Exercise 1, CBAM(256) with the module's defaults (r = 16, k = 7, conv with bias, no BN).
# Typical mistakes:
#   - the paper's eq. (3) read literally: no bias on the 7×7 convolution (-1)
#   - the official form: conv without bias, then BN's γ and β (+1)
#   - the official form counted with BN's running mean and variance (buffers, not parameters)
#   - the shared MLP counted twice (once per descriptor)
#   - the MLP's biases forgotten: both, only W0's (C/r) or only W1's (C)
#   - only the channel gate (SE's count), no spatial gate
#   - a filter over one map instead of the two stacked pooled maps
#   - a filter over all C channels (C·k² or 2C·k² weights) instead of the two pooled maps
#   - k = 3 instead of the default 7
def check_cbam_parameters(answer: Any) -> Feedback:
    """Exercise 1: parameters of ``CBAM(256)`` with the defaults (r = 16, k = 7, the paper's mode)."""
    c, r, k = 256, 16, 7
    mlp = _mlp_params(c, r)
    spatial = 2 * k * k + 1
    return check_number(
        answer,
        mlp + spatial,
        what="Parameters of CBAM(256)",
        hints={
            mlp + 2 * k * k: "That is eq. (3) as the paper writes it, without a bias; the module's default "
            "convolution has one (the course's choice, see the cost section): add 1.",
            mlp + 2 * k * k + 2: "That is the official code's spatial gate (conv without bias + BN γ, β, "
            "spatial_norm=True); the default is a conv with a bias and no BN.",
            mlp + 2 * k * k + 4: "A batch norm's running mean and variance are buffers, not parameters; "
            "and the default spatial gate has no batch norm at all: conv with a bias.",
            2 * mlp + spatial: "The MLP is shared by the average- and max-pooled descriptors: count it once.",
            _mlp_params(c, r, w0_bias=False, w1_bias=False) + spatial: "The MLP's two nn.Linear layers have "
            "biases (as in the official code): add C/r + C.",
            _mlp_params(c, r, w0_bias=False) + spatial: "W0's bias is missing: it has C/r = 16 of them.",
            _mlp_params(c, r, w1_bias=False) + spatial: "W1's bias is missing: it has C = 256 of them.",
            mlp: "That is only the channel gate (SE's count); the spatial 7×7 convolution has parameters too.",
            mlp + k * k + 1: "The convolution reads two maps, [avg; max], so it has 2·7·7 weights, not 7·7.",
            mlp + k * k * c + 1: "The convolution reads the two channel-pooled maps, not the C channels: "
            "2·7·7 weights, whatever C is.",
            mlp + 2 * k * k * c + 1: "The convolution reads the two channel-pooled maps, not 2C channels: "
            "2·7·7 weights, whatever C is.",
            mlp + 2 * 3 * 3 + 1: "That is a 3×3 filter; the default kernel_size is the paper's 7.",
        },
    )


def _spatial_reference(f: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, order: str = "avg-max") -> torch.Tensor:
    avg, mx = f.mean(1, keepdim=True), f.amax(1, keepdim=True)
    pooled = {"avg-max": [avg, mx], "max-avg": [mx, avg], "avg-avg": [avg, avg], "max-max": [mx, mx],
              "sum-max": [f.sum(1, keepdim=True), mx]}[order]
    return F.conv2d(torch.cat(pooled, 1), weight, bias, padding=weight.shape[-1] // 2)


# Exercise 2, spatial_map(f, weight, bias) = M_s(f) of eq. (3), any odd k.
# Typical mistakes:
#   - no padding (the map shrinks by k - 1) / a padding of 3 whatever k is
#   - the channel axis dropped: (B, H, W)
#   - the product M_s(f) ⊗ f returned instead of the map
#   - the pooled maps stacked [max; avg] (the official order) instead of [avg; max]
#   - the sigmoid forgotten / a softmax over positions instead of the sigmoid
#   - the bias forgotten
#   - a sum over the channels instead of a mean
#   - one pooling used twice: [avg; avg] or [max; max]
#   - the kernel flipped (a true convolution instead of PyTorch's cross-correlation)
def check_spatial_map(fn: Callable[..., Any]) -> Feedback:
    """Exercise 2: ``fn(f, weight, bias)`` returns M_s(f) of eq. (3), shape (B, 1, H, W)."""
    what = "Your spatial_map"
    g = torch.Generator().manual_seed(5)
    for shape, k in [((2, 6, 9, 11), 7), ((1, 4, 8, 5), 3)]:
        f = torch.randn(shape, generator=g, dtype=torch.float64)
        weight = torch.randn(1, 2, k, k, generator=g, dtype=torch.float64)
        bias = torch.randn(1, generator=g, dtype=torch.float64)
        got, fb = run_answer(fn, f, weight, bias, what=what)
        if fb is not None:
            return fb
        logits = _spatial_reference(f, weight, bias)
        expected = torch.sigmoid(logits)
        if isinstance(got, torch.Tensor):
            got = got.detach().to(torch.float64)
            B, C, H, W = shape
            if got.dim() == 4 and got.shape[:2] == (B, 1) and got.shape[2:] == (H - k + 1, W - k + 1):
                return failed(f"{what}: the map shrank to {tuple(got.shape[2:])}; pad by k // 2 so it keeps H × W = {(H, W)}.")
            if got.dim() == 4 and got.shape[:2] == (B, 1) and k != 7 and got.shape[2:] == (H + 6 - k + 1, W + 6 - k + 1):
                return failed(f"{what}: with k = {k} the map grew to {tuple(got.shape[2:])}: the padding must be "
                              "k // 2 (3 only for k = 7), read k from weight.shape[-1].")
            if got.shape == (B, H, W):
                return failed(f"{what}: keep the map's channel axis: the shape should be (B, 1, H, W), got {tuple(got.shape)}.")
            if got.shape == f.shape:
                return failed(f"{what}: return the map M_s(f) of shape (B, 1, H, W), not the product M_s(f) ⊗ f.")
            if got.shape == expected.shape:
                known = {
                    "the pooled maps are in the order [max; avg] (the official code's); eq. (3) stacks [avg; max], "
                    "and the weights here were made for that order":
                        torch.sigmoid(_spatial_reference(f, weight, bias, "max-avg")),
                    "the sigmoid σ of eq. (3) is missing, so the map is not in (0, 1)": logits,
                    "the values are a softmax over the positions; eq. (3) takes a sigmoid at each position, "
                    "independently": torch.softmax(logits.flatten(2), -1).view_as(logits),
                    "the convolution's bias is missing": torch.sigmoid(_spatial_reference(f, weight, None)),
                    "you summed over the channels; eq. (3)'s AvgPool is a mean over the C channels "
                    "(divide by C)": torch.sigmoid(_spatial_reference(f, weight, bias, "sum-max")),
                    "both stacked maps are the mean; the second must be the max over channels":
                        torch.sigmoid(_spatial_reference(f, weight, bias, "avg-avg")),
                    "both stacked maps are the max; the first must be the mean over channels":
                        torch.sigmoid(_spatial_reference(f, weight, bias, "max-max")),
                    "the kernel is flipped: PyTorch's conv2d (and the paper's f) is a cross-correlation, "
                    "the filter is used as it is": torch.sigmoid(_spatial_reference(f, weight.flip(-1, -2), bias)),
                }
                fb = match_mistake(got, known, what=what, end=".")
                if fb is not None:
                    return fb
        bad = compare_tensors(got, expected, what=what)
        if bad is not None:
            return bad
    return passed(f"{what} computes M_s of eq. (3): [avg; max] over channels, a padded k×k convolution, σ.")


# Exercise 3, cbam_function(f, w0, b0, w1, b1, conv_w, conv_b) = CBAM with the channel gate first.
# Typical mistakes:
#   - plain SE: an average-pooled channel gate and no spatial gate (the neighbouring mechanism)
#   - SE's channel gate (average pooling only) followed by CBAM's spatial gate
#   - max pooling only in the channel gate
#   - the spatial gate first (the wrong order) / both maps from F (the parallel arrangement)
#   - the two descriptors added before the MLP instead of after it
#   - a sigmoid on each MLP output, then the sum (σ(a) + σ(b) instead of σ(a + b))
#   - W1's bias added once for both descriptors instead of once per descriptor
#   - the MLP's biases left out / the ReLU δ between W0 and W1 left out
#   - the spatial gate's pooled maps stacked [max; avg]
#   - F' returned (the spatial gate forgotten) / only the spatial gate applied
def check_cbam_function(fn: Callable[..., Any]) -> Feedback:
    """Exercise 3: ``fn(f, w0, b0, w1, b1, conv_w, conv_b)`` equals ``CBAM`` (channel first, paper mode)."""
    what = "Your cbam_function"
    g = torch.Generator().manual_seed(7)
    m = CBAM(12, reduction=3).double().eval()
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64))
    ca, sa = m.channel_attention, m.spatial_attention
    w0, b0, w1, b1 = (t.detach() for t in (ca.fc0.weight, ca.fc0.bias, ca.fc1.weight, ca.fc1.bias))
    kw, kb = sa.conv.weight.detach(), sa.conv.bias.detach()

    def mlp(d: torch.Tensor, *, biases: bool = True, relu: bool = True) -> torch.Tensor:
        hidden = d @ w0.T + (b0 if biases else 0)
        return (torch.relu(hidden) if relu else hidden) @ w1.T + (b1 if biases else 0)

    def mc(x: torch.Tensor, how: str = "paper") -> torch.Tensor:
        avg, mx = x.mean((2, 3)), x.amax((2, 3))
        s = {
            "paper": lambda: torch.sigmoid(mlp(avg) + mlp(mx)),
            "sum-first": lambda: torch.sigmoid(mlp(avg + mx)),
            "avg-only": lambda: torch.sigmoid(mlp(avg)),
            "max-only": lambda: torch.sigmoid(mlp(mx)),
            "sigmoid-each": lambda: torch.sigmoid(mlp(avg)) + torch.sigmoid(mlp(mx)),
            "bias-once": lambda: torch.sigmoid(mlp(avg) + mlp(mx) - b1),
            "no-bias": lambda: torch.sigmoid(mlp(avg, biases=False) + mlp(mx, biases=False)),
            "no-relu": lambda: torch.sigmoid(mlp(avg, relu=False) + mlp(mx, relu=False)),
        }[how]()
        return s[..., None, None]

    def ms(x: torch.Tensor, order: str = "avg-max") -> torch.Tensor:
        return torch.sigmoid(_spatial_reference(x, kw, kb, order))

    def channel_then_spatial(x: torch.Tensor, how: str = "paper", order: str = "avg-max") -> torch.Tensor:
        f1 = mc(x, how) * x
        return ms(f1, order) * f1

    for shape in [(2, 12, 5, 7), (1, 12, 4, 4)]:
        f = torch.randn(shape, generator=g, dtype=torch.float64)
        with torch.no_grad():
            expected = m(f)
        got, fb = run_answer(fn, f, w0, b0, w1, b1, kw, kb, what=what)
        if fb is not None:
            return fb
        if isinstance(got, torch.Tensor) and got.shape == expected.shape:
            got = got.detach().to(torch.float64)
            f_s = ms(f) * f
            known = {
                "that is plain SE: one average-pooled channel gate and nothing else. CBAM's channel gate adds "
                "MLP(MaxPool(F)) (eq. 2), and the spatial gate M_s(F') follows (eq. 1)": mc(f, "avg-only") * f,
                "the channel map uses only average pooling (SE's squeeze); eq. (2) adds MLP(MaxPool(F))":
                    channel_then_spatial(f, "avg-only"),
                "the channel map uses only max pooling; eq. (2) adds MLP(AvgPool(F)) and MLP(MaxPool(F))":
                    channel_then_spatial(f, "max-only"),
                "you applied the spatial map first; eq. (1) is channel first: F' = M_c(F) ⊗ F, then "
                "F'' = M_s(F') ⊗ F'": mc(f_s) * f_s,
                "both maps come from F (the 'parallel' arrangement); in eq. (1) M_s is computed from F', "
                "the channel-refined map": mc(f) * ms(f) * f,
                "you added the two descriptors before the MLP; eq. (2) runs the MLP on each and adds the "
                "outputs (the MLP is not linear)": channel_then_spatial(f, "sum-first"),
                "you took a sigmoid of each MLP output and added them; eq. (2) adds the two outputs and then "
                "takes one sigmoid": channel_then_spatial(f, "sigmoid-each"),
                "W1's bias b1 is added once; each descriptor goes through the whole MLP, bias included, so "
                "the sum holds b1 twice": channel_then_spatial(f, "bias-once"),
                "the MLP's biases b0 and b1 are missing": channel_then_spatial(f, "no-bias"),
                "the ReLU δ between W0 and W1 is missing": channel_then_spatial(f, "no-relu"),
                "the spatial gate stacks [max; avg]; eq. (3) stacks [avg; max]":
                    channel_then_spatial(f, order="max-avg"),
                "that is F' only; multiply by the spatial map M_s(F') as well": mc(f) * f,
                "that is the spatial gate alone; the channel map M_c(F) comes first": f_s,
            }
            fb = match_mistake(got, known, what=what, end=".")
            if fb is not None:
                return fb
        bad = compare_tensors(got, expected, what=what)
        if bad is not None:
            return bad
    return passed(f"{what} equals CBAM (channel then spatial) on random weights and inputs.")
