"""Checkers for the exercises of the chapter on scaled dot-product and multi-head attention.

Above each checker, a comment lists the mistakes a learner typically makes on that exercise;
each one gets its own message (``tests/test_checkers_mhsa.py`` tries every one of them).
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from einops import rearrange

from ..selfattn.mhsa import MultiHeadSelfAttention2d
from . import Feedback, check_number, failed, judge_tensor, passed, run_answer

__all__ = ["check_attention_bytes", "check_mhsa_function", "check_query_map"]

# Exercise 1: the bytes of ONE attention-weight tensor softmax(Q K^T / sqrt(d)), shape (B, h, N, N),
# that the naive form materialises for B = 3 images, h = 8 heads, C = 256, a 56 × 56 map, float32.
BYTES_B, BYTES_HEADS, BYTES_C, BYTES_SIDE = 3, 8, 256, 56


# Typical mistakes:
#   - N entries per head instead of N × N (or N taken as the side, 56)
#   - elements counted, not bytes (× 4 forgotten)
#   - 8 bytes per value (float64), or two tensors (logits and weights): both give twice the answer,
#     so they share one message that names both
#   - the heads forgotten / the batch forgotten
#   - the size of Q (B h N d) instead of the weights
#   - the answer in MiB, in MB or in GB instead of bytes
def check_attention_bytes(answer: Any) -> Feedback:
    """Exercise 1: bytes of one (B, h, N, N) float32 attention-weight tensor, B=3, h=8, 56×56."""
    b, h, c = BYTES_B, BYTES_HEADS, BYTES_C
    n = BYTES_SIDE * BYTES_SIDE
    right = b * h * n * n * 4
    return check_number(
        answer,
        right,
        what="Bytes of the attention weights",
        hints={
            b * h * n * 4: "Each head holds one weight per (query, key) pair: N × N entries with N = H·W = 3,136 "
            "positions, not N.",
            b * h * n * n: "That is the number of values; each float32 takes 4 bytes.",
            b * h * n * n * 8: "That is twice the answer: 8 bytes a value (float64) instead of float32's 4, or two "
            "tensors (the logits Q Kᵀ/√d and the softmax) instead of the one asked for.",
            b * n * n * 4: "Every head has its own N × N matrix: multiply by h = 8.",
            h * n * n * 4: "Every image in the batch has its own matrices: multiply by B = 3.",
            b * h * n * (c // h) * 4: "That is the size of Q (B·h·N·d); the weights are B·h·N·N.",
            right / 2**20: "That is in MiB; give the answer in bytes.",
            right / 1e6: "That is in MB; give the answer in bytes.",
            right / 1e9: "That is in GB; give the answer in bytes.",
        },
    )


def _mhsa_reference(
    x: torch.Tensor, w: torch.Tensor, bqkv: torch.Tensor, wo: torch.Tensor, bo: torch.Tensor | None, heads: int, *,
    scale: str = "d", softmax_dim: int = -1, split: str = "h d", swap_qk: bool = False, residual: bool = True,
    w_o: bool = True, unflatten: str = "h w",
) -> torch.Tensor:
    c, hh = x.shape[1], x.shape[2]
    t = rearrange(x, "b c h w -> b (h w) c")
    qkv = t @ w.T + bqkv
    q, k, v = rearrange(qkv, f"b n (three {split}) -> three b h n d", three=3, h=heads)
    if swap_qk:
        q, k = k, q
    s = {"d": (c // heads) ** -0.5, "C": c**-0.5, "none": 1.0}[scale]
    a = torch.softmax(q @ k.transpose(-2, -1) * s, dim=softmax_dim)
    o = rearrange(a @ v, "b h n d -> b n (h d)")
    if w_o:
        o = o @ wo.T + (bo if bo is not None else 0)
    out = rearrange(o, f"b ({unflatten}) c -> b c h w", h=hh)
    return x + out if residual else out


# Exercise 2: mhsa_function(x, w_qkv, b_qkv, w_o, b_o, heads) = x + MultiHead(T, T, T), T the tokens.
# Typical mistakes:
#   - no 1/sqrt(d) / 1/sqrt(C) (the model width) instead of 1/sqrt(d) (the head width)
#   - the softmax over the queries (dim -2) instead of over the keys
#   - the heads split as (d h) instead of (h d) (channel j of head i is i·d + j)
#   - one head (heads ignored)
#   - queries and keys swapped (the transposed scores)
#   - the residual x forgotten / W^O forgotten / W^O's bias forgotten
#   - tokens flattened as (h w) and put back as (w h)
def check_mhsa_function(fn: Callable[..., Any]) -> Feedback:
    """Exercise 2: ``fn(x, w_qkv, b_qkv, w_o, b_o, heads)`` equals ``MultiHeadSelfAttention2d``."""
    what = "Your mhsa_function"
    g = torch.Generator().manual_seed(11)
    for c, heads, shape in [(8, 2, (2, 8, 3, 5)), (12, 3, (1, 12, 4, 2))]:
        m = MultiHeadSelfAttention2d(c, heads=heads).double()
        with torch.no_grad():
            for p in m.parameters():
                p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64))
        x = torch.randn(shape, generator=g, dtype=torch.float64)
        w, bqkv, wo, bo = (t.detach() for t in (m.qkv.weight, m.qkv.bias, m.proj.weight, m.proj.bias))
        with torch.no_grad():
            expected = m(x)
        got, fb = run_answer(fn, x, w, bqkv, wo, bo, heads, what=what)
        if fb is not None:
            return fb

        def ref(**kw: Any) -> torch.Tensor:
            return _mhsa_reference(x, w, bqkv, wo, bo, heads, **kw)

        known = {
            "the scores are not divided by sqrt(d); eq. (1) scales Q Kᵀ by 1/sqrt(d_k)": ref(scale="none"),
            "the scores are divided by sqrt(C), the model width; d_k is the width of one head, C / h":
                ref(scale="C"),
            "the softmax runs over the queries (dim -2); each query's row over the keys must sum to 1 (dim -1)":
                ref(softmax_dim=-2),
            "the heads are split as (d h); head i holds channels i·d to (i+1)·d - 1, the pattern (h d)":
                ref(split="d h"),
            "that is a single head over all C channels; split the C channels into `heads` heads of d = C / h":
                _mhsa_reference(x, w, bqkv, wo, bo, 1),
            "queries and keys are swapped: row n must hold q_n · k_m over the keys m": ref(swap_qk=True),
            "the residual is missing: the module returns x + MultiHead(T, T, T)": ref(residual=False),
            "the output projection W^O is missing (Concat(heads) W^O)": ref(w_o=False),
            "W^O's bias b_o is missing": _mhsa_reference(x, w, bqkv, wo, None, heads),
            "the tokens were flattened as (h w) and put back as (w h): the positions are scrambled":
                ref(unflatten="w h"),
        }
        fb = judge_tensor(got, expected, known, what=what)
        if fb is not None:
            return fb
    return passed(f"{what} equals MultiHeadSelfAttention2d: heads of width C/h, scale 1/sqrt(d), W^O, residual.")


# Exercise 3: query_map(weights, h, w, i, j): from weights (B, heads, H*W, H*W), where the query at
# row i, column j looks, averaged over the heads: (B, H, W).
# Typical mistakes:
#   - the column of the matrix (who looks at (i, j)) instead of its row (where (i, j) looks)
#   - the query index j·H + i (column-major) instead of i·W + j
#   - the map reshaped (W, H) instead of (H, W)
#   - heads summed / max over heads / only head 0 / heads not reduced
def check_query_map(fn: Callable[..., Any]) -> Feedback:
    """Exercise 3: ``fn(weights, h, w, i, j)`` is the map of query (i, j), averaged over heads."""
    what = "Your query_map"
    g = torch.Generator().manual_seed(3)
    for b, heads, h, w, i, j in [(2, 3, 4, 6, 1, 4), (1, 2, 5, 3, 3, 0)]:
        n = h * w
        a = torch.softmax(torch.randn(b, heads, n, n, generator=g, dtype=torch.float64) * 2, dim=-1)
        expected = a[:, :, i * w + j].mean(1).reshape(b, h, w)
        got, fb = run_answer(fn, a, h, w, i, j, what=what)
        if fb is not None:
            return fb
        if isinstance(got, torch.Tensor):
            if got.shape == (b, w, h) and h != w:
                return failed(f"{what}: the map has shape {tuple(got.shape)}; positions are in (h w) order, so "
                              f"reshape to (B, H, W) = {(b, h, w)}.")
            if got.shape == (b, heads, h, w):
                return failed(f"{what}: one map per head, shape {tuple(got.shape)}; average over the heads.")
        q = i * w + j
        known = {
            "that is a column of the weights, how much every query looks at (i, j); the map of where (i, j) "
            "looks is its row, weights[:, :, i·W + j, :]": a[:, :, :, q].mean(1).reshape(b, h, w),
            "the query index is j·H + i (column-major); in (h w) order position (i, j) is i·W + j":
                a[:, :, j * h + i].mean(1).reshape(b, h, w),
            "the heads are summed; average them (each head's row sums to 1, so the map should too)":
                a[:, :, q].sum(1).reshape(b, h, w),
            "that is the maximum over the heads; average them": a[:, :, q].amax(1).reshape(b, h, w),
            "that is head 0 only; average over all heads": a[:, 0, q].reshape(b, h, w),
        }
        fb = judge_tensor(got, expected, known, what=what)
        if fb is not None:
            return fb
    return passed(f"{what} reads row i·W + j of the weights, averages the heads and reshapes to (H, W).")
