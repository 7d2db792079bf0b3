"""Checkers for the exercises of the GCNet chapter.

Above each checker, a comment lists the mistakes a learner typically makes on that exercise;
each one gets its own message (``tests/test_checkers_gcnet.py`` tries every one of them).
The exercises ask for what no cell of the chapter computes: the official mul+add fusion's
parameters and its forward, and the context computed strip by strip (an online softmax).
"""

from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F
from einops import rearrange

from . import Feedback, check_number, compare_tensors, failed, match_mistake, passed, run_answer

__all__ = ["check_gc_parameters", "check_streamed_context", "check_gc_mul_add"]


# Exercise 1, GlobalContextBlock(768, reduction=8, fusion="mul+add"): one context (W_k), two
# transforms (one per fusion), each a bottleneck C → C/r → C with a LayerNorm. The chapter's
# gc_parameters(C, r) counts one transform: calling it gives the first mistake below.
# Typical mistakes:
#   - one transform only (the add fusion's count, the chapter's gc_parameters(768, 8))
#   - W_k counted twice (one context per fusion; the context is computed once and shared)
#   - the default r = 16 instead of 8
#   - the LayerNorms' affine parameters forgotten (−2C/r per transform); counting one parameter per
#     hidden unit in both gives the same number as forgetting one LayerNorm: one message names both
#   - the LayerNorms taken over the C channels instead of the C/r hidden units
#   - W_k forgotten, or only its bias
#   - the biases of the transforms' 1×1 convolutions forgotten (C/r + C per transform)
#   - a parameter per channel for the sigmoid (it has none)
#   - the non-local block's count (2C² + 4.5C): the block GC replaces
def check_gc_parameters(answer: Any) -> Feedback:
    """Exercise 1: parameters of ``GlobalContextBlock(768, reduction=8, fusion="mul+add")``."""
    c, r = 768, 8
    h = c // r

    def transform(h: int, *, ln: int = 2, biases: bool = True) -> int:
        return c * h + h * c + ln * h + ((h + c) if biases else 0)

    w_k = c + 1
    right = w_k + 2 * transform(h)
    return check_number(
        answer,
        right,
        what="Parameters of GlobalContextBlock(768, reduction=8, fusion='mul+add')",
        hints={
            w_k + transform(h): "That is one transform (the add fusion's count, what the chapter's "
            "gc_parameters(768, 8) gives); 'mul+add' has two, each its own bottleneck C → C/r → C with a "
            "LayerNorm: one for the sigmoid-gated product, one for the sum.",
            2 * w_k + 2 * transform(h): "W_k is counted twice: the context Σ_j α_j x_j is computed once and "
            "fed to both transforms (one W_k, C weights and a bias).",
            w_k + 2 * transform(c // 16): "That is r = 16, the default; here reduction=8 (hidden width "
            "768 // 8 = 96).",
            right - 4 * h: "Both LayerNorms' scale γ and shift β are missing: each has 2 × C/r parameters.",
            right - 2 * h: "2 × C/r short: each of the two LayerNorms has two parameters per hidden unit, γ and β "
            "(or one LayerNorm was left out).",
            w_k + 2 * transform(h, ln=2 * c // h): "The LayerNorms normalise the C/r hidden units "
            "(nn.LayerNorm([C/r, 1, 1])), so each has 2C/r parameters, not 2C.",
            right - w_k: "Context modelling has parameters too: W_k is a 1×1 convolution from C channels to "
            "one logit, C weights and a bias.",
            right - 1: "W_k, the 1×1 convolution to one channel, has a bias as well (the official code keeps it, "
            "though the softmax makes it useless).",
            w_k + 2 * transform(h, biases=False): "The 1×1 convolutions of both transforms (W_v1 and W_v2, twice) "
            "have biases: C/r + C per transform.",
            right + c: "The sigmoid has no parameters: σ is applied to the multiplicative transform's output.",
            2 * c * c + 4.5 * c: "That is the non-local block's count (2C² + 4.5C), the block GC replaces.",
        },
    )


def _context(x: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """Σ_j α_j x_j for weights α of shape (B, H W): (B, C)."""
    return torch.einsum("bcn,bn->bc", x.flatten(2), alpha)


def _strips(x: torch.Tensor, heights: list[int]):
    """The map x as horizontal strips of the given heights, top to bottom, as a reader that reuses one
    buffer yields them: a strip is valid until the next one is asked for (then it is overwritten)."""
    buffer = torch.empty(x.shape[0], x.shape[1], max(heights), x.shape[3], dtype=x.dtype)
    top = 0
    for rows in heights:
        buffer.zero_()
        buffer[:, :, :rows] = x[:, :, top : top + rows]
        top += rows
        yield buffer[:, :, :rows]


def _kept_strips(x: torch.Tensor, heights: list[int]) -> torch.Tensor:
    """What a function that keeps the strips and reads them at the end sees: every strip is a view of the
    buffer, which then holds the last strip (zeros below it)."""
    last = torch.zeros(x.shape[0], x.shape[1], max(heights), x.shape[3], dtype=x.dtype)
    last[:, :, : heights[-1]] = x[:, :, x.shape[2] - heights[-1] :]
    return torch.cat([last[:, :, :rows] for rows in heights], dim=2)


def _strip_contexts(x: torch.Tensor, wk: torch.Tensor, bk: torch.Tensor, heights: list[int]) -> list[torch.Tensor]:
    """Each strip's own attention-pooled context (a softmax over its positions only)."""
    out, top = [], 0
    for rows in heights:
        piece = x[:, :, top : top + rows]
        top += rows
        logits = (torch.einsum("bchw,c->bhw", piece, wk) + bk).flatten(1)
        out.append(_context(piece, logits.softmax(-1)))
    return out


def _unrescaled(x: torch.Tensor, wk: torch.Tensor, bk: torch.Tensor, heights: list[int]) -> torch.Tensor:
    """The online softmax without its correction: the running maximum moves, but the sums already
    accumulated are not multiplied by e^(m_old - m_new)."""
    m = torch.full((x.shape[0],), float("-inf"), dtype=x.dtype)
    total, acc, top = torch.zeros_like(m), torch.zeros(x.shape[:2], dtype=x.dtype), 0
    for rows in heights:
        piece = x[:, :, top : top + rows]
        top += rows
        logits = (torch.einsum("bchw,c->bhw", piece, wk) + bk).flatten(1)
        m = torch.maximum(m, logits.amax(-1))
        e = torch.exp(logits - m[:, None])
        total = total + e.sum(-1)
        acc = acc + _context(piece, e)
    return acc / total[:, None]


# Exercise 2, streamed_context(strips, wk, bk) = Σ_j α_j x_j, α = softmax over all H·W positions of
# W_k x_j + b_k, from an iterable of horizontal strips (B, C, rows, W) of the map, each valid only
# until the next one arrives (one buffer, overwritten): the online softmax, with a running maximum,
# a running sum of exponentials and a running weighted sum. No cell of the chapter computes the
# context in pieces.
# Typical mistakes:
#   - each strip normalised on its own and the strips' contexts averaged (or weighted by their sizes)
#   - the running maximum updated, but the sums accumulated so far not rescaled by e^(m_old − m_new)
#   - no maximum subtracted at all: e^(logit) overflows to inf (logits of several hundred), NaN out
#   - the strips kept and read at the end (they were overwritten: every strip then shows the last one)
#   - only the last strip counted (the running state reset at every strip)
#   - uniform weights (the mean over positions, SE's squeeze)
#   - the weights α, or a map, returned instead of the context (B, C)
#   (leaving out the bias b_k is not a mistake: the softmax does not change when every logit is
#   shifted by the same b_k)
def check_streamed_context(fn: Callable[..., Any]) -> Feedback:
    """Exercise 2: ``fn(strips, wk, bk)`` returns the global context Σ_j α_j x_j (B, C) of the map that
    ``strips`` yields strip by strip."""
    what = "Your streamed_context"
    g = torch.Generator().manual_seed(7)
    # no two of B, C, H, W are equal; the second map's logits reach several hundred (e^logit overflows)
    # and its largest logit lies in the last strip, so the running maximum moves
    for shape, heights, spread in [((3, 5, 9, 4), [2, 4, 3], 1.0), ((2, 6, 7, 8), [3, 1, 3], 900.0)]:
        B, C, H, W = shape
        x = torch.randn(shape, generator=g, dtype=torch.float64)
        wk = torch.randn(C, generator=g, dtype=torch.float64)
        bk = torch.randn(1, generator=g, dtype=torch.float64)
        logits = (torch.einsum("bchw,c->bhw", x, wk) + bk).flatten(1)
        if spread > 1:  # logits up to `spread` (e^900 is inf in float64), each image's largest in the last strip
            wk = wk * spread / (logits - bk).amax().abs()
            flat = rearrange(x, "b c h w -> b c (h w)")
            top = logits.argmax(-1)
            last = (H - 1) * W + 1
            for n in range(B):
                a_, b_ = flat[n, :, top[n]].clone(), flat[n, :, last].clone()
                flat[n, :, top[n]], flat[n, :, last] = b_, a_
            x = rearrange(flat, "b c (h w) -> b c h w", h=H)
            logits = (torch.einsum("bchw,c->bhw", x, wk) + bk).flatten(1)
        expected = _context(x, logits.softmax(-1))
        got, fb = run_answer(fn, _strips(x, heights), wk, bk, what=what)
        if fb is not None:
            return fb
        if isinstance(got, torch.Tensor):
            got = got.detach().to(torch.float64)
            if got.shape in {(B, H * W), (B, 1, H, W), (B, H, W), (B, 1, H * W)}:
                return failed(f"{what}: that has the shape of weights {tuple(got.shape)}; return the context "
                              f"Σ_j α_j x_j, one vector per image, shape (B, C) = {(B, C)}.")
            if got.shape == expected.shape and not torch.isfinite(got).all():
                return failed(f"{what}: the output holds NaN or inf where every context is finite: with logits of "
                              f"up to {logits.max().item():.0f} here, e^logit overflows (float64 ends near e^709). "
                              "Subtract the running maximum of the logits before the exponential, and rescale "
                              "what you have summed so far by e^(m_old − m_new) when the maximum grows.")
            if got.shape == expected.shape:
                per_strip = _strip_contexts(x, wk, bk, heights)
                sizes = torch.tensor(heights, dtype=torch.float64) / H
                known = {
                    "each strip was normalised on its own and the strips' contexts averaged; the softmax runs "
                    "over all H·W positions at once: carry the running sum of exponentials from strip to strip":
                        torch.stack(per_strip).mean(0),
                    "each strip was normalised on its own and the contexts weighted by the strips' sizes; a "
                    "strip's weight depends on its logits, not its size: carry the running sum of exponentials":
                        sum(w_ * c_ for w_, c_ in zip(sizes, per_strip)),
                    "the running maximum moved, but what was summed before was not rescaled: multiply the running "
                    "sum and the running weighted sum by e^(m_old − m_new) when the maximum grows":
                        _unrescaled(x, wk, bk, heights),
                    "you kept the strips and read them at the end, but each strip is valid only until the next "
                    "one arrives (the reader reuses its buffer): update your running sums as each strip comes":
                        _context(_kept_strips(x, heights), (torch.einsum("bchw,c->bhw", _kept_strips(x, heights),
                                                                          wk) + bk).flatten(1).softmax(-1)),
                    "that is the last strip's context alone: the running state must carry over from one strip to "
                    "the next, not restart": per_strip[-1],
                    "the weights are uniform, 1/(H·W): that is the mean over positions, SE's squeeze (the paper's "
                    "'avg' pooling), not attention pooling": x.mean((2, 3)),
                }
                fb = match_mistake(got, known, what=what, expected=expected, end=".")
                if fb is not None:
                    return fb
        bad = compare_tensors(got, expected, what=what)
        if bad is not None:
            return bad
    return passed(f"{what} computes the context in one pass over the strips: a running maximum, a running sum of "
                  "exponentials and a running weighted sum, rescaled when the maximum grows.")


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


def _random_transform(g: torch.Generator, c: int, h: int) -> tuple[torch.Tensor, ...]:
    """W_v1 (h, C), b1, γ, β (h,), W_v2 (C, h), b2: a bottleneck with every weight non-zero."""
    return (torch.randn(h, c, generator=g, dtype=torch.float64) / c**0.5, torch.randn(h, generator=g, dtype=torch.float64),
            1 + 0.5 * torch.randn(h, generator=g, dtype=torch.float64), torch.randn(h, generator=g, dtype=torch.float64),
            torch.randn(c, h, generator=g, dtype=torch.float64), torch.randn(c, generator=g, dtype=torch.float64))


# Exercise 3, gc_mul_add(x, wk, bk, mul, add): the official code's third fusion
# (fusion_types=('channel_add', 'channel_mul'), the module's fusion="mul+add"):
# z = x ⊙ σ(T_mul(context)) + T_add(context), one attention-pooled context, two transforms
# T = W_v2 ReLU(LN(W_v1 ·)), each given as (w1, b1, gamma, beta, w2, b2). No cell of the chapter
# computes it (the chapter derives the add fusion, eq. 5).
# Typical mistakes:
#   - the order reversed: (x + T_add) ⊙ σ(T_mul), the sum first
#   - the two transforms swapped (mul's weights in the sum, add's in the product)
#   - one transform used for both terms (add's, or mul's)
#   - the sigmoid forgotten on the multiplicative term / a sigmoid on the additive term too
#   - one term missing: x + T_add (the default block) or x ⊙ σ(T_mul) (the mul fusion)
#   - x added once more: x ⊙ σ(T_mul) + x + T_add
#   - the LayerNorm forgotten, the ReLU before it, or a batch norm (statistics over the batch)
#   - the mean over positions (SE's squeeze) as the context instead of attention pooling
def check_gc_mul_add(fn: Callable[..., Any]) -> Feedback:
    """Exercise 3: ``fn(x, wk, bk, mul, add)`` is the GC block with fusion "mul+add"."""
    what = "Your gc_mul_add"
    g = torch.Generator().manual_seed(11)
    # no two of B, C, H, W, C/r are equal
    for shape, r in [((2, 8, 5, 3), 2), ((3, 12, 4, 7), 2)]:
        B, C, H, W = shape
        h = C // r
        x = torch.randn(shape, generator=g, dtype=torch.float64)
        wk = torch.randn(C, generator=g, dtype=torch.float64)
        bk = torch.randn(1, generator=g, dtype=torch.float64)
        mul, add = _random_transform(g, C, h), _random_transform(g, C, h)
        got, fb = run_answer(fn, x, wk, bk, mul, add, what=what)
        if fb is not None:
            return fb
        alpha = (torch.einsum("bchw,c->bhw", x, wk) + bk).flatten(1).softmax(-1)
        context = _context(x, alpha)

        def grid(t: torch.Tensor) -> torch.Tensor:  # (B, C) -> (B, C, 1, 1): the same at every position
            return t[:, :, None, None]

        def z(*, ctx: torch.Tensor = context, m: tuple = mul, a: tuple = add, **kw: Any) -> torch.Tensor:
            return x * torch.sigmoid(grid(_transform(ctx, *m, **kw))) + grid(_transform(ctx, *a, **kw))

        t_mul, t_add = grid(_transform(context, *mul)), grid(_transform(context, *add))
        expected = z()
        if isinstance(got, torch.Tensor) and got.shape == expected.shape:
            got = got.detach().to(torch.float64)
            known = {
                "the sum comes first: that is (x + T_add) ⊙ σ(T_mul); the official order multiplies first, "
                "z = x ⊙ σ(T_mul(context)) + T_add(context)": (x + t_add) * torch.sigmoid(t_mul),
                "the two transforms are swapped: `mul` gates the product through the sigmoid, `add` is the "
                "term added": z(m=add, a=mul),
                "the additive transform's weights are used for both terms; each fusion has its own transform":
                    z(m=add),
                "the multiplicative transform's weights are used for both terms; each fusion has its own "
                "transform": z(a=mul),
                "the sigmoid on the multiplicative term is missing: x ⊙ σ(T_mul(context)) rescales every channel "
                "by a number in (0, 1)": x * t_mul + t_add,
                "the additive term went through a sigmoid too; only the multiplicative one does":
                    x * torch.sigmoid(t_mul) + torch.sigmoid(t_add),
                "the multiplicative term is missing: x + T_add(context) is the default block, fusion='add'":
                    x + t_add,
                "the additive term is missing: x ⊙ σ(T_mul(context)) is fusion='mul'": x * torch.sigmoid(t_mul),
                "x is added once more: the product x ⊙ σ(·) already carries x, z = x ⊙ σ(T_mul) + T_add":
                    x * torch.sigmoid(t_mul) + x + t_add,
                "the LayerNorm is missing: each transform normalises W_v1's output, ReLU(LN(W_v1 ·))": z(ln="none"),
                "the ReLU comes before the LayerNorm; each transform is W_v2 ReLU(LN(W_v1 ·))": z(relu_first=True),
                "that normalises each hidden unit over the batch (a batch norm); the LayerNorm normalises "
                "each image's C/r hidden values": z(ln="batch"),
                "the context is the mean over positions (SE's squeeze); the GC block pools with the softmax "
                "weights α_j = softmax(W_k x_j)": z(ctx=x.mean((2, 3))),
            }
            fb = match_mistake(got, known, what=what, expected=expected, end=".")
            if fb is not None:
                return fb
        bad = compare_tensors(got, expected, what=what)
        if bad is not None:
            return bad
    return passed(f"{what} is the official mul+add fusion: one attention-pooled context, x ⊙ σ(T_mul) + T_add.")
