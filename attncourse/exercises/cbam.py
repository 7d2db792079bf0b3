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

__all__ = ["check_unshared_parameters", "check_spatial_map_last", "check_spatial_first"]


def _mlp_params(c: int, r: int, *, w0_bias: bool = True, w1_bias: bool = True) -> int:
    h = c // r
    return 2 * c * h + (h if w0_bias else 0) + (c if w1_bias else 0)


# Exercise 1, a CBAM(256) whose two descriptors do not share the MLP: one MLP (W0, W1, with
# biases) for F^c_avg and one for F^c_max; the rest as the module's defaults (r = 16, k = 7,
# the spatial convolution with a bias, no batch norm). The chapter's cbam_parameters counts the
# shared module, so calling it gives the first wrong answer below.
# Typical mistakes:
#   - the shared MLP counted once: CBAM(256) itself, the chapter's cbam_parameters(256)
#   - no biases at all (eqs. (2)-(3) as written, the case the cost section mentions), for the
#     variant or for the shared module (8,290)
#   - r forgotten (a hidden width of C), for the variant or for the shared module (131,683)
#   - the MLPs' biases forgotten: all of them, only W0's, only W1's, or those of one MLP only
#   - the spatial convolution's bias forgotten (eq. (3) as written) / the official gate
#     (conv without bias + BN γ, β) / BN's running statistics counted (buffers)
#   - the spatial gate counted twice (unsharing the MLP does not duplicate it) / forgotten
#   - a filter over one map instead of the two stacked pooled maps / over the C or 2C channels
#   - k = 3 instead of the default 7
def check_unshared_parameters(answer: Any) -> Feedback:
    """Exercise 1: parameters of CBAM(256) with one MLP per descriptor (r = 16, k = 7, conv bias)."""
    c, r, k = 256, 16, 7
    mlp = _mlp_params(c, r)
    spatial = 2 * k * k + 1
    two = 2 * mlp
    return check_number(
        answer,
        two + spatial,
        what="Parameters of CBAM(256) with one MLP per descriptor",
        hints={
            mlp + spatial: "That is CBAM(256) itself (the chapter's cbam_parameters(256)), whose two descriptors "
            "share one MLP; in this variant each descriptor has its own W0 and W1: count the MLP twice.",
            2 * _mlp_params(c, r, w0_bias=False, w1_bias=False) + 2 * k * k: "That has no biases at all, eqs. (2) "
            "and (3) as the paper writes them (2C²/r per MLP, 2k² for the filter); the variant keeps the module's "
            "biases: C/r + C per MLP and 1 on the convolution.",
            _mlp_params(c, r, w0_bias=False, w1_bias=False) + 2 * k * k: "That is one shared MLP and no biases at "
            "all (2C²/r + 2k², eqs. (2)–(3) as written): the variant has two MLPs, and keeps the module's biases "
            "(C/r + C per MLP, 1 on the convolution).",
            2 * _mlp_params(c, 1) + spatial: "That uses a hidden width of C, as if r were 1: W0 is (C/r) × C with "
            "r = 16, so each MLP has 2C²/r weights.",
            _mlp_params(c, 1) + spatial: "That is one shared MLP with a hidden width of C (r forgotten): W0 is "
            "(C/r) × C with r = 16, and in this variant each descriptor has its own MLP.",
            2 * _mlp_params(c, r, w0_bias=False, w1_bias=False) + spatial: "The MLPs' biases are missing: each of "
            "the two MLPs has C/r + C of them (the module's nn.Linear layers).",
            mlp + _mlp_params(c, r, w0_bias=False, w1_bias=False) + spatial: "You counted the biases of one MLP "
            "only; the second MLP has its own C/r + C biases too.",
            2 * _mlp_params(c, r, w0_bias=False) + spatial: "W0's biases are missing: C/r = 16 in each MLP.",
            2 * _mlp_params(c, r, w1_bias=False) + spatial: "W1's biases are missing: C = 256 in each MLP.",
            two + 2 * k * k: "The spatial convolution's bias is missing (eq. (3) writes none, but the module's "
            "default convolution has one): add 1.",
            two + 2 * k * k + 2: "That is the official code's spatial gate (conv without bias + BN γ, β); the "
            "default is a convolution with a bias and no batch norm.",
            two + 2 * k * k + 4: "A batch norm's running mean and variance are buffers, not parameters; and the "
            "default spatial gate has no batch norm at all: a convolution with a bias.",
            two + 2 * spatial: "Only the MLP is unshared: there is still one spatial gate (2·7·7 + 1), which reads "
            "F', not the descriptors.",
            two: "That is only the channel gate; the spatial 7×7 convolution has parameters too.",
            two + k * k + 1: "The convolution reads two maps, [avg; max], so it has 2·7·7 weights, not 7·7.",
            two + k * k * c + 1: "The convolution reads the two channel-pooled maps, not the C channels: 2·7·7 "
            "weights, whatever C is.",
            two + 2 * k * k * c + 1: "The convolution reads the two channel-pooled maps, not 2C channels: 2·7·7 "
            "weights, whatever C is.",
            two + 2 * 3 * 3 + 1: "That is a 3×3 filter; the default kernel_size is the paper's 7.",
        },
    )


