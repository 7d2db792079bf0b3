"""Checkers for the exercises of the SimAM chapter."""

from __future__ import annotations

import math
from typing import Any, Callable

import torch

from . import Feedback, check_number, compare_tensors, failed, match_mistake, passed, run_answer

__all__ = [
    "check_max_gate",
    "check_simam_tokens",
    "check_exact_weights",
    "check_leave_one_out_energy",
    "leave_one_out_energy",
    "check_min_gate",
    "check_inverse_energy",
]


def _sigmoid(v: float) -> float:
    return 1.0 / (1.0 + math.exp(-v))


def check_min_gate(answer: Any) -> Feedback:
    """Exercise 1: the smallest value SimAM's gate sigmoid(1/e_t*) can take."""
    return check_number(
        answer,
        _sigmoid(0.5),
        what="The smallest SimAM gate",
        rel=1e-3,
        hints={
            0.5: "sigmoid(0) = 0.5, but 1/e_t* = (t − μ̂)²/(4(σ̂² + λ)) + 1/2 is never below 1/2.",
            0.0: "The sigmoid of 1/e_t* is never 0: 1/e_t* is at least 1/2.",
            _sigmoid(0.25): "That is sigmoid(1/4); the smallest 1/e_t* is 1/2 (a neuron equal to its channel mean).",
            _sigmoid(2.0): "That is sigmoid(e_t*) for e_t* = 2; the gate is the sigmoid of the *inverse* energy 1/e_t*.",
        },
    )


def _inverse_energy(x: torch.Tensor, lam: float, *, n_minus: int = 1, dims: tuple[int, ...] = (2, 3)) -> torch.Tensor:
    """1/E as the official code computes it (n = M − n_minus), over the axes ``dims``."""
    m = 1
    for d in dims:
        m *= x.shape[d]
    mu = x.mean(dims, keepdim=True)
    d = (x - mu) ** 2
    var = d.sum(dims, keepdim=True) / (m - n_minus)
    return d / (4 * (var + lam)) + 0.5


def check_inverse_energy(fn: Callable[..., Any]) -> Feedback:
    """Exercise 2: ``fn(x, lam)`` returns 1/E of shape (B, C, H, W), as SimAM's official code computes it."""
    what = "Your inverse_energy"
    g = torch.Generator().manual_seed(5)
    for shape, lam in [((2, 3, 3, 4), 1e-4), ((1, 4, 5, 2), 0.1)]:
        x = torch.randn(shape, generator=g, dtype=torch.float64) * 1.5 + 0.5
        got, fb = run_answer(fn, x.clone(), lam, what=what)
        if fb is not None:
            return fb
        expected = _inverse_energy(x, lam)
        if isinstance(got, torch.Tensor) and got.shape == expected.shape:
            got = got.to(torch.float64)
            known = {
                "the variance is divided by M = H·W; the official code divides by n = H·W − 1.": _inverse_energy(x, lam, n_minus=0),
                "the + 1/2 is missing: 1/e_t* = (t − μ̂)²/(4(σ̂² + λ)) + 1/2.": expected - 0.5,
                "that is the energy e_t*, not its inverse 1/e_t*.": 1 / expected,
                "that is the gate sigmoid(1/E); return 1/E itself.": torch.sigmoid(expected),
                "that is the output X · sigmoid(1/E); return 1/E itself.": x * torch.sigmoid(expected),
                "μ̂ and σ̂² are taken over (C, H, W); they are per channel, over (H, W) only.": _inverse_energy(x, lam, dims=(1, 2, 3)),
                "μ̂ and σ̂² are taken over the batch too; they are per image and per channel, over (H, W) only.": _inverse_energy(x, lam, dims=(0, 2, 3)),
            }
            fb = match_mistake(got, known, what=what, expected=expected)
            if fb is not None:
                return fb
        bad = compare_tensors(got, expected, what=what, atol=1e-8, rtol=1e-6)
        if bad is not None:
            return bad
    return passed(f"{what} equals the official code's 1/E, which SimAM feeds to its gate.")


