"""Checkers for the exercises of "ReViT: attention logits passed from layer to layer".

Above each checker, a comment lists the mistakes a learner typically makes on that exercise;
each one gets its own message (``tests/test_checkers_revit.py`` tries every one of them).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
from einops import rearrange

from ..blocks.revit import ReViTStack
from . import Feedback, check_number, failed, judge_tensor, passed, run_answer

__all__ = ["check_unrolled_weights", "check_revit_b_parameters", "check_post_softmax_weights"]


def _unrolled(alphas: Sequence[float], how: str = "right") -> torch.Tensor:
    """The weight c_k of S_k in A_L for A_1 = S_1, A_l = a_l S_l + (1 - a_l) A_{l-1}; alphas = [a_2 .. a_L]."""
    a = [float(v) for v in alphas]
    if how == "alphas reversed":
        a = a[::-1]
    if how == "first alpha for all":
        a = [a[0]] * len(a)
    c = torch.zeros(len(a) + 1, dtype=torch.float64)
    c[0] = 1.0
    for l, al in enumerate(a, start=1):  # layer l + 1 (0-based index l)
        new, keep = (1 - al, al) if how == "swapped" else (al, 1 - al)
        if how == "no alpha on S":
            new = 1.0
        c[:l] *= keep
        c[l] = new * (keep if how == "own keep" else 1.0)
    return c.flip(0) if how == "reversed" else c


# Exercise 1: unrolled_weights(alphas) -> (L,), with alphas = [α_2, ..., α_L] (one α per layer from the
# second on): the weight c_k of layer k's own logits S_k in the logits A_L of the last layer,
# c[0] being layer 1's.
# Typical mistakes:
#   - the weights in reverse order (c[0] the last layer's)
#   - the alphas used in reverse order (α_L for layer 2)
#   - α and 1 − α swapped (1 − α on the new logits)
#   - S_k entering without its α_k (c_k = prod_{j>k} (1 − α_j))
#   - (1 − α_k) also multiplying layer k's own S_k
#   - one α for every layer (the chapter's shared α, the first one)
#   - L − 1 weights, forgetting layer 1's S_1
def check_unrolled_weights(fn: Callable[..., Any]) -> Feedback:
    """Exercise 1: how much of each layer's own logits reaches the last layer, with one α per layer."""
    what = "unrolled_weights(alphas)"
    alphas = [0.2, 0.5, 0.7]  # α_2, α_3, α_4: L = 4
    got, fb = run_answer(fn, list(alphas), what=what)
    if fb is not None:
        return fb
    if isinstance(got, (list, tuple)):
        try:
            got = torch.tensor([float(v) for v in got], dtype=torch.float64)
        except (TypeError, ValueError):
            return failed(f"{what}: expected a tensor (or list) of numbers, got {got!r}")
    if isinstance(got, torch.Tensor) and got.dim() == 1 and got.numel() == len(alphas):
        return failed(f"{what}: {got.numel()} weights for a stack of L = {len(alphas) + 1} layers: layer 1 has no α, "
                      "but its S_1 still reaches A_L through every (1 − α_l); give one weight per layer, c[0] for layer 1.")
    expected = _unrolled(alphas)
    known = {
        "the weights are in reverse order: c[0] must be layer 1's weight, c[-1] the last layer's": _unrolled(alphas, "reversed"),
        "the alphas are used in reverse order: alphas[0] is α_2, the second layer's": _unrolled(alphas, "alphas reversed"),
        "α and 1 − α are swapped: α_l weighs the layer's new logits S_l, 1 − α_l the carried A_{l−1}": _unrolled(
            alphas, "swapped"),
        "layer k's S_k enters A_k with the factor α_k (c_k = α_k · the product of (1 − α_j) over the later layers j)": _unrolled(
            alphas, "no alpha on S"),
        "(1 − α_k) multiplies the carried A_{k−1}, not layer k's own S_k: the product runs over the later layers j > k only": _unrolled(
            alphas, "own keep"),
        "every layer has its own α here: alphas[l − 2] is α_l, not one α for all": _unrolled(alphas, "first alpha for all"),
    }
    wrong = judge_tensor(got, expected, known, what=what)
    if wrong is not None:
        return wrong
    return passed(f"{what}: right; with α = {alphas} the last layer's logits hold "
                  f"{', '.join(f'{v:.3g}' for v in expected.tolist())} of S_1 … S_4 (they sum to 1).")


# ReViT-B (config/config-ReViT-B.yaml): 16 x 16 patches of a 224 x 224 RGB image (196 tokens), D = 768,
# 12 layers, MLP ratio 4, qkv biases, absolute position embedding, no class token, one learned α,
# final LayerNorm, a 1000-class linear head.
_D, _L, _N, _P, _K = 768, 12, 196, 16, 1000
_PATCH = 3 * _P * _P * _D + _D
_POS = _N * _D
_BLOCK = 12 * _D * _D + 13 * _D
_NORM = 2 * _D
_HEAD = _D * _K + _K
REVIT_B = _PATCH + _POS + _L * _BLOCK + 1 + _NORM + _HEAD