def _spatial_reference(f: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, order: str = "avg-max") -> torch.Tensor:
    """The logits f([·; ·]) of eq. (3) for a channels-first ``f`` (B, C, H, W): (B, 1, H, W)."""
    avg, mx = f.mean(1, keepdim=True), f.amax(1, keepdim=True)
    pooled = {"avg-max": [avg, mx], "max-avg": [mx, avg], "avg-avg": [avg, avg], "max-max": [mx, mx],
              "sum-max": [f.sum(1, keepdim=True), mx]}[order]
    return F.conv2d(torch.cat(pooled, 1), weight, bias, padding=weight.shape[-1] // 2)


def _last(t: torch.Tensor) -> torch.Tensor:
    return t.permute(0, 2, 3, 1)  # (B, 1, H, W) -> (B, H, W, 1)


# Exercise 2, spatial_map_last(f, weight, bias): M_s(f) of eq. (3) for a channels-last f
# (B, H, W, C), returned channels-last (B, H, W, 1), any odd k. The tests use sizes that cannot
# stand for one another (B = 3 or 4, never 2, the number of pooled maps; no two axes equal), so
# a map stacked or pooled on the wrong axis cannot pass by coincidence.
# Typical mistakes:
#   - no padding (the map shrinks by k - 1) / a padding of 3 whatever k is
#   - the map returned in PyTorch's layout (B, 1, H, W) / the channel axis dropped: (B, H, W)
#   - H and W swapped by the rearrange (the map comes back (B, W, H, 1)), or swapped on the way in
#     and back (the kernel then acts transposed)
#   - the product M_s(f) ⊗ f returned instead of the map
#   - the pools taken over axis 1 (PyTorch's channel axis, H here)
#   - the two pooled maps stacked on the wrong axis (conv2d then raises: it reads (B, 2, H, W))
#   - the pooled maps stacked [max; avg] (the official order) instead of [avg; max]
#   - the sigmoid forgotten / a softmax over positions instead of the sigmoid
#   - the bias forgotten
#   - a sum over the channels instead of a mean / one pooling used twice
#   - the kernel flipped (a true convolution instead of PyTorch's cross-correlation)
def check_spatial_map_last(fn: Callable[..., Any]) -> Feedback:
    """Exercise 2: ``fn(f, weight, bias)``, f (B, H, W, C) channels-last, returns M_s(f) as (B, H, W, 1)."""
    what = "Your spatial_map_last"
    g = torch.Generator().manual_seed(5)
    for shape, k in [((3, 9, 11, 5), 7), ((4, 8, 5, 6), 3)]:
        B, H, W, C = shape
        f = torch.randn(shape, generator=g, dtype=torch.float64)
        weight = torch.randn(1, 2, k, k, generator=g, dtype=torch.float64)
        bias = torch.randn(1, generator=g, dtype=torch.float64)
        got, fb = run_answer(fn, f.clone(), weight.clone(), bias.clone(), what=what)
        if fb is not None:
            if fb.attempted and "to have 2 channels" in fb.message:
                return failed(f"{fb.message}. conv2d reads its input as (B, 2, H, W): stack the mean and the max "
                              "over channels on axis 1 of a channels-first tensor, not on the batch or a position axis.")
            return fb
        fc = f.permute(0, 3, 1, 2)  # (B, C, H, W)
        logits = _spatial_reference(fc, weight, bias)
        expected = _last(torch.sigmoid(logits))
        if isinstance(got, torch.Tensor):
            got = got.detach().to(torch.float64)
            shape_got = tuple(got.shape)
            if shape_got in {(B, H - k + 1, W - k + 1, 1), (B, 1, H - k + 1, W - k + 1)}:
                return failed(f"{what}: the map shrank to {(H - k + 1, W - k + 1)}; pad by k // 2 so it keeps "
                              f"H × W = {(H, W)}.")
            if k != 7 and shape_got in {(B, H + 6 - k + 1, W + 6 - k + 1, 1), (B, 1, H + 6 - k + 1, W + 6 - k + 1)}:
                return failed(f"{what}: with k = {k} the map grew to {(H + 6 - k + 1, W + 6 - k + 1)}: the padding "
                              "must be k // 2 (3 only for k = 7); read k from weight.shape[-1].")
            if shape_got == (B, 1, H, W):
                return failed(f"{what}: that is PyTorch's channels-first layout (B, 1, H, W); return the map "
                              f"channels-last, (B, H, W, 1) = {(B, H, W, 1)}, so that it multiplies f directly.")
            if shape_got == (B, H, W):
                return failed(f"{what}: keep the map's channel axis, last: the shape should be (B, H, W, 1), "
                              f"got {shape_got}.")
            if shape_got in {(B, W, H, 1), (B, 1, W, H)}:
                return failed(f"{what}: H and W are swapped, the shape is {shape_got}: f is (B, H, W, C), so "
                              "rearrange 'b h w c -> b c h w' and back 'b 1 h w -> b h w 1'.")
            if shape_got == tuple(f.shape):
                return failed(f"{what}: return the map M_s(f) of shape (B, H, W, 1), not the product M_s(f) ⊗ f.")
            if shape_got in {(B, 1, W, C), (B, W, C, 1)}:
                return failed(f"{what}: you pooled over axis 1, which holds H in the channels-last layout; the "
                              "channels are the last axis (f.mean(-1), or rearrange 'b h w c -> b c h w' first).")
            if got.shape == expected.shape:
                known = {
                    "the pooled maps are in the order [max; avg] (the official code's); eq. (3) stacks [avg; max], "
                    "and the weights here were made for that order":
                        _last(torch.sigmoid(_spatial_reference(fc, weight, bias, "max-avg"))),
                    "the sigmoid σ of eq. (3) is missing, so the map is not in (0, 1)": _last(logits),
                    "the values are a softmax over the positions; eq. (3) takes a sigmoid at each position, "
                    "independently": _last(torch.softmax(logits.flatten(2), -1).view_as(logits)),
                    "the convolution's bias is missing": _last(torch.sigmoid(_spatial_reference(fc, weight, None))),
                    "you summed over the channels; eq. (3)'s AvgPool is a mean over the C channels "
                    "(divide by C)": _last(torch.sigmoid(_spatial_reference(fc, weight, bias, "sum-max"))),
                    "both stacked maps are the mean; the second must be the max over channels":
                        _last(torch.sigmoid(_spatial_reference(fc, weight, bias, "avg-avg"))),
                    "both stacked maps are the max; the first must be the mean over channels":
                        _last(torch.sigmoid(_spatial_reference(fc, weight, bias, "max-max"))),
                    "the kernel is flipped: PyTorch's conv2d (and the paper's f) is a cross-correlation, "
                    "the filter is used as it is":
                        _last(torch.sigmoid(_spatial_reference(fc, weight.flip(-1, -2), bias))),
                    "the filter acted transposed: H and W were swapped on the way into conv2d and back "
                    "('b h w c -> b c w h'); rearrange 'b h w c -> b c h w'":
                        _last(torch.sigmoid(_spatial_reference(fc, weight.transpose(-1, -2), bias))),
                }
                fb = match_mistake(got, known, what=what, end=".")
                if fb is not None:
                    return fb
        bad = compare_tensors(got, expected, what=what)
        if bad is not None:
            return bad
    return passed(f"{what} computes M_s of eq. (3) on channels-last input: [avg; max] over the last axis, a "
                  "padded k×k convolution, σ, and the map back in the input's layout.")


def _bn(t: torch.Tensor, stats: tuple[torch.Tensor, ...], how: str = "eval", eps: float = 1e-5) -> torch.Tensor:
    mean, var, gamma, beta = stats
    if how == "batch":  # training mode: the batch's own statistics
        mean, var = t.mean((0, 2, 3)), t.var((0, 2, 3), unbiased=False)
    if how == "no-eps":
        eps = 0.0
    if how == "var":  # divided by the variance instead of the standard deviation
        return gamma * (t - mean) / (var + eps) + beta
    return gamma * (t - mean) / torch.sqrt(var + eps) + beta


# Exercise 3, cbam_spatial_first(f, w0, b0, w1, b1, conv_w, bn): the arrangement the paper's
# ablation ranked second (spatial gate first: F' = M_s(F) ⊗ F, F'' = M_c(F') ⊗ F'), with the
# official code's spatial gate: pooled maps [max; avg], a convolution without bias, a batch norm
# in inference mode (bn = (μ, v, γ, β), ε = 1e-5), then σ. No cell of the chapter computes this.
# Typical mistakes:
#   - the channel gate first (eq. (1)'s order) / both maps from F (the parallel arrangement)
#   - the pooled maps stacked [avg; max] (the paper's order), not the official [max; avg]
#   - the batch norm left out / normalised with the batch's statistics (training mode) /
#     divided by the variance instead of the standard deviation / ε forgotten
#   - the channel map with average pooling only (SE's squeeze) / max pooling only
#   - the two descriptors added before the MLP / a sigmoid on each MLP output / the ReLU δ left out
#   - F' returned (the channel gate forgotten) / the channel gate alone
def check_spatial_first(fn: Callable[..., Any]) -> Feedback:
    """Exercise 3: ``fn(f, w0, b0, w1, b1, conv_w, bn)`` equals ``CBAM(order="spatial-channel",
    spatial_norm=True, pool_order="max-avg")`` in eval mode."""
    what = "Your cbam_spatial_first"
    g = torch.Generator().manual_seed(7)
    m = CBAM(10, reduction=2, order="spatial-channel", spatial_norm=True, pool_order="max-avg").double().eval()
    with torch.no_grad():
        for p in m.channel_attention.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64))
        sa = m.spatial_attention
        sa.conv.weight.copy_(0.15 * torch.randn(sa.conv.weight.shape, generator=g, dtype=torch.float64))
        # a small running variance, so that a forgotten ε changes the map visibly (not by rounding)
        sa.norm.running_mean.fill_(0.3), sa.norm.running_var.fill_(4e-5)
        sa.norm.weight.fill_(0.012), sa.norm.bias.fill_(-0.2)
    ca = m.channel_attention
    w0, b0, w1, b1 = (t.detach() for t in (ca.fc0.weight, ca.fc0.bias, ca.fc1.weight, ca.fc1.bias))
    kw = sa.conv.weight.detach()
    stats = tuple(t.detach().clone() for t in (sa.norm.running_mean, sa.norm.running_var, sa.norm.weight, sa.norm.bias))

    def mlp(d: torch.Tensor, *, relu: bool = True) -> torch.Tensor:
        hidden = d @ w0.T + b0
        return (torch.relu(hidden) if relu else hidden) @ w1.T + b1

    def mc(x: torch.Tensor, how: str = "paper") -> torch.Tensor:
        avg, mx = x.mean((2, 3)), x.amax((2, 3))
        s = {
            "paper": lambda: torch.sigmoid(mlp(avg) + mlp(mx)),
            "sum-first": lambda: torch.sigmoid(mlp(avg + mx)),
            "avg-only": lambda: torch.sigmoid(mlp(avg)),
            "max-only": lambda: torch.sigmoid(mlp(mx)),
            "sigmoid-each": lambda: torch.sigmoid(mlp(avg)) + torch.sigmoid(mlp(mx)),
            "no-relu": lambda: torch.sigmoid(mlp(avg, relu=False) + mlp(mx, relu=False)),
        }[how]()
        return s[..., None, None]

    def ms(x: torch.Tensor, order: str = "max-avg", bn: str | None = "eval") -> torch.Tensor:
        t = _spatial_reference(x, kw, None, order)
        return torch.sigmoid(t if bn is None else _bn(t, stats, bn))

    def spatial_then_channel(x: torch.Tensor, how: str = "paper", order: str = "max-avg", bn: str | None = "eval"):
        f1 = ms(x, order, bn) * x
        return mc(f1, how) * f1

    for shape in [(3, 10, 6, 7), (4, 10, 9, 8)]:
        f = torch.randn(shape, generator=g, dtype=torch.float64)
        with torch.no_grad():
            expected = m(f)
        got, fb = run_answer(fn, f.clone(), w0, b0, w1, b1, kw, tuple(t.clone() for t in stats), what=what)
        if fb is not None:
            return fb
        if isinstance(got, torch.Tensor) and got.shape == expected.shape:
            got = got.detach().to(torch.float64)
            f_c = mc(f) * f
            known = {
                "you applied the channel map first (eq. (1)'s order); this arrangement starts with the spatial "
                "map: F' = M_s(F) ⊗ F, then F'' = M_c(F') ⊗ F'": ms(f_c) * f_c,
                "both maps come from F (the 'parallel' arrangement); here M_c is computed from F' = M_s(F) ⊗ F":
                    mc(f) * ms(f) * f,
                "the pooled maps are stacked [avg; max], the paper's order; the official gate, and the filter "
                "given here, stack [max; avg]": spatial_then_channel(f, order="avg-max"),
                "the batch norm is missing: the official gate is σ(BN(f([max; avg])))":
                    spatial_then_channel(f, bn=None),
                "the batch norm used the batch's own mean and variance (training mode); in inference it uses "
                "the running statistics μ and v that bn holds": spatial_then_channel(f, bn="batch"),
                "the batch norm divided by the variance v; it divides by the standard deviation √(v + ε)":
                    spatial_then_channel(f, bn="var"),
                "the batch norm's ε is missing: √(v + ε) with ε = 1e-5 (v is small here, so ε matters)":
                    spatial_then_channel(f, bn="no-eps"),
                "the channel map uses only average pooling (SE's squeeze); eq. (2) adds MLP(MaxPool(F'))":
                    spatial_then_channel(f, "avg-only"),
                "the channel map uses only max pooling; eq. (2) adds MLP(AvgPool(F')) and MLP(MaxPool(F'))":
                    spatial_then_channel(f, "max-only"),
                "you added the two descriptors before the MLP; eq. (2) runs the MLP on each and adds the "
                "outputs (the MLP is not linear)": spatial_then_channel(f, "sum-first"),
                "you took a sigmoid of each MLP output and added them; eq. (2) adds the two outputs and then "
                "takes one sigmoid": spatial_then_channel(f, "sigmoid-each"),
                "the ReLU δ between W0 and W1 is missing": spatial_then_channel(f, "no-relu"),
                "that is F' = M_s(F) ⊗ F only; multiply by the channel map M_c(F') as well": ms(f) * f,
                "that is the channel gate alone; the spatial map M_s(F) comes first": f_c,
            }
            fb = match_mistake(got, known, what=what, end=".")
            if fb is not None:
                return fb
        bad = compare_tensors(got, expected, what=what)
        if bad is not None:
            return bad
    return passed(f"{what} equals CBAM with the spatial gate first and the official spatial gate (eval mode).")
