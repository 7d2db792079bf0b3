"""Checkers for the exercises of the non-local chapter (the file name avoids the keyword ``nonlocal``).

Above each checker, a comment lists the mistakes a learner typically makes on that exercise;
each one gets its own message (``tests/test_checkers_nonlocal.py`` tries every one of them).
The exercises ask for what no cell of the chapter computes: another reduction, the
concatenation's cost, the dot product in linear time, the paper's (not the module's)
sub-sampling.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F
from einops import rearrange

from ..cost import peak_memory
from . import Feedback, check_number, compare_tensors, failed, match_mistake, passed, run_answer

__all__ = ["check_reduced_concat_parameters", "check_concat_macs", "check_linear_dot_product_y",
           "check_paper_subsampled_weights"]


def _params(c: int, d: int, *, embed: bool = True, w_f: int = 0, biases: int = 3, wz_bias: bool = True,
            bn: int = 2) -> int:
    """Parameters of a non-local block: ``biases`` of θ, φ, g kept (3, or fewer when forgotten)."""
    projections = (3 if embed else 1) * c * d + min(biases, 3 if embed else 1) * d
    return projections + d * c + (c if wz_bias else 0) + bn * c + w_f


# Exercise 1, parameters of NonLocalBlock(384, pairwise="concatenation", reduction=4) (d = C/4 = 96).
# The chapter's params(C, pairwise) counts only the default reduction 2: calling it gives the
# first mistake below.
# Typical mistakes:
#   - the inner width C/2 (the default reduction, the chapter's params(384, "concatenation"))
#   - the inner width C (reduction 1)
#   - w_f forgotten (the embedded-Gaussian count)
#   - w_f with a bias (+1)
#   - w_f of length 2C (concatenating x_i, x_j)
#   - g's bias forgotten (the value embedding is a 1×1 convolution with a bias too); forgetting
#     θ's or φ's instead, or giving w_f d weights (one of the two concatenated vectors), gives the
#     same number (d short), so one message names them
#   - the biases of θ, φ and g all forgotten / W_z's bias forgotten / every bias forgotten
#   - the batch norm's running mean and variance counted (buffers, not parameters)
#   - the batch norm after W_z forgotten
#   - θ and φ left out (the Gaussian's count, which has no embeddings), with w_f
def check_reduced_concat_parameters(answer: Any) -> Feedback:
    """Exercise 1: parameters of ``NonLocalBlock(384, pairwise="concatenation", reduction=4)``."""
    c, d = 384, 96
    right = _params(c, d, w_f=2 * d)
    return check_number(
        answer,
        right,
        what="Parameters of NonLocalBlock(384, pairwise='concatenation', reduction=4)",
        hints={
            _params(c, c // 2, w_f=c): "That is the count at the default reduction=2 (inner width C/2 = 192, what "
            "the chapter's params(384, 'concatenation') computes); with reduction=4 the inner width is "
            "d = C/4 = 96: redo the count with d.",
            _params(c, c, w_f=2 * c): "That is an inner width of C (reduction=1); here d = C/4 = 96.",
            _params(c, d): "That is the embedded-Gaussian count: the concatenation adds w_f, which maps "
            "[θ(x_i), φ(x_j)] (2 × d numbers) to one scalar.",
            _params(c, d, w_f=2 * d + 1): "w_f has no bias in eq. (5) (nor in the module): only its 2d weights.",
            _params(c, d, w_f=2 * c): "w_f reads [θ(x_i), φ(x_j)], the embedded vectors of d channels each, "
            "not the raw x_i, x_j of C channels.",
            _params(c, d, w_f=2 * d, biases=2): "That is d = 96 short. Most likely g's bias is missing: the "
            "value embedding g(x_j) = W_g x_j is a 1×1 convolution with a bias, as θ and φ are (three biases of "
            "d). Or w_f got d weights: it reads the concatenation [θ(x_i), φ(x_j)], d + d numbers.",
            _params(c, d, w_f=2 * d, biases=0): "The biases of θ, φ and g (d each) are missing; the three 1×1 "
            "convolutions have biases, as in the official code.",
            _params(c, d, w_f=2 * d, wz_bias=False): "W_z's bias (C = 384 values) is missing: W_z is a 1×1 "
            "convolution from d back to C channels, with a bias.",
            _params(c, d, w_f=2 * d, biases=0, wz_bias=False): "Every bias is missing: θ, φ, g (d each) and "
            "W_z (C) are 1×1 convolutions with biases.",
            _params(c, d, w_f=2 * d, bn=4): "The batch norm's running mean and variance are buffers, not "
            "parameters: count only its weight and bias (2C).",
            _params(c, d, w_f=2 * d, bn=0): "W_z is followed by a batch norm (weight and bias: 2C); "
            "it is what makes the block start as the identity.",
            _params(c, d, embed=False, w_f=2 * d): "The concatenation embeds with θ and φ (eq. 5); only the "
            "Gaussian (eq. 2) has no embeddings.",
        },
    )


def _concat_macs(c: int, n: int, m: int | None = None, d: int | None = None, *, logits: str = "split",
                 weighted_sum: bool = True, w_z: bool = True) -> int:
    """Multiply-adds of the concatenation block on one image of n positions (m keys): θ on the
    queries, φ and g on the keys, the logits (``"split"``: w_θᵀθ_i and w_φᵀφ_j as the module;
    ``"pairs"``: w_fᵀ[θ_i, φ_j] for every pair; ``"dot"``: θ_iᵀφ_j, the embedded Gaussian's;
    ``"none"``), the weighted sum of the g_j and W_z."""
    m = n if m is None else m
    d = c // 2 if d is None else d
    cost = n * c * d + 2 * m * c * d
    cost += {"split": n * d + m * d, "pairs": n * m * 2 * d, "dot": n * m * d, "none": 0}[logits]
    cost += n * m * d if weighted_sum else 0
    return cost + (n * d * c if w_z else 0)


# Exercise 2, multiply-adds of NonLocalBlock(512, pairwise="concatenation") on one 14×14 map
# (N = 196, d = 256), as the module computes it: w_fᵀ[θ_i, φ_j] = w_θᵀθ_i + w_φᵀφ_j.
# The chapter's macs() counts the embedded Gaussian: calling it gives one of the mistakes below.
# Typical mistakes:
#   - FLOPs as FlopCounterMode counts them (2 per multiply-add), not multiply-adds; the inner width C
#     instead of C/2 gives the same number (every term is proportional to d): one message names both
#   - N = 14 (the side) instead of N = 14 × 14 = 196 positions
#   - the concatenated vector formed for every pair (N² · 2d for the logits)
#   - the embedded Gaussian's logits θᵀφ (N² · d): the default block's count (the chapter's macs)
#   - the logits' two projections w_θᵀθ_i, w_φᵀφ_j left out
#   - the weighted sum Σ_j f g(x_j) left out
#   - W_z left out
#   - with sub-sampling (not asked): φ and g on 49 positions
def check_concat_macs(answer: Any) -> Feedback:
    """Exercise 2: multiply-adds of ``NonLocalBlock(512, pairwise="concatenation")`` on a ``(1, 512, 14, 14)`` input."""
    c, n = 512, 14 * 14
    right = _concat_macs(c, n)
    return check_number(
        answer,
        right,
        what="Multiply-adds of NonLocalBlock(512, pairwise='concatenation') on 14×14",
        hints={
            2 * right: "That is twice the answer: either FLOPs as FlopCounterMode counts them (2 per "
            "multiply-add; the question asks for multiply-adds, as papers count them: halve it), or an "
            "inner width of C instead of C/2 = 256 (every term is proportional to the inner width).",
            _concat_macs(c, 14): "N is the number of positions, 14 × 14 = 196, not the side 14: every query "
            "and every key is one position of the map.",
            _concat_macs(c, n, logits="pairs"): "You formed w_fᵀ[θ(x_i), φ(x_j)] for every pair (N² · 2d). The "
            "module splits w_f into w_θ and w_φ: w_θᵀθ(x_i) once per query and w_φᵀφ(x_j) once per key, "
            "N·d + N·d, then a sum per pair (not a multiply-add).",
            _concat_macs(c, n, logits="dot"): "That is the embedded Gaussian's (the default's) count, with "
            "logits θ(x_i)ᵀφ(x_j) for every pair (N² · d); the concatenation's logits are w_θᵀθ(x_i) + "
            "w_φᵀφ(x_j): N·d + N·d.",
            _concat_macs(c, n, logits="none"): "The logits are missing: w_θᵀθ(x_i) for every query (N·d) and "
            "w_φᵀφ(x_j) for every key (N·d).",
            _concat_macs(c, n, weighted_sum=False): "The weighted sum Σ_j f(x_i, x_j) g(x_j) is missing: an "
            "N × N matrix times N vectors of d, N² · d.",
            _concat_macs(c, n, w_z=False): "W_z (d → C at every position, N · d · C) is missing.",
            _concat_macs(c, n, m=49): "That is with the 2×2 sub-sampling (49 keys); the default has none.",
        },
    )


def _tokens(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    t = rearrange(x, "b c h w -> b (h w) c") @ w.T
    return t + b if b is not None else t


def _random_weights(g: torch.Generator, c: int, d: int) -> list[torch.Tensor]:
    return [torch.randn(*s, generator=g, dtype=torch.float64) * 0.4 for s in [(d, c), (d,), (d, c), (d,), (d, c), (d,)]]


# Exercise 3, linear_dot_product_y(x, w_theta, b_theta, w_phi, b_phi, w_g, b_g) = y of eq. (1) with
# f of eq. (4), C(x) = N, as (B, H·W, d) in (h w) order, without forming any N × N tensor: with no
# softmax between the two products, (θ φᵀ) g / N = θ (φᵀ g) / N, which costs N d² instead of N² d.
# Typical mistakes:
#   - the N × N matrix formed anyway (right values, quadratic memory): measured with peak_memory
#   - a softmax over j (that is the embedded Gaussian, eq. 3; it cannot be reordered)
#   - C(x) = Σ_j f (the Gaussian forms' normaliser; for dot products it can be 0 or negative)
#   - no normalisation at all
#   - divided by d or by sqrt(d) (attention's scale) instead of N
#   - θ and φ swapped: φ(x_i) (Σ_j θ(x_j) g(x_j)ᵀ), the transposed weights
#   - g's bias forgotten (issue 18: the value embedding has a bias too)
#   - φ's bias left out because "a softmax cancels it": there is no softmax in (4), it changes y
#   - all three biases forgotten
#   - positions in (w h) order
#   - y returned as (B, d, H, W) or as (B, d, H·W)
def check_linear_dot_product_y(fn: Callable[..., Any]) -> Feedback:
    """Exercise 3: ``fn(x, w_theta, b_theta, w_phi, b_phi, w_g, b_g)`` returns y (B, H·W, d), eqs. (1) and
    (4), without an N × N tensor."""
    what = "Your linear_dot_product_y"
    g = torch.Generator().manual_seed(11)
    # shapes whose axes cannot be confused: no two of B, C, d, H, W, H·W are equal
    for shape, d in [((2, 7, 4, 5), 3), ((3, 8, 5, 2), 4)]:
        B, C, H, W = shape
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
                "θ and φ are swapped: f(x_i, x_j) = θ(x_i)ᵀφ(x_j), the query i goes through θ, the keys j "
                "through φ": f.transpose(1, 2) / n @ v,
                "g's bias b_g is missing: the value embedding g(x_j) = W_g x_j + b_g is a 1×1 convolution with "
                "a bias": f / n @ v0,
                "φ's bias b_φ is missing: a softmax would cancel it, but the dot product (4) has none, so b_φ "
                "changes every f(x_i, x_j)": (q @ k0.transpose(1, 2)) / n @ v,
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
    # the values are right: now the memory, on a map where an N × N tensor dominates everything else
    B, C, H, W, d = 2, 6, 24, 20, 3
    x = torch.randn(B, C, H, W, generator=g, dtype=torch.float64)
    weights = _random_weights(g, C, d)
    square = B * (H * W) ** 2 * 8  # bytes of one (B, N, N) float64 tensor
    held = peak_memory(lambda: fn(x, *weights))
    if held >= square // 2:
        return failed(f"{what}: the values are right, but on a {H}×{W} map your function held {held / 2**20:.1f} MiB "
                      f"at its peak, as much as a (B, N, N) tensor ({square / 2**20:.1f} MiB): it formed the N × N "
                      "weights. With no softmax between the products, compute φᵀg first, a d × d matrix per image.")
    return passed(f"{what} computes eq. (1) with the dot product (4) and C(x) = N in linear memory: "
                  f"θ (φᵀ g) / N, {held / 2**10:.0f} KiB at the peak where an N × N tensor takes {square / 2**20:.1f} MiB.")


def _pool(x: torch.Tensor, how: str) -> torch.Tensor:
    if how == "max-ceil":
        return F.max_pool2d(x, 2, 2, ceil_mode=True)
    if how == "max-floor":
        return F.max_pool2d(x, 2, 2)
    if how == "avg-ceil":
        return F.avg_pool2d(x, 2, 2, ceil_mode=True)
    return x


# Exercise 4, paper_subsampled_weights(x, w_theta, b_theta, w_phi, b_phi): the embedded-Gaussian
# weights with the sub-sampling as the paper's text puts it, a 2×2 max-pool *after* φ (the module
# and the chapter's code pool x before φ, as the official code), a last odd row/column kept:
# (B, H·W, ⌈H/2⌉⌈W/2⌉), keys in (h w) order of the pooled map.
# Typical mistakes:
#   - x pooled before φ (the official code's order, the module's and the chapter's)
#   - no sub-sampling (N × N)
#   - floor pooling (max_pool2d without ceil_mode): the last odd row and column are dropped
#   - average pooling instead of max
#   - the softmax over the queries i instead of the keys j
#   - the official scale d^-1/2 (an option, off here as in the paper's eq. 3)
#   - θ's input pooled too (the queries must keep every position)
#   - the pooled keys flattened in (w h) order
#   - φ's tokens put back on the grid as (w h): the pool then takes maxima of scrambled neighbours
def check_paper_subsampled_weights(fn: Callable[..., Any]) -> Feedback:
    """Exercise 4: ``fn(x, w_theta, b_theta, w_phi, b_phi)`` returns the weights with φ pooled after the
    projection (B, H·W, M)."""
    what = "Your paper_subsampled_weights"
    g = torch.Generator().manual_seed(13)
    # no two of B, C, d, H, W, H·W, M are equal; both maps have an odd side
    for shape in [(2, 6, 5, 7), (2, 8, 6, 9)]:
        B, C, H, W = shape
        d = 3
        x = torch.randn(shape, generator=g, dtype=torch.float64)
        wt, bt, wp, bp, _, _ = _random_weights(g, C, d)
        got, fb = run_answer(fn, x, wt, bt, wp, bp, what=what)
        if fb is not None:
            return fb
        q = _tokens(x, wt, bt)

        def weights(how: str = "max-ceil", *, after: bool = True, scale: float = 1.0, dim: int = -1,
                    key_order: str = "h w", grid: str = "h w") -> torch.Tensor:
            if after:  # φ(x) first, then the pool of the φ map
                phi = rearrange(_tokens(x, wp, bp), f"b ({grid}) d -> b d h w", h=H, w=W)
                k = rearrange(_pool(phi, how), f"b d h w -> b ({key_order}) d")
            else:
                k = _tokens(_pool(x, how), wp, bp)
            return torch.softmax(q @ k.transpose(1, 2) * scale, dim)

        expected = weights()
        if isinstance(got, torch.Tensor):
            got = got.detach().to(torch.float64)
            n, m = H * W, ((H + 1) // 2) * ((W + 1) // 2)
            if got.dim() == 3 and got.shape == (B, n, n):
                return failed(f"{what}: the shape is {tuple(got.shape)}, one key per position: the keys must "
                              f"come from the 2×2 max-pooled φ map, {m} of them here.")
            if got.dim() == 3 and got.shape == (B, n, (H // 2) * (W // 2)) and (H % 2 or W % 2):
                return failed(f"{what}: on this {H}×{W} map the pool dropped the last row or column "
                              f"({(H // 2) * (W // 2)} keys); keep them as the module does (ceil_mode=True): "
                              f"{m} keys.")
            if got.dim() == 3 and got.shape[-1] == m and got.shape[1] == m:
                return failed(f"{what}: the queries were pooled too; only φ (and g) are pooled, "
                              f"every one of the H·W = {n} positions asks (θ on the full map).")
            known = {
                "that pools x before φ, the official code's order (the module's, and the chapter's code); the "
                "paper's text pools after φ: project every position with φ, put φ(x) back on the H × W grid, "
                "then take the 2×2 maxima": weights(after=False),
                "that is average pooling; the sub-sampling is a 2×2 max-pool": weights("avg-ceil"),
                "the softmax runs over the queries i; each query's weights over the keys j must sum to 1 "
                "(softmax over the last axis)": weights(dim=1),
                "the logits are scaled by d^-1/2 (the official code's option); the paper's eq. (3), and this "
                "exercise, use θᵀφ unscaled": weights(scale=d**-0.5),
                "the pooled keys are in (w h) order; flatten the pooled map as 'b d h w -> b (h w) d', rows "
                "first, as the module orders its keys": weights(key_order="w h"),
                "φ's tokens went back on the grid in (w h) order, so the 2×2 windows held positions that are "
                "not neighbours; the tokens are in (h w) order: 'b (h w) d -> b d h w'": weights(grid="w h"),
            }
            fb = match_mistake(got, known, what=what, expected=expected, end=".")
            if fb is not None:
                return fb
        bad = compare_tensors(got, expected, what=what)
        if bad is not None:
            return bad
    return passed(f"{what} gives softmax_j(θ(x_i)ᵀ φ̂_j), φ̂ the 2×2 maxima of the φ map, a last odd row or "
                  "column kept.")