# Exercise 2: ReViT-B's number of parameters.
# Typical mistakes:
#   - the position embedding forgotten (196 × 768)
#   - a class token added (ReViT-B has cls_embed_on: False), with or without its position
#   - ViT-B/16's count (the ViT chapter's), with a class token and no α
#   - one α per layer instead of one shared
#   - α forgotten
#   - the head, its bias, the patch embedding's bias or the final LayerNorm forgotten
#   - the blocks' LayerNorms forgotten
#   - the blocks and α only
def check_revit_b_parameters(answer: Any) -> Feedback:
    """Exercise 2: ReViT-B's parameter count."""
    hints = {
        REVIT_B - _POS: "The position embedding is learned (use_abs_pos: True): one 768-vector per token.",
        REVIT_B + _D: "ReViT-B has no class token (cls_embed_on: False): it pools the tokens by their mean.",
        REVIT_B + 2 * _D: "ReViT-B has no class token (cls_embed_on: False), so neither the token nor its position.",
        REVIT_B + 2 * _D - 1: "That is ViT-B/16's count (class token, 197 positions, no α); ReViT-B has no class token and one α.",
        REVIT_B + _L - 1: "α is one scalar for the whole network, not one per layer.",
        REVIT_B - 1: "The learned α is a parameter too (cfg.ReViT.alpha: True).",
        REVIT_B - _HEAD: "The 1000-class head is a Linear(768, 1000) with a bias.",
        REVIT_B - _K: "The head has a bias (1000 numbers).",
        REVIT_B - _D: "The patch embedding (a 16 × 16 convolution with stride 16) has a bias.",
        REVIT_B - _NORM: "The final LayerNorm has a weight and a bias of 768 each.",
        REVIT_B - _L * 4 * _D: "Each block has two LayerNorms (norm1, norm2), 4 · 768 parameters.",
        _L * _BLOCK + 1: "That is the blocks and α only: add the patch embedding, position embedding, final norm and head.",
    }
    return check_number(answer, REVIT_B, what="ReViT-B's parameters", hints=hints)


def _post_softmax(stack: ReViTStack, t: torch.Tensor, how: str = "right") -> torch.Tensor:
    """Each layer's weights when the blend is taken after the softmax: P_1 = softmax(S_1),
    P_l = α softmax(S_l) + (1 − α) P_{l−1}; (B, L, h, N, N)."""
    a = stack.alpha
    prev, out, t0 = None, [], t
    for blk in stack.blocks:
        src = t0 if how == "tokens not updated" else t
        q, k, v = rearrange(blk.attn.qkv(blk.norm1(src)), "b n (three h d) -> three b h n d", three=3, h=blk.heads)
        p_now = (q @ k.transpose(-2, -1) * blk.head_dim**-0.5).softmax(-1)
        if prev is None:
            p = a * p_now if how == "first blended" else p_now
        elif how == "swapped":
            p = (1 - a) * p_now + a * prev
        else:
            p = a * p_now + (1 - a) * prev
        prev = p_now if how == "unblended passed on" else p
        out.append(p)
        o = rearrange(p @ v, "b h n d -> b n (h d)")
        t = t + blk.attn.proj(o)
        t = t + blk.mlp(blk.norm2(t))
    return torch.stack(out, dim=1)


# Exercise 3: post_softmax_weights(stack, t) -> (B, L, h, N, N): the variant that blends the weights
# after the softmax, P_1 = softmax(S_1), P_l = α softmax(S_l) + (1 − α) P_{l−1}, each layer otherwise
# a ReViT block (its output from P_l V), with the stack's blocks and α.
# Typical mistakes:
#   - ReViT's own blend, before the softmax (the neighbouring mechanism)
#   - α and 1 − α swapped
#   - the unblended softmax(S_{l−1}) passed on instead of P_{l−1}
#   - every layer's queries and keys from the input tokens (the tokens not updated between layers)
#   - the first layer multiplied by α too (its rows then sum to α)
#   - the layers stacked on the first axis, (L, B, h, N, N)
def check_post_softmax_weights(fn: Callable[..., Any]) -> Feedback:
    """Exercise 3: the blend after the softmax instead of before."""
    what = "post_softmax_weights(stack, t)"
    g = torch.Generator().manual_seed(0)
    stack = ReViTStack(8, depth=3, heads=4, mlp_ratio=2).double()
    with torch.no_grad():
        for p in stack.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.5)
        stack.alpha.fill_(0.3)
    t = torch.randn(2, 5, 8, generator=g, dtype=torch.float64)  # B = 2, N = 5, D = 8; L = 3, h = 4
    with torch.no_grad():
        got, fb = run_answer(fn, stack, t.clone(), what=what)
        if fb is not None:
            return fb
        expected = _post_softmax(stack, t)
        if isinstance(got, torch.Tensor) and tuple(got.shape) == (3, 2, 4, 5, 5):
            return failed(f"{what}: the layers are on the first axis, {tuple(got.shape)}; the course puts the batch "
                          f"first, (B, L, h, N, N) = {tuple(expected.shape)}.")
        known = {
            "that is ReViT's own blend, of the logits before the softmax; here the weights are blended after it": stack.attention(t),
            "α and 1 − α are swapped: α weighs the layer's new softmax(S_l), 1 − α the carried P_{l−1}": _post_softmax(
                stack, t, "swapped"),
            "the layer passes on its own softmax(S_l); what the next layer blends with is the blended P_l": _post_softmax(
                stack, t, "unblended passed on"),
            "every layer's queries and keys come from the input tokens; they come from the previous layer's output "
            "(run each block on the tokens the one before returned)": _post_softmax(stack, t, "tokens not updated"),
            "the first layer has nothing to blend with: P_1 = softmax(S_1), rows summing to 1, not α times it": _post_softmax(
                stack, t, "first blended"),
        }
        wrong = judge_tensor(got, expected, known, what=what)
    if wrong is not None:
        return wrong
    return passed(f"{what}: right; {expected.shape[1]} layers of weights, each row a convex mix of the layers' softmaxes.")
