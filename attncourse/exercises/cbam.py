"""Checkers for the exercises of the CBAM chapter."""

from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F

from ..hybrid.cbam import CBAM
from . import Feedback, check_number, compare_tensors, failed, passed, run_answer

__all__ = ["check_cbam_parameters", "check_spatial_map", "check_cbam_function"]


def _mlp_params(c: int, r: int, bias: bool = True) -> int:
    h = c // r
    return 2 * c * h + ((h + c) if bias else 0)


def check_cbam_parameters(answer: Any) -> Feedback:
    """Exercise 1: parameters of ``CBAM(256)`` with the defaults (r = 16, k = 7, the paper's mode)."""
    c, r, k = 256, 16, 7
    mlp = _mlp_params(c, r)
    return check_number(
        answer,
        mlp + 2 * k * k + 1,
        what="Parameters of CBAM(256)",
        hints={
            mlp + 2 * k * k: "The 7×7 convolution of the paper's mode has a bias: add 1.",
            mlp + 2 * k * k + 2: "That is the official code's spatial gate (conv without bias + BN γ, β); "
            "the default follows the paper: conv with bias, no BN.",
            2 * mlp + 2 * k * k + 1: "The MLP is shared by the average- and max-pooled descriptors: count it once.",
            _mlp_params(c, r, bias=False) + 2 * k * k + 1: "The MLP's two nn.Linear layers have biases: add C/r + C.",
            mlp: "That is only the channel attention; the spatial 7×7 convolution has parameters too.",
            mlp + k * k + 1: "The convolution reads two maps ([avg; max]), so it has 2·7·7 weights.",
            mlp + 2 * k * k * c + 1: "The convolution reads the two pooled maps, not the C channels.",
        },
    )


