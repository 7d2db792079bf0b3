"""Checkers for the exercises of the DANet chapter.

Above each checker, a comment lists the mistakes a learner typically makes on that exercise;
each one gets its own message (``tests/test_checkers_danet.py`` tries every one of them).
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from . import Feedback, check_number, compare_tensors, failed, match_mistake, passed, run_answer

__all__ = ["check_dual_parameters", "check_cam_function", "check_pam_function"]


def _pam_params(c: int, d: int, *, biases: bool = True) -> int:
    return 2 * (c * d + (d if biases else 0)) + c * c + (c if biases else 0)


# Exercise 1, DualAttention(128, reduction=16): d = 8.
# Typical mistakes:
#   - the query/key width taken as C/8 (the default) instead of C/reduction
#   - the convolutions' biases forgotten
#   - the scales forgotten: both α and β, or only β (CAM "has no parameters")
#   - the channel module counted with convolutions like the position module's (a second PAM)
#   - the value convolution reduced to the query/key width too (C·d + d instead of C² + C)
#   - the paper's text read literally: batch norm (γ, β) after the query and key convolutions
#   - one convolution shared by query and key (counted once)
def check_dual_parameters(answer: Any) -> Feedback:
    """Exercise 1: parameters of ``DualAttention(128, reduction=16)``."""
    c, d = 128, 128 // 16
    pam = _pam_params(c, d) + 1
    right = pam + 1
    return check_number(
        answer,
        right,
        what="Parameters of DualAttention(128, reduction=16)",
        hints={
            _pam_params(c, c // 8) + 2: "That is the default width C/8 = 16; with reduction=16 the query and key "
            "convolutions have C/16 = 8 output channels.",
            _pam_params(c, d, biases=False) + 2: "The three 1×1 convolutions have biases (as in the official code): "
            "add 2·8 + 128.",
            _pam_params(c, d): "The two scales α and β are parameters too (one number each).",
            _pam_params(c, d) + 1: "One scale is missing: the channel module has no convolution, but it has its own "
            "learned β (one parameter).",
            2 * _pam_params(c, d) + 2: "The channel module has no convolutions: its affinity is A Aᵀ, computed from "
            "the input itself, so it adds only β.",
            2 * (c * d + d) + c * d + d + 2: "The value convolution D keeps all C = 128 channels (C² + C parameters); "
            "only the query and key are reduced.",
            right + 4 * d: "The paper's text mentions batch norm and ReLU after the query and key convolutions, but "
            "the official code (which the module follows) has plain 1×1 convolutions: no γ, β.",
            c * d + d + c * c + c + 2: "The query and key convolutions are two separate 1×1 convolutions (the "
            "paper's B and C), each with its own weights.",
        },
    )


def _random(shape: tuple[int, ...], g: torch.Generator, scale: float = 1.0) -> torch.Tensor:
    return scale * torch.randn(shape, generator=g, dtype=torch.float64)


def _cam(x: torch.Tensor, beta: torch.Tensor, how: str = "right") -> torch.Tensor:
    a = x.flatten(2)
    energy = a @ a.transpose(1, 2)
    X = {"official": lambda: torch.softmax(-energy, -1), "sigmoid": lambda: torch.sigmoid(energy),
         "mean": lambda: torch.softmax(energy / a.shape[-1], -1)}.get(how, lambda: torch.softmax(energy, -1))()
    if how == "transposed":
        X = X.transpose(1, 2)
    out = (X @ a).view_as(x)
    return {"no residual": lambda: beta * out, "no beta": lambda: out + x}.get(how, lambda: beta * out + x)()


# Exercise 2, cam_function(x, beta) = E of eqs. (3)-(4), the paper's affinity.
# Typical mistakes:
#   - the weights normalised over the wrong axis, or X transposed in the product (Xᵀ A); since
#     E = A Aᵀ is symmetric, the two mistakes give the same result
#   - the official code's affinity, softmax(max(E) - E) = softmax(-E), instead of the paper's
#   - a sigmoid instead of the softmax
#   - the energies divided by N (a mean over positions instead of the dot product)
#   - the residual "+ A" forgotten / the scale β forgotten
#   - the attention map X (B, C, C) returned instead of E
#   - the position affinity Aᵀ A (N × N) used instead of the channel affinity
def check_cam_function(fn: Callable[..., Any]) -> Feedback:
    """Exercise 2: ``fn(x, beta)`` returns E = β X A + A with X = softmax over i of A_i · A_j."""
    what = "Your cam_function"
    g = torch.Generator().manual_seed(11)
    for shape in [(2, 6, 4, 5), (1, 5, 3, 7)]:
        x, beta = _random(shape, g, 0.3), _random((1,), g)
        got, fb = run_answer(fn, x, beta, what=what)
        if fb is not None:
            return fb
        expected = _cam(x, beta)
        if isinstance(got, torch.Tensor):
            got = got.detach().to(torch.float64)
            B, C, H, W = shape
            if got.shape == (B, C, C):
                return failed(f"{what}: that has the shape of the attention map X, (B, C, C); return E = β X A + A, "
                              f"shape {tuple(shape)}.")
            if got.shape in ((B, H * W, H * W), (B, 1, H * W, H * W)):
                return failed(f"{what}: that is an N × N map over positions (Aᵀ A, the position module's kind); "
                              "the channel module compares channels: A Aᵀ is C × C.")
            if got.shape == expected.shape:
                known = {
                    "the weights of channel j must sum to 1 over i and multiply A from the left: softmax over the "
                    "last axis of E = A Aᵀ, then X A (not Xᵀ A, nor a softmax over dim 1, which is the same thing "
                    "here because E is symmetric)": _cam(x, beta, "transposed"),
                    "that is the official code's affinity, softmax(max(E) − E) = softmax(−E), which favours "
                    "dissimilar channels; the exercise asks for the paper's eq. (3), softmax(E)": _cam(x, beta, "official"),
                    "eq. (3) is a softmax over i, not an independent sigmoid per pair": _cam(x, beta, "sigmoid"),
                    "the energies are dot products A_i · A_j, sums over the N positions; you divided them by N":
                        _cam(x, beta, "mean"),
                    "the residual + A_j of eq. (4) is missing": _cam(x, beta, "no residual"),
                    "the scale β of eq. (4) is missing (it multiplies the aggregated channels, not A)":
                        _cam(x, beta, "no beta"),
                }
                fb = match_mistake(got, known, what=what, expected=expected, end=".")
                if fb is not None:
                    return fb
        bad = compare_tensors(got, expected, what=what)
        if bad is not None:
            return bad
    return passed(f"{what} computes eqs. (3)-(4): X = softmax_i(A_i · A_j), E = β X A + A.")


def _pam(x: torch.Tensor, wq, bq, wk, bk, wv, bv, alpha, how: str = "right") -> torch.Tensor:
    a = x.flatten(2)
    q = wq @ a + bq[:, None]  # the paper's C (queries)
    k = wk @ a + bk[:, None]  # the paper's B (keys)
    v = wv @ a + bv[:, None]  # D
    if how == "swapped":
        q, k = k, q
    if how == "no value":
        v = a
    logits = q.transpose(1, 2) @ k  # [j, i] = C_j · B_i
    if how == "scaled":
        logits = logits / q.shape[1] ** 0.5
    S = torch.softmax(logits, dim=1 if how == "softmax over j" else -1)
    if how == "sigmoid":
        S = torch.sigmoid(logits)
    out = (v @ (S if how == "D S" else S.transpose(1, 2))).view_as(x)
    return {"no residual": lambda: alpha * out, "no alpha": lambda: out + x}.get(how, lambda: alpha * out + x)()


# Exercise 3, pam_function(x, wq, bq, wk, bk, wv, bv, alpha) = E of eqs. (1)-(2); wq, wk are the
# paper's C and B (official query_conv, key_conv) as (d, C) matrices, wv is D as (C, C).
# Typical mistakes:
#   - query and key exchanged (the energies transposed before the softmax)
#   - D S instead of D Sᵀ (position j gets Σ_i s_ij D_i)
#   - the softmax over the output positions j instead of the attended positions i
#   - the logits scaled by 1/sqrt(d), as in the Transformer (DANet does not scale)
#   - a sigmoid instead of the softmax
#   - the value convolution D skipped (A aggregated instead of D)
#   - the residual "+ A" forgotten / the scale α forgotten
#   - the attention map S (B, N, N) returned instead of E
#   - the channel module's affinity (C × C, from A) computed instead
def check_pam_function(fn: Callable[..., Any]) -> Feedback:
    """Exercise 3: ``fn(x, wq, bq, wk, bk, wv, bv, alpha)`` returns E = α D Sᵀ + A of eqs. (1)-(2)."""
    what = "Your pam_function"
    g = torch.Generator().manual_seed(13)
    for shape, d in [((2, 8, 3, 5), 2), ((1, 6, 4, 4), 3)]:
        B, C, H, W = shape
        x = _random(shape, g)
        weights = (_random((d, C), g, 0.5), _random((d,), g), _random((d, C), g, 0.5), _random((d,), g),
                   _random((C, C), g, 0.5), _random((C,), g), _random((1,), g))
        got, fb = run_answer(fn, x, *weights, what=what)
        if fb is not None:
            return fb
        expected = _pam(x, *weights)
        if isinstance(got, torch.Tensor):
            got = got.detach().to(torch.float64)
            if got.shape in ((B, H * W, H * W), (B, 1, H * W, H * W)):
                return failed(f"{what}: that is the attention map S, (B, N, N); return E = α D Sᵀ + A, "
                              f"shape {tuple(shape)}.")
            if got.shape == (B, C, C):
                return failed(f"{what}: a C × C map is the channel module's affinity; the position module compares "
                              "positions, with the query and key convolutions: S is N × N.")
            if got.shape == expected.shape:
                known = {
                    "query and key are exchanged: in eq. (1) the output position j brings the query C_j (wq) and "
                    "the attended positions i the keys B_i (wk)": _pam(x, *weights, "swapped"),
                    "that is D S; eq. (2) sums Σ_i s_ji D_i, which is D Sᵀ (row j of S holds the weights of "
                    "output position j)": _pam(x, *weights, "D S"),
                    "the softmax runs over the output positions j; eq. (1) normalises over the attended "
                    "positions i (the last axis of the energies [j, i])": _pam(x, *weights, "softmax over j"),
                    "you scaled the logits by 1/√d as a Transformer does; DANet's eq. (1) uses the plain dot "
                    "product B_i · C_j": _pam(x, *weights, "scaled"),
                    "eq. (1) is a softmax over i, not an independent sigmoid per pair": _pam(x, *weights, "sigmoid"),
                    "the values are D = wv A + bv, a third 1×1 convolution; you aggregated A itself":
                        _pam(x, *weights, "no value"),
                    "the residual + A_j of eq. (2) is missing": _pam(x, *weights, "no residual"),
                    "the scale α of eq. (2) is missing (it multiplies the aggregated values, not A)":
                        _pam(x, *weights, "no alpha"),
                }
                fb = match_mistake(got, known, what=what, expected=expected, end=".")
                if fb is not None:
                    return fb
        bad = compare_tensors(got, expected, what=what)
        if bad is not None:
            return bad
    return passed(f"{what} computes eqs. (1)-(2): S = softmax_i(B_i · C_j), E = α D Sᵀ + A.")