# Exercise 1 (the largest gate on a 3 x 3 map, λ → 0), typical mistakes: the variance divided by
# M instead of M − 1, the + 1/2 forgotten, 1/e_t* given instead of the gate, 1 (the exact minimum
# of (2), where the others are all equal, or the sigmoid's supremum), the smallest gate instead
# of the largest, the deviation from the mean of the others (t − μ_t) used with the code's σ̂²,
# M taken as the side of the map (3) instead of the number of neurons (9).
def check_max_gate(answer: Any) -> Feedback:
    """Exercise 1: the largest gate sigmoid(1/e_t*) any neuron of a 3×3 map can get (code's formula, λ → 0)."""
    m = 9
    inv = (m - 1) ** 2 / (4 * m) + 0.5            # d_t / Σ d = (M − 1)/M at most, σ̂² = Σ d / (M − 1)
    return check_number(
        answer,
        _sigmoid(inv),
        what="The largest SimAM gate on a 3×3 map",
        rel=1e-3,
        hints={
            _sigmoid((m - 1) / 4 + 0.5): "That divides the variance by M = 9; the official code divides by n = M − 1 = 8.",
            _sigmoid((m - 1) ** 2 / (4 * m)): "The + 1/2 is missing: 1/e_t* = (t − μ̂)²/(4(σ̂² + λ)) + 1/2.",
            inv: "That is 1/e_t*; the gate is its sigmoid.",
            1.0: "The gate gets close to 1 only in the exact minimum of (2), where the other neurons are all equal "
            "(σ_t² = 0). With the channel's statistics, as the code computes them, the outlier is part of σ̂², "
            "so its gate is bounded below 1 on a finite map.",
            _sigmoid(0.5): "That is the smallest gate (a neuron equal to its channel mean); the question asks for the largest.",
            _sigmoid(m / 4 + 0.5): "That uses t − μ_t (the mean of the others); the code uses t − μ̂, the channel mean "
            "including t, which is (M − 1)/M times smaller.",
            _sigmoid((3 - 1) ** 2 / (4 * 3) + 0.5): "That takes M = 3, the side of the map; M is the number of neurons "
            "of a channel, H·W = 9.",
        },
    )


def _whole(x: torch.Tensor, lam: float) -> torch.Tensor:
    """SimAM with statistics over tokens and channels together (dims 1 and 2)."""
    m = x.shape[1] * x.shape[2]
    d = (x - x.mean((1, 2), keepdim=True)) ** 2
    return x * torch.sigmoid(d / (4 * (d.sum((1, 2), keepdim=True) / (m - 1) + lam)) + 0.5)


def _simam_tokens(x: torch.Tensor, lam: float, dim: int = 1, n_minus: int = 1) -> torch.Tensor:
    m = x.shape[dim]
    d = (x - x.mean(dim, keepdim=True)) ** 2
    return x * torch.sigmoid(d / (4 * (d.sum(dim, keepdim=True) / (m - n_minus) + lam)) + 0.5)


# Exercise 2 (SimAM on tokens (B, N, C)), typical mistakes: the statistics taken over the channel
# axis instead of the tokens, over the batch too, over the whole sequence (N and C), the variance
# divided by N, the + 1/2 forgotten, the gate returned instead of the output, the inverse energy
# returned, λ left out. B, N and C differ in every case.
def check_simam_tokens(fn: Callable[..., Any]) -> Feedback:
    """Exercise 2: ``fn(x, lam)`` applies SimAM to tokens ``(B, N, C)``: statistics over the N tokens of each channel."""
    what = "Your simam_tokens"
    g = torch.Generator().manual_seed(11)
    for shape, lam in [((2, 6, 5), 0.1), ((3, 4, 7), 0.3)]:
        x = torch.randn(shape, generator=g, dtype=torch.float64) * 1.5 + 0.5
        got, fb = run_answer(fn, x.clone(), lam, what=what)
        if fb is not None:
            return fb
        expected = _simam_tokens(x, lam)
        if isinstance(got, torch.Tensor) and got.shape == expected.shape:
            got = got.to(torch.float64)
            m = x.shape[1]
            d = (x - x.mean(1, keepdim=True)) ** 2
            inv = d / (4 * (d.sum(1, keepdim=True) / (m - 1) + lam)) + 0.5
            bd = (x - x.mean((0, 1), keepdim=True)) ** 2
            batch = x * torch.sigmoid(bd / (4 * (bd.sum((0, 1), keepdim=True) / (x.shape[0] * m - 1) + lam)) + 0.5)
            known = {
                "the statistics are taken over the channel axis C; SimAM compares a neuron with the other neurons "
                "of its channel, here the N tokens (axis 1).": _simam_tokens(x, lam, dim=2),
                "the statistics include the batch; they are per sequence and per channel, over the N tokens only.": batch,
                "the statistics are taken over the whole sequence (N and C); SimAM's are per channel, over the N "
                "tokens of that channel only.": _whole(x, lam),
                "the variance is divided by N; the official code divides by n = N − 1.": _simam_tokens(x, lam, n_minus=0),
                "the + 1/2 is missing: 1/e_t* = (t − μ̂)²/(4(σ̂² + λ)) + 1/2.": x * torch.sigmoid(inv - 0.5),
                "that is the gate sigmoid(1/E); return x times it.": torch.sigmoid(inv),
                "that is the inverse energy 1/E; return x · sigmoid(1/E).": inv,
                "λ is missing from the denominator 4(σ̂² + λ).": x * torch.sigmoid(d / (4 * d.sum(1, keepdim=True) / (m - 1)) + 0.5),
            }
            fb = match_mistake(got, known, what=what, expected=expected)
            if fb is not None:
                return fb
        bad = compare_tensors(got, expected, what=what, atol=1e-8, rtol=1e-6)
        if bad is not None:
            return bad
    return passed(f"{what} is SimAM over the tokens of each channel: x · sigmoid(1/E) with statistics over N.")


