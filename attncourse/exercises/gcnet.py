"""Checkers for the exercises of the GCNet chapter.

Above each checker, a comment lists the mistakes a learner typically makes on that exercise;
each one gets its own message (``tests/test_checkers_gcnet.py`` tries every one of them).
"""

from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F

from . import Feedback, check_number, compare_tensors, failed, match_mistake, passed, run_answer

__all__ = ["check_gc_parameters", "check_global_context", "check_gc_block"]


# Exercise 1, GlobalContextBlock(512) with the defaults (r = 16, attention pooling, add fusion).
# Typical mistakes:
#   - the LayerNorm's affine parameters forgotten (-2C/r), or counted once per unit (-C/r)
#   - the LayerNorm taken over the C channels instead of the C/r hidden units (2C instead of 2C/r)
#   - W_k forgotten (context modelling has parameters too: C weights and a bias), or only its bias
#   - the biases of the two 1×1 convolutions W_v1, W_v2 forgotten (C/r + C)
#   - SE's count (no W_k, no LayerNorm) or the non-local block's (2C² + 4.5C): the neighbours
#   - r = 4 (the paper's other setting) instead of the default 16
#   - the simplified non-local block's transform, one C × C convolution W_v, instead of the bottleneck
def check_gc_parameters(answer: Any) -> Feedback:
    """Exercise 1: parameters of ``GlobalContextBlock(512)`` (r = 16, att pooling, add fusion)."""
    c, r = 512, 16
    h = c // r

    def gc(c: int, h: int) -> int:
        return 2 * c * h + 2 * c + 3 * h + 1

    right = gc(c, h)
    return check_number(
        answer,
        right,
        what="Parameters of GlobalContextBlock(512)",
        hints={
            right - 2 * h: "The LayerNorm over [C/r, 1, 1] is affine: it has a scale γ and a shift β for each "
            "of the C/r hidden units (2C/r parameters).",
            right - h: "The LayerNorm has two parameters per hidden unit, γ and β, not one.",
            right - 2 * h + 2 * c: "The LayerNorm normalises the C/r hidden units (nn.LayerNorm([C/r, 1, 1])), "
            "so it has 2C/r parameters, not 2C.",
            right - (c + 1): "Context modelling has parameters too: W_k is a 1×1 convolution from C channels to "
            "one logit, C weights and a bias.",
            right - 1: "W_k, the 1×1 convolution to one channel, has a bias as well (the official code keeps it, "
            "though the softmax makes it useless).",
            right - h - c: "The two 1×1 convolutions of the transform, W_v1 and W_v2, have biases: C/r + C.",
            2 * c * h + h + c: "That is SE's count (2C²/r + C/r + C): the GC block adds W_k (C + 1) and the "
            "LayerNorm (2C/r).",
            2 * c * c + 4.5 * c: "That is the non-local block's count (2C² + 4.5C), the block GC replaces.",
            gc(c, c // 4): "That is r = 4; the default reduction is 16 (hidden width 512 // 16 = 32).",
            (c + 1) + c * c + c: "That is the simplified non-local block: one C × C convolution W_v. The GC "
            "block's transform is a bottleneck, C → C/r → C, with a LayerNorm.",
        },
    )


def _context(x: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """Σ_j α_j x_j for weights α of shape (B, H W): (B, C)."""
    return torch.einsum("bcn,bn->bc", x.flatten(2), alpha)


# Exercise 2, global_context(x, wk, bk) = Σ_j α_j x_j with α = softmax_j(W_k x_j + b_k), shape (B, C).
# Typical mistakes:
#   - the softmax over the size-1 channel axis of the (B, 1, H, W) logits: every weight is 1, a sum
#   - uniform weights, i.e. the mean over positions (SE's squeeze, the "avg" pooling)
#   - the raw logits used as weights (no softmax) / a sigmoid instead of the softmax
#   - the softmax over one spatial axis only (H or W), not over all H·W positions
#   - the softmax over the batch axis
#   - the weights α returned instead of the context (shape (B, H·W) or (B, 1, H, W))
#   - the fused output x + context returned (B, C, H, W) instead of the context
#   (leaving out the bias b_k is not a mistake: the softmax does not change when every logit is
#   shifted by the same b_k, so the checker cannot see it, and no network can either)
def check_global_context(fn: Callable[..., Any]) -> Feedback:
    """Exercise 2: ``fn(x, wk, bk)`` returns the global context Σ_j α_j x_j, shape (B, C)."""
    what = "Your global_context"
    g = torch.Generator().manual_seed(7)
    for shape in [(3, 6, 5, 4), (2, 4, 3, 7)]:
        B, C, H, W = shape
        x = torch.randn(shape, generator=g, dtype=torch.float64)
        wk = torch.randn(C, generator=g, dtype=torch.float64)
        bk = torch.randn(1, generator=g, dtype=torch.float64)
        got, fb = run_answer(fn, x, wk, bk, what=what)
        if fb is not None:
            return fb
        logits = torch.einsum("bchw,c->bhw", x, wk) + bk  # W_k x_j + b_k: (B, H, W)
        flat = logits.flatten(1)
        expected = _context(x, flat.softmax(-1))
        if isinstance(got, torch.Tensor):
            got = got.detach().to(torch.float64)
            if got.shape in {(B, H * W), (B, 1, H, W), (B, H, W), (B, 1, H * W)}:
                return failed(f"{what}: that has the shape of the weights α {tuple(got.shape)}; return the context "
                              f"Σ_j α_j x_j, one vector per image, shape (B, C) = {(B, C)}.")
            if got.shape == x.shape:
                return failed(f"{what}: return the context itself, shape (B, C); adding it to x (the fusion) is "
                              "the block's last step, not this one.")
            if got.shape == expected.shape:
                known = {
                    "every weight is 1, so you summed the positions: a softmax over the size-1 channel axis of the "
                    "(B, 1, H, W) logits normalises nothing; take it over the H·W positions":
                        _context(x, torch.ones_like(flat)),
                    "the weights are uniform, 1/(H·W): that is the mean over positions, SE's squeeze (the paper's "
                    "'avg' pooling), not attention pooling":
                        _context(x, torch.full_like(flat, 1.0 / (H * W))),
                    "the weights are the raw logits W_k x_j; pass them through a softmax over the positions":
                        _context(x, flat),
                    "a sigmoid gives weights that do not sum to 1; the GC block takes a softmax over the positions":
                        _context(x, flat.sigmoid()),
                    "the softmax runs over W only (each row separately); flatten H and W and take it over all "
                    "H·W positions": _context(x, logits.softmax(-1).flatten(1)),
                    "the softmax runs over H only (each column separately); flatten H and W and take it over all "
                    "H·W positions": _context(x, logits.softmax(-2).flatten(1)),
                    "the softmax runs over the batch axis; each image has its own weights, a softmax over its "
                    "own H·W positions": _context(x, flat.softmax(0)),
                }
                fb = match_mistake(got, known, what=what, expected=expected, end=".")
                if fb is not None:
                    return fb
        bad = compare_tensors(got, expected, what=what)
        if bad is not None:
            return bad
    return passed(f"{what} computes the context: a softmax over all H·W positions of W_k x_j, then Σ_j α_j x_j.")


def _transform(context: torch.Tensor, w1, b1, gamma, beta, w2, b2, *, ln: str = "layer", relu_first: bool = False,
               relu: bool = True) -> torch.Tensor:
    """W_v2 ReLU(LN(W_v1 context)) on (B, C) contexts, with the variants the mistakes make."""
    t = context @ w1.T + b1
    if relu_first:
        t = torch.relu(t)
    if ln == "layer":
        t = F.layer_norm(t, t.shape[-1:], gamma, beta, eps=1e-5)
    elif ln == "plain":
        t = F.layer_norm(t, t.shape[-1:], eps=1e-5)
    elif ln == "unbiased":
        t = (t - t.mean(-1, keepdim=True)) / torch.sqrt(t.var(-1, keepdim=True) + 1e-5) * gamma + beta
    elif ln == "batch":
        t = (t - t.mean(0)) / torch.sqrt(t.var(0, unbiased=False) + 1e-5) * gamma + beta
    if relu and not relu_first:
        t = torch.relu(t)
    return t @ w2.T + b2


# Exercise 3, gc_block(x, wk, bk, w1, b1, gamma, beta, w2, b2) = eq. (5), with add fusion.
# Typical mistakes:
#   - the LayerNorm forgotten, or without its affine γ, β
#   - the LayerNorm's variance unbiased (torch.var's default) instead of the biased one
#   - a batch norm (statistics over the batch) instead of the LayerNorm over the C/r hidden units
#   - the ReLU before the LayerNorm / the ReLU forgotten
#   - multiplicative fusion x ⊙ σ(·) (timm's default GlobalContext) instead of the addition
#   - the residual x forgotten: the transformed context alone, broadcast
#   - the mean over positions (SE's squeeze) as the context instead of attention pooling
def check_gc_block(fn: Callable[..., Any]) -> Feedback:
    """Exercise 3: ``fn(x, wk, bk, w1, b1, gamma, beta, w2, b2)`` is the GC block, eq. (5)."""
    what = "Your gc_block"
    g = torch.Generator().manual_seed(11)
    for shape, r in [((2, 8, 5, 3), 2), ((3, 12, 4, 4), 4)]:
        B, C, H, W = shape
        h = C // r
        x = torch.randn(shape, generator=g, dtype=torch.float64)
        wk = torch.randn(C, generator=g, dtype=torch.float64)
        bk = torch.randn(1, generator=g, dtype=torch.float64)
        w1 = torch.randn(h, C, generator=g, dtype=torch.float64) / C**0.5
        b1 = torch.randn(h, generator=g, dtype=torch.float64)
        gamma = 1 + 0.5 * torch.randn(h, generator=g, dtype=torch.float64)
        beta = torch.randn(h, generator=g, dtype=torch.float64)
        w2 = torch.randn(C, h, generator=g, dtype=torch.float64)
        b2 = torch.randn(C, generator=g, dtype=torch.float64)
        weights = (w1, b1, gamma, beta, w2, b2)
        got, fb = run_answer(fn, x, wk, bk, *weights, what=what)
        if fb is not None:
            return fb
        alpha = (torch.einsum("bchw,c->bhw", x, wk) + bk).flatten(1).softmax(-1)
        context = _context(x, alpha)

        def z(t: torch.Tensor) -> torch.Tensor:  # add fusion: x_i + t for every position i
            return x + t[:, :, None, None]

        expected = z(_transform(context, *weights))
        if isinstance(got, torch.Tensor) and got.shape == expected.shape:
            got = got.detach().to(torch.float64)
            known = {
                "the LayerNorm is missing: eq. (5) normalises W_v1's output, LN(W_v1 ·), before the ReLU":
                    z(_transform(context, *weights, ln="none")),
                "the LayerNorm has no scale γ and shift β; apply them after normalising":
                    z(_transform(context, *weights, ln="plain")),
                "the LayerNorm uses the unbiased variance (torch.var's default); LayerNorm divides by n, "
                "use var(unbiased=False)": z(_transform(context, *weights, ln="unbiased")),
                "that normalises each hidden unit over the batch (a batch norm); the LayerNorm normalises "
                "each image's C/r hidden values": z(_transform(context, *weights, ln="batch")),
                "the ReLU comes before the LayerNorm; eq. (5) is ReLU(LN(W_v1 ·))":
                    z(_transform(context, *weights, relu_first=True)),
                "the ReLU between the LayerNorm and W_v2 is missing":
                    z(_transform(context, *weights, relu=False)),
                "that is multiplicative fusion, x ⊙ σ(·) (timm's default GlobalContext); the GC block adds the "
                "transformed context to every position":
                    x * torch.sigmoid(_transform(context, *weights))[:, :, None, None],
                "the residual x is missing: the block returns x_i + W_v2 ReLU(LN(W_v1 context)), the input plus "
                "the transformed context": _transform(context, *weights)[:, :, None, None].expand_as(x),
                "the context is the mean over positions (SE's squeeze); eq. (5) pools with the softmax weights "
                "α_j = softmax(W_k x_j)": z(_transform(x.mean((2, 3)), *weights)),
            }
            fb = match_mistake(got, known, what=what, expected=expected, end=".")
            if fb is not None:
                return fb
        bad = compare_tensors(got, expected, what=what)
        if bad is not None:
            return bad
    return passed(f"{what} is eq. (5): attention pooling, W_v1 → LayerNorm → ReLU → W_v2, added to every position.")
