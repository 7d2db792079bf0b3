"""Checkers for the exercises of the non-local chapter (the file name avoids the keyword ``nonlocal``).

Above each checker, a comment lists the mistakes a learner typically makes on that exercise;
each one gets its own message (``tests/test_checkers_nonlocal.py`` tries every one of them).
"""

from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F
from einops import rearrange

from . import Feedback, check_number, compare_tensors, failed, match_mistake, passed, run_answer

__all__ = ["check_concat_parameters", "check_default_macs", "check_dot_product_y", "check_subsampled_weights"]


def _params(c: int, d: int, *, embed: bool = True, w_f: int = 0, biases: bool = True, bn: int = 2) -> int:
    per = c * d + (d if biases else 0)
    projections = 3 * per if embed else per
    return projections + d * c + (c if biases else 0) + bn * c + w_f


# Exercise 1, parameters of NonLocalBlock(256, pairwise="concatenation") (d = C/2 = 128).
# Typical mistakes:
#   - w_f forgotten (the embedded-Gaussian count)
#   - w_f with a bias (+1)
#   - w_f of length d (only one of the two concatenated vectors) / of length 2C (concatenating x_i, x_j)
#   - the batch norm's running mean and variance counted (buffers, not parameters)
#   - the batch norm after W_z forgotten
#   - the biases of the four 1×1 convolutions forgotten
#   - the inner width C instead of C/2
#   - θ and φ left out (the Gaussian's count, which has no embeddings), with w_f
def check_concat_parameters(answer: Any) -> Feedback:
    """Exercise 1: parameters of ``NonLocalBlock(256, pairwise="concatenation")``."""
    c, d = 256, 128
    right = _params(c, d, w_f=2 * d)
    return check_number(
        answer,
        right,
        what="Parameters of NonLocalBlock(256, pairwise='concatenation')",
        hints={
            _params(c, d): "That is the embedded-Gaussian count: the concatenation adds w_f, which maps "
            "[θ(x_i), φ(x_j)] (2 × C/2 numbers) to one scalar.",
            _params(c, d, w_f=2 * d + 1): "w_f has no bias in eq. (5) (nor in the module): only its 2 × C/2 weights.",
            _params(c, d, w_f=d): "w_f reads the concatenation [θ(x_i), φ(x_j)]: C/2 + C/2 numbers, not C/2.",
            _params(c, d, w_f=2 * c): "w_f reads [θ(x_i), φ(x_j)], the embedded vectors of C/2 channels each, "
            "not the raw x_i, x_j of C channels.",
            _params(c, d, w_f=2 * d, bn=4): "The batch norm's running mean and variance are buffers, not "
            "parameters: count only its weight and bias (2C).",
            _params(c, d, w_f=2 * d, bn=0): "W_z is followed by a batch norm (weight and bias: 2C); "
            "it is what makes the block start as the identity.",
            _params(c, d, w_f=2 * d, biases=False): "The four 1×1 convolutions (θ, φ, g, W_z) have biases, "
            "as in the official code: add 3 × C/2 + C.",
            _params(c, c, w_f=2 * c): "The inner width is C/2 = 128 (reduction=2), not C.",
            _params(c, d, embed=False, w_f=2 * d): "The concatenation embeds with θ and φ (eq. 5); only the "
            "Gaussian (eq. 2) has no embeddings.",
        },
    )


def _default_macs(c: int, n: int, m: int | None = None, d: int | None = None, *, attention: int = 2) -> int:
    m = n if m is None else m
    d = c // 2 if d is None else d
    return n * c * d + 2 * m * c * d + attention * n * m * d + n * d * c