def leave_one_out_energy(x: torch.Tensor, lam: float) -> torch.Tensor:
    """The exact minimum of the energy (2) for every neuron: μ_t, σ_t² over the M − 1 *other* neurons."""
    m = x.shape[2] * x.shape[3]
    s1 = x.sum((2, 3), keepdim=True)
    s2 = (x**2).sum((2, 3), keepdim=True)
    mu_t = (s1 - x) / (m - 1)
    var_t = (s2 - x**2) / (m - 1) - mu_t**2
    return 4 * (var_t + lam) / ((x - mu_t) ** 2 + 2 * var_t + 2 * lam)


def _exact_weights(x: torch.Tensor, lam: float, *, channel_stats: bool = False, n_minus: int = 1
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """The minimiser (w_t, b_t) of the energy (2), eqs. (3)-(4), for every neuron of ``x`` (B, C, H, W).

    μ_t and σ_t² are over the M − 1 *other* neurons of the channel (their variance divided by M − n_minus);
    with ``channel_stats`` the channel's mean and variance of all M neurons are used instead (divided by M − 1)."""
    m = x.shape[2] * x.shape[3]
    if channel_stats:
        mu = x.mean((2, 3), keepdim=True)
        var = ((x - mu) ** 2).sum((2, 3), keepdim=True) / (m - 1)
    else:
        mu = (x.sum((2, 3), keepdim=True) - x) / (m - 1)
        ss = (x**2).sum((2, 3), keepdim=True) - x**2 - (m - 1) * mu**2     # Σ over the others of (x_i − μ_t)²
        var = ss / (m - n_minus)
    w = 2 * (x - mu) / ((x - mu) ** 2 + 2 * var + 2 * lam)
    return w, -0.5 * (x + mu) * w


# Exercise 3 (the minimiser (w_t, b_t) of eqs. (3)-(4) for every neuron at once), typical mistakes:
# w_t with the minus sign quoted in the literature (the minimiser of the swapped labels, so b_t's
# sign flips with it); b_t with the wrong sign; b_t from t − μ_t instead of t + μ_t; the channel's
# statistics of all M neurons (the official code's) instead of the M − 1 others'; the variance of
# the others divided by M − 2; λ left out; the pair returned as (b, w); a single tensor returned.
# B, C, H and W differ in every case.
def check_exact_weights(fn: Callable[..., Any]) -> Feedback:
    """Exercise 3: ``fn(x, lam)`` returns the pair (w, b) of eqs. (3)-(4), each (B, C, H, W), for every neuron."""
    what = "Your exact_weights"
    g = torch.Generator().manual_seed(13)
    for shape, lam in [((3, 2, 4, 5), 1e-2), ((2, 4, 3, 5), 0.1)]:
        x = torch.randn(shape, generator=g, dtype=torch.float64) * 1.3 + 0.4
        got, fb = run_answer(fn, x.clone(), lam, what=what)
        if fb is not None:
            return fb
        if isinstance(got, torch.Tensor):
            return failed(f"{what}: it returned one tensor of shape {tuple(got.shape)}; return the pair (w, b), "
                          "w_t of eq. (3) and b_t of eq. (4), each of the input's shape.")
        if not isinstance(got, (tuple, list)) or len(got) != 2 or not all(isinstance(t, torch.Tensor) for t in got):
            return failed(f"{what}: expected a pair of tensors (w, b), got {type(got).__name__}")
        w, b = _exact_weights(x, lam)
        expected = torch.stack([w, b])
        if any(tuple(t.shape) != shape for t in got):
            return failed(f"{what}: w and b have shapes {tuple(got[0].shape)} and {tuple(got[1].shape)}; each must "
                          f"have the input's shape {shape}, one w_t and one b_t per neuron.")
        pair = torch.stack([t.detach().to(torch.float64) for t in got])
        m = shape[2] * shape[3]
        mu_t = (x.sum((2, 3), keepdim=True) - x) / (m - 1)
        known = {
            "that is the minimiser for the swapped labels (t → −1, others → +1), w_t = −2(t − μ_t)/(…), the sign "
            "quoted in the literature; with the labels of eq. (2), w_t = +2(t − μ_t)/(…), and b_t flips with it.":
                torch.stack([-w, -b]),
            "b_t has the wrong sign: b_t = −½ (t + μ_t) w_t.": torch.stack([w, -b]),
            "b_t uses t − μ_t; eq. (4) is b_t = −½ (t + μ_t) w_t.": torch.stack([w, -0.5 * (x - mu_t) * w]),
            "that uses the channel's mean and variance of all M neurons (the official code's statistics); the "
            "minimiser of (2) uses the M − 1 others: μ_t = (Σ x − t)/(M − 1), and σ_t² likewise.":
                torch.stack(_exact_weights(x, lam, channel_stats=True)),
            "σ_t² is divided by M − 2; the energy (2) averages over the M − 1 others, so divide by M − 1.":
                torch.stack(_exact_weights(x, lam, n_minus=2)),
            "λ is missing: w_t = 2(t − μ_t)/((t − μ_t)² + 2σ_t² + 2λ).": torch.stack(_exact_weights(x, 0.0)),
            "the pair is (b, w); return (w, b), w_t of eq. (3) first.": torch.stack([b, w]),
        }
        fb = match_mistake(pair, known, what=what, expected=expected)
        if fb is not None:
            return fb
        for name, t, e in [("w", pair[0], w), ("b", pair[1], b)]:
            bad = compare_tensors(t, e, what=f"{what} ({name})", atol=1e-8, rtol=1e-6)
            if bad is not None:
                return bad
    return passed(f"{what} is the minimiser of the energy (2) for every neuron: w_t = 2(t − μ_t)/((t − μ_t)² + "
                  "2σ_t² + 2λ), b_t = −½ (t + μ_t) w_t, with μ_t and σ_t² of the M − 1 others.")


# The former exercise 3 (the chapter imports leave_one_out_energy for its table, so its answer was
# importable); kept for older copies. Typical mistakes: the official code's energy (statistics of all M neurons, variance
# over M − 1), the statistics of all M divided by M, the variance of the others divided by M − 2,
# 1/e_t* returned instead of e_t*, λ left out, the gate sigmoid(1/e_t*) returned.
def check_leave_one_out_energy(fn: Callable[..., Any]) -> Feedback:
    """Exercise 3: ``fn(x, lam)`` returns the exact e_t* (statistics of the M − 1 others) for every neuron."""
    what = "Your leave_one_out_energy"
    g = torch.Generator().manual_seed(7)
    for shape, lam in [((2, 3, 2, 3), 1e-4), ((1, 2, 4, 5), 0.1)]:
        x = torch.randn(shape, generator=g, dtype=torch.float64) + 0.3
        got, fb = run_answer(fn, x.clone(), lam, what=what)
        if fb is not None:
            return fb
        expected = leave_one_out_energy(x, lam)
        if isinstance(got, torch.Tensor) and got.shape == expected.shape:
            got = got.to(torch.float64)
            code = 1 / _inverse_energy(x, lam)
            pop = 1 / _inverse_energy(x, lam, n_minus=0)
            m = shape[2] * shape[3]
            mu_t = (x.sum((2, 3), keepdim=True) - x) / (m - 1)
            ss_t = (x**2).sum((2, 3), keepdim=True) - x**2 - (m - 1) * mu_t**2
            unbiased = 4 * (ss_t / (m - 2) + lam) / ((x - mu_t) ** 2 + 2 * ss_t / (m - 2) + 2 * lam)
            known = {
                "that is the official code's energy, with μ̂ and σ̂² of all M neurons. The minimum of (2) uses the "
                "M − 1 others: μ_t = (Σ x − t)/(M − 1), and σ_t² likewise.": code,
                "that uses the mean and variance of all M neurons (divided by M). The minimum of (2) uses the M − 1 "
                "others: μ_t = (Σ x − t)/(M − 1), and σ_t² likewise.": pop,
                "σ_t² is divided by M − 2; the energy (2) averages over the M − 1 others, so divide by M − 1.": unbiased,
                "that is 1/e_t*; return the energy e_t* itself.": 1 / expected,
                "λ is missing: e_t* = 4(σ_t² + λ)/((t − μ_t)² + 2σ_t² + 2λ).": leave_one_out_energy(x, 0.0),
                "that is the gate sigmoid(1/e_t*); return the energy e_t* itself.": torch.sigmoid(1 / expected),
            }
            fb = match_mistake(got, known, what=what, expected=expected)
            if fb is not None:
                return fb
        bad = compare_tensors(got, expected, what=what, atol=1e-8, rtol=1e-6)
        if bad is not None:
            return bad
    return passed(f"{what} equals the exact minimum of the energy (2) for every neuron.")