def _spatial_reference(f: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, order: str = "avg-max") -> torch.Tensor:
    avg, mx = f.mean(1, keepdim=True), f.amax(1, keepdim=True)
    pooled = torch.cat([avg, mx] if order == "avg-max" else [mx, avg], 1)
    return F.conv2d(pooled, weight, bias, padding=weight.shape[-1] // 2)


def check_spatial_map(fn: Callable[..., Any]) -> Feedback:
    """Exercise 2: ``fn(f, weight, bias)`` returns M_s(f) of eq. (3), shape (B, 1, H, W)."""
    what = "Your spatial_map"
    g = torch.Generator().manual_seed(5)
    for shape, k in [((2, 6, 9, 11), 7), ((1, 4, 8, 3), 3)]:
        f = torch.randn(shape, generator=g, dtype=torch.float64)
        weight = torch.randn(1, 2, k, k, generator=g, dtype=torch.float64)
        bias = torch.randn(1, generator=g, dtype=torch.float64)
        got, fb = run_answer(fn, f, weight, bias, what=what)
        if fb is not None:
            return fb
        expected = torch.sigmoid(_spatial_reference(f, weight, bias))
        if isinstance(got, torch.Tensor):
            B, C, H, W = shape
            if got.dim() == 4 and got.shape[:2] == (B, 1) and got.shape[2:] == (H - k + 1, W - k + 1):
                return failed(f"{what}: the map shrank to {tuple(got.shape[2:])}; pad by k // 2 so it keeps H x W = {(H, W)}.")
            if got.shape == (B, H, W):
                return failed(f"{what}: keep the map's channel axis: the shape should be (B, 1, H, W), got {tuple(got.shape)}.")
            if got.shape == f.shape:
                return failed(f"{what}: return the map M_s(f) of shape (B, 1, H, W), not the product M_s(f) ⊗ f.")
            if got.shape == expected.shape:
                if torch.allclose(got, torch.sigmoid(_spatial_reference(f, weight, bias, "max-avg"))):
                    return failed(f"{what}: the pooled maps are in the order [max; avg]; eq. (3) stacks [avg; max] "
                                  "(the official code's order, which the weights here were not made for).")
                if torch.allclose(got, _spatial_reference(f, weight, bias)):
                    return failed(f"{what}: the sigmoid σ of eq. (3) is missing, so the map is not in (0, 1).")
                if torch.allclose(got, torch.sigmoid(_spatial_reference(f, weight, bias) - bias)):
                    return failed(f"{what}: the convolution's bias is missing.")
        bad = compare_tensors(got, expected, what=what)
        if bad is not None:
            return bad
    return passed(f"{what} computes M_s of eq. (3): [avg; max] over channels, a padded k×k convolution, σ.")


def check_cbam_function(fn: Callable[..., Any]) -> Feedback:
    """Exercise 3: ``fn(f, w0, b0, w1, b1, conv_w, conv_b)`` equals ``CBAM`` (channel first, paper mode)."""
    what = "Your cbam_function"
    g = torch.Generator().manual_seed(7)
    m = CBAM(12, reduction=3).double().eval()
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64))
    ca, sa = m.channel_attention, m.spatial_attention
    weights = (ca.fc0.weight, ca.fc0.bias, ca.fc1.weight, ca.fc1.bias, sa.conv.weight, sa.conv.bias)

    def mlp(d: torch.Tensor) -> torch.Tensor:
        return ca.fc1(torch.relu(ca.fc0(d)))

    def mc(x: torch.Tensor, how: str = "paper") -> torch.Tensor:
        if how == "sum-first":
            s = mlp(x.mean((2, 3)) + x.amax((2, 3)))
        elif how == "avg-only":
            s = mlp(x.mean((2, 3)))
        else:
            s = mlp(x.mean((2, 3))) + mlp(x.amax((2, 3)))
        return torch.sigmoid(s)[..., None, None]

    def ms(x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(_spatial_reference(x, sa.conv.weight, sa.conv.bias))

    for shape in [(2, 12, 5, 7), (1, 12, 4, 4)]:
        f = torch.randn(shape, generator=g, dtype=torch.float64)
        with torch.no_grad():
            expected = m(f)
        got, fb = run_answer(fn, f, *weights, what=what)
        if fb is not None:
            return fb
        if isinstance(got, torch.Tensor) and got.shape == expected.shape:
            got = got.detach()
            f1 = ms(f) * f
            wrong = {
                "spatial first": mc(f1) * f1,
                "parallel": mc(f) * ms(f) * f,
                "sum-first": ms(mc(f, "sum-first") * f) * (mc(f, "sum-first") * f),
                "avg-only": ms(mc(f, "avg-only") * f) * (mc(f, "avg-only") * f),
                "no spatial": mc(f) * f,
            }
            wrong = {k: v.detach() for k, v in wrong.items()}
            if torch.allclose(got, wrong["spatial first"]):
                return failed(f"{what}: you applied the spatial map first; eq. (1) is channel first: F' = M_c(F) ⊗ F, then F'' = M_s(F') ⊗ F'.")
            if torch.allclose(got, wrong["parallel"]):
                return failed(f"{what}: both maps come from F (the 'parallel' arrangement); in eq. (1) M_s is computed from F', the channel-refined map.")
            if torch.allclose(got, wrong["sum-first"]):
                return failed(f"{what}: you added the two descriptors before the MLP; eq. (2) runs the MLP on each and adds the outputs (the MLP is not linear, and b1 counts twice).")
            if torch.allclose(got, wrong["avg-only"]):
                return failed(f"{what}: the channel map uses only average pooling (that is SE); eq. (2) adds MLP(MaxPool(F)).")
            if torch.allclose(got, wrong["no spatial"]):
                return failed(f"{what}: that is F' only; multiply by the spatial map M_s(F') as well.")
        bad = compare_tensors(got, expected, what=what)
        if bad is not None:
            return bad
    return passed(f"{what} equals CBAM (channel then spatial) on random weights and inputs.")