# Exercise 2, multiply-adds of the default NonLocalBlock(512) on one 14×14 map (N = 196).
# Typical mistakes:
#   - FLOPs as FlopCounterMode counts them (2 per multiply-add), not multiply-adds
#   - the two N × N products (θᵀφ and the weighted sum of g) left out
#   - only one of the two N × N products
#   - with sub-sampling (not the default): φ and g on 49 positions
#   - the inner width C instead of C/2 (exactly twice the answer too: every term is proportional
#     to the inner width, so it shares the FLOPs message, which names both)
#   - W_z left out
def check_default_macs(answer: Any) -> Feedback:
    """Exercise 2: multiply-adds of ``NonLocalBlock(512)`` on a ``(1, 512, 14, 14)`` input."""
    c, n = 512, 14 * 14
    right = _default_macs(c, n)
    return check_number(
        answer,
        right,
        what="Multiply-adds of NonLocalBlock(512) on 14×14",
        hints={
            2 * right: "That is twice the answer: either FLOPs as FlopCounterMode counts them (2 per "
            "multiply-add; the question asks for multiply-adds, as papers count them: halve it), or an "
            "inner width of C instead of C/2 = 256 (every term is proportional to the inner width).",
            _default_macs(c, n, attention=0): "The two N × N products are missing: θ(x_i)ᵀφ(x_j) for every "
            "pair (N² · C/2) and Σ_j f g(x_j) (N² · C/2 again).",
            _default_macs(c, n, attention=1): "Only one N × N product is counted: the logits θᵀφ and the "
            "weighted sum of the g(x_j) each cost N² · C/2.",
            _default_macs(c, n, m=49): "That is with the 2×2 sub-sampling (49 keys); the default has none.",
            _default_macs(c, n) - n * (c // 2) * c: "W_z (C/2 → C at every position, N · C/2 · C) is missing.",
        },
    )


def _tokens(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    t = rearrange(x, "b c h w -> b (h w) c") @ w.T
    return t + b if b is not None else t


def _random_weights(g: torch.Generator, c: int, d: int) -> list[torch.Tensor]:
    return [torch.randn(*s, generator=g, dtype=torch.float64) * 0.4 for s in [(d, c), (d,), (d, c), (d,), (d, c), (d,)]]


# Exercise 3, dot_product_y(x, w_theta, b_theta, w_phi, b_phi, w_g, b_g) = y of eq. (1) with f of
# eq. (4), C(x) = N, as (B, H·W, d) in (h w) order.
# Typical mistakes:
#   - a softmax over j (that is the embedded Gaussian, eq. 3)
#   - C(x) = Σ_j f (the Gaussian forms' normaliser; for dot products it can be 0 or negative)
#   - no normalisation at all
#   - divided by d or by sqrt(d) (attention's scale) instead of N
#   - θ and φ swapped: f(x_j, x_i), the transposed weights
#   - the biases forgotten
#   - positions in (w h) order
#   - y returned as (B, d, H, W) or as (B, d, H·W)
def check_dot_product_y(fn: Callable[..., Any]) -> Feedback:
    """Exercise 3: ``fn(x, w_theta, b_theta, w_phi, b_phi, w_g, b_g)`` returns y (B, H·W, d), eqs. (1) and (4)."""
    what = "Your dot_product_y"
    g = torch.Generator().manual_seed(11)
    for shape in [(2, 6, 3, 5), (1, 6, 4, 2)]:
        B, C, H, W = shape
        d = 3
        x = torch.randn(shape, generator=g, dtype=torch.float64)
        wt, bt, wp, bp, wg, bg = _random_weights(g, C, d)
        got, fb = run_answer(fn, x, wt, bt, wp, bp, wg, bg, what=what)
        if fb is not None:
            return fb
        q, k, v = _tokens(x, wt, bt), _tokens(x, wp, bp), _tokens(x, wg, bg)
        f = q @ k.transpose(1, 2)  # f(x_i, x_j) = θ(x_i)ᵀ φ(x_j): (B, N, N)
        n = H * W
        expected = f / n @ v
        if isinstance(got, torch.Tensor):
            got = got.detach().to(torch.float64)
            if got.shape == (B, d, H, W) or got.shape == (B, d, n):
                return failed(f"{what}: return y as tokens (B, H·W, d) = {(B, n, d)}, got {tuple(got.shape)}; "
                              "rearrange 'b d h w -> b (h w) d' (or transpose).")
            q0, k0, v0 = _tokens(x, wt, None), _tokens(x, wp, None), _tokens(x, wg, None)
            known = {
                "that is a softmax over j, the embedded Gaussian of eq. (3); the dot product (4) uses f itself "
                "and C(x) = N": torch.softmax(f, -1) @ v,
                "you divided by Σ_j f, the Gaussian forms' C(x); for the dot product the paper sets C(x) = N "
                "(a sum of dot products can be 0 or negative)": (f / f.sum(-1, keepdim=True)) @ v,
                "the normalisation 1/C(x) is missing: divide by C(x) = N, the number of positions": f @ v,
                "you divided by d; C(x) is N, the number of positions j": f / d @ v,
                "you divided by sqrt(d), attention's scale; the dot-product form divides by C(x) = N":
                    f / d**0.5 @ v,
                "θ and φ are swapped: f(x_i, x_j) = θ(x_i)ᵀφ(x_j), the query i goes through θ":
                    f.transpose(1, 2) / n @ v,
                "the biases of θ, φ and g are missing (1×1 convolutions with biases)":
                    (q0 @ k0.transpose(1, 2)) / n @ v0,
                "the positions are in (w h) order; flatten as 'b c h w -> b (h w) c', rows first":
                    rearrange(expected, "b (h w) d -> b (w h) d", h=H),
            }
            fb = match_mistake(got, known, what=what, expected=expected, end=".")
            if fb is not None:
                return fb
        bad = compare_tensors(got, expected, what=what)
        if bad is not None:
            return bad
    return passed(f"{what} computes eq. (1) with the dot product (4) and C(x) = N.")


def _pool(x: torch.Tensor, how: str) -> torch.Tensor:
    if how == "max-ceil":
        return F.max_pool2d(x, 2, 2, ceil_mode=True)
    if how == "max-floor":
        return F.max_pool2d(x, 2, 2)
    if how == "avg-ceil":
        return F.avg_pool2d(x, 2, 2, ceil_mode=True)
    return x


# Exercise 4, subsampled_weights(x, w_theta, b_theta, w_phi, b_phi): the embedded-Gaussian weights
# with the official sub-sampling (2×2 max-pool of x, a last odd row/column kept), (B, H·W, ⌈H/2⌉⌈W/2⌉).
# Typical mistakes:
#   - no sub-sampling (N × N)
#   - floor pooling (max_pool2d without ceil_mode): the last odd row and column are dropped
#   - φ pooled after the projection (the paper's text) instead of x before it (the official code)
#   - average pooling instead of max
#   - the softmax over the queries i instead of the keys j
#   - the official scale d^-1/2 (an option, off here as in the module's default)
#   - θ's input pooled too (the queries must keep every position)
def check_subsampled_weights(fn: Callable[..., Any]) -> Feedback:
    """Exercise 4: ``fn(x, w_theta, b_theta, w_phi, b_phi)`` returns the sub-sampled weights (B, H·W, M)."""
    what = "Your subsampled_weights"
    g = torch.Generator().manual_seed(13)
    for shape in [(2, 6, 5, 7), (1, 6, 4, 6)]:
        B, C, H, W = shape
        d = 3
        x = torch.randn(shape, generator=g, dtype=torch.float64)
        wt, bt, wp, bp, _, _ = _random_weights(g, C, d)
        got, fb = run_answer(fn, x, wt, bt, wp, bp, what=what)
        if fb is not None:
            return fb
        q = _tokens(x, wt, bt)

        def weights(how: str = "max-ceil", *, after: bool = False, scale: float = 1.0, dim: int = -1,
                    queries: torch.Tensor = q) -> torch.Tensor:
            if after:  # φ(x) first, then the pool of φ(x)
                phi = rearrange(_tokens(x, wp, bp), "b (h w) d -> b d h w", h=H)
                k = rearrange(_pool(phi, how), "b d h w -> b (h w) d")
            else:
                k = _tokens(_pool(x, how), wp, bp)
            return torch.softmax(queries @ k.transpose(1, 2) * scale, dim)

        expected = weights()
        if isinstance(got, torch.Tensor):
            got = got.detach().to(torch.float64)
            n, m = H * W, ((H + 1) // 2) * ((W + 1) // 2)
            if got.dim() == 3 and got.shape == (B, n, n):
                return failed(f"{what}: the shape is {tuple(got.shape)}, one key per position: the keys must "
                              f"come from the 2×2 max-pooled map, {m} of them here.")
            if got.dim() == 3 and got.shape == (B, n, (H // 2) * (W // 2)) and (H % 2 or W % 2):
                return failed(f"{what}: on this {H}×{W} map the pool dropped the last row or column "
                              f"({(H // 2) * (W // 2)} keys); keep them as the module does (ceil_mode=True): "
                              f"{m} keys.")
            if got.dim() == 3 and got.shape[-1] == m and got.shape[1] == m:
                return failed(f"{what}: the queries were pooled too; only φ (and g) read the pooled map, "
                              f"every one of the H·W = {n} positions asks (θ on the full map).")
            known = {
                "φ was pooled after the projection (as the paper's text says); here, as in the official code, "
                "pool x first and project the pooled map with φ": weights(after=True),
                "that is average pooling; the sub-sampling is a 2×2 max-pool": weights("avg-ceil"),
                "the softmax runs over the queries i; each query's weights over the keys j must sum to 1 "
                "(softmax over the last axis)": weights(dim=1),
                f"the logits are scaled by d^-1/2 (the official code's option); the paper's eq. (3), and this "
                f"exercise, use θᵀφ unscaled": weights(scale=d**-0.5),
            }
            fb = match_mistake(got, known, what=what, expected=expected, end=".")
            if fb is not None:
                return fb
        bad = compare_tensors(got, expected, what=what)
        if bad is not None:
            return bad
    return passed(f"{what} gives softmax_j(θ(x_i)ᵀ φ(x̂_j)) over the ⌈H/2⌉·⌈W/2⌉ max-pooled positions.")
