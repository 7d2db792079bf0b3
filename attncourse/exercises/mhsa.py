"""Checkers for the exercises of the chapter on scaled dot-product and multi-head attention.

Above each checker, a comment lists the mistakes a learner typically makes on that exercise;
each one gets its own message (``tests/test_checkers_mhsa.py`` tries every one of them).
The exercises ask for what no cell of the chapter computes: other sizes than any printed,
attention over pooled keys and values, the heads' mean attention distance.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F
from einops import rearrange

from ..selfattn.mhsa import MultiHeadSelfAttention2d
from . import Feedback, check_number, failed, judge_tensor, passed, run_answer

__all__ = ["check_attention_bytes", "check_pooled_kv_mhsa", "check_mean_attention_distance"]

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


def _pooled_reference(
    x: torch.Tensor, w: torch.Tensor, bqkv: torch.Tensor, wo: torch.Tensor, bo: torch.Tensor | None, heads: int, *,
    pool: str = "avg", scale: str = "d", softmax_dim: int = -1, split: str = "h d", residual: bool = True,
    w_o: bool = True, unflatten: str = "h w",
) -> torch.Tensor:
    """x + MultiHead with queries from every position and keys, values from the 2×2-pooled map,
    with the variants the mistakes make."""
    c, hh = x.shape[1], x.shape[2]
    t = rearrange(x, "b c h w -> b (h w) c")
    pooled = {"avg": F.avg_pool2d, "max": F.max_pool2d}[pool](x, 2) if pool != "none" else x
    ts = rearrange(pooled, "b c h w -> b (h w) c")
    q = rearrange(t @ w[:c].T + bqkv[:c], f"b n ({split}) -> b h n d", h=heads)
    k = rearrange(ts @ w[c : 2 * c].T + bqkv[c : 2 * c], f"b m ({split}) -> b h m d", h=heads)
    v = rearrange(ts @ w[2 * c :].T + bqkv[2 * c :], f"b m ({split}) -> b h m d", h=heads)
    s = {"d": (c // heads) ** -0.5, "C": c**-0.5, "none": 1.0}[scale]
    a = torch.softmax(q @ k.transpose(-2, -1) * s, dim=softmax_dim)
    o = rearrange(a @ v, "b h n d -> b n (h d)")
    if w_o:
        o = o @ wo.T + (bo if bo is not None else 0)
    out = rearrange(o, f"b ({unflatten}) c -> b c h w", h=hh)
    return x + out if residual else out


# Exercise 2: pooled_kv_mhsa(x, w_qkv, b_qkv, w_o, b_o, heads) = x + MultiHead(T, T̂, T̂): the queries
# from every position, the keys and values from the 2×2 average-pooled map (N/4 of them), the
# module's weights. No cell of the chapter computes it: its einops form and the module attend over
# all N positions.
# Typical mistakes:
#   - no pooling: full attention over the N positions (the module's, and the chapter's mhsa_einops)
#   - a max-pool instead of the average
#   - the queries pooled too (an output on the pooled H/2 × W/2 grid, or a crash at the residual)
#   - the keys pooled but not the values (a crash: N/4 weights per query against N values)
#   - no 1/sqrt(d) / 1/sqrt(C) (the model width) instead of 1/sqrt(d) (the head width)
#   - the softmax over the queries (dim -2) instead of over the keys
#   - the heads split as (d h) instead of (h d) (channel j of head i is i·d + j)
#   - one head (heads ignored)
#   - the residual x forgotten / W^O forgotten / W^O's bias forgotten
#   - tokens flattened as (h w) and put back as (w h)
#   (pooling after the projections is not a mistake: an average commutes with an affine map; nor is
#   the pooled map flattened in another order: keys and values move together, the softmax does not care)
def check_pooled_kv_mhsa(fn: Callable[..., Any]) -> Feedback:
    """Exercise 2: ``fn(x, w_qkv, b_qkv, w_o, b_o, heads)`` is multi-head attention whose keys and values come
    from the 2×2 average-pooled map."""
    what = "Your pooled_kv_mhsa"
    g = torch.Generator().manual_seed(11)
    # no two of B, C, heads, d, H, W, N, N/4 are equal
    for c, heads, shape in [(12, 3, (2, 12, 6, 10)), (14, 2, (3, 14, 6, 8))]:
        B, _, H, W = shape
        m = MultiHeadSelfAttention2d(c, heads=heads).double()
        with torch.no_grad():
            for p in m.parameters():
                p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64))
        x = torch.randn(shape, generator=g, dtype=torch.float64)
        w, bqkv, wo, bo = (t.detach() for t in (m.qkv.weight, m.qkv.bias, m.proj.weight, m.proj.bias))
        got, fb = run_answer(fn, x, w, bqkv, wo, bo, heads, what=what)
        if fb is not None:
            n, m = H * W, H * W // 4
            if fb.attempted and "RuntimeError" in fb.message and f"{m}" in fb.message and f"{n}" in fb.message:
                # a product of N/4 weights per query with N values (or the reverse): keys and values of other lengths
                return failed(fb.message + f". With N = {n} positions and N/4 = {m} pooled ones: the keys "
                              "and the values must both come from the pooled map (one value per key).")
            return fb
        expected = _pooled_reference(x, w, bqkv, wo, bo, heads)
        if isinstance(got, torch.Tensor) and tuple(got.shape) == (B, c, H // 2, W // 2):
            return failed(f"{what}: the output is on the pooled {H // 2}×{W // 2} grid, {tuple(got.shape)}: the "
                          f"queries were pooled too. Every one of the H·W = {H * W} positions asks; only the keys and "
                          "values come from the pooled map.")

        def ref(**kw: Any) -> torch.Tensor:
            return _pooled_reference(x, w, bqkv, wo, bo, heads, **kw)

        known = {
            "the keys and values are not pooled: that is full attention over all N positions, the module's; here "
            "they come from the 2×2 average-pooled map": ref(pool="none"),
            "that pools with the maximum; the keys and values here come from the 2×2 *average* pool (F.avg_pool2d)":
                ref(pool="max"),
            "the scores are not divided by sqrt(d); eq. (1) scales Q Kᵀ by 1/sqrt(d_k)": ref(scale="none"),
            "the scores are divided by sqrt(C), the model width; d_k is the width of one head, C / h":
                ref(scale="C"),
            "the softmax runs over the queries (dim -2); each query's row over the keys must sum to 1 (dim -1)":
                ref(softmax_dim=-2),
            "the heads are split as (d h); head i holds channels i·d to (i+1)·d - 1, the pattern (h d)":
                ref(split="d h"),
            "that is a single head over all C channels; split the C channels into `heads` heads of d = C / h":
                _pooled_reference(x, w, bqkv, wo, bo, 1),
            "the residual is missing: the block returns x + MultiHead(T, T̂, T̂)": ref(residual=False),
            "the output projection W^O is missing (Concat(heads) W^O)": ref(w_o=False),
            "W^O's bias b_o is missing": _pooled_reference(x, w, bqkv, wo, None, heads),
            "the tokens were flattened as (h w) and put back as (w h): the positions are scrambled":
                ref(unflatten="w h"),
        }
        fb = judge_tensor(got, expected, known, what=what)
        if fb is not None:
            return fb
    return passed(f"{what}: queries from all H·W positions, keys and values from the H·W/4 pooled ones, heads of "
                  "width C/h, scale 1/sqrt(d), W^O, residual.")


def _distances(h: int, w: int, *, order: str = "h w", metric: str = "euclid") -> torch.Tensor:
    """(N, N) distances in pixels between the positions of an h × w map, flattened in ``order``."""
    rows, cols = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    if order == "w h":  # position n read as column n // h, row n % h
        rows, cols = rows.T, cols.T
    r, c = rows.flatten(), cols.flatten()
    dr, dc = r[:, None] - r[None, :], c[:, None] - c[None, :]
    if metric == "euclid":
        return torch.sqrt(dr**2 + dc**2)
    if metric == "squared":
        return dr**2 + dc**2
    return dr.abs() + dc.abs()


# Exercise 3: mean_attention_distance(weights, height, width): for weights (B, heads, N, N) of an
# height × width map, each head's attention distance (ViT's, its appendix D.7): Σ_m a_{n,m} ‖p_n − p_m‖,
# Euclidean, in pixels, averaged over the queries n: (B, heads). No cell of the chapter computes it.
# Typical mistakes:
#   - positions read in (w h) order (row n % H, column n // H) instead of (h w) (row n // W, column n % W)
#   - the squared distance / the Manhattan distance |Δrow| + |Δcol|
#   - the weights ignored (the plain mean distance between positions)
#   - the weighted distances averaged over the keys (divided by N) instead of summed (the weights
#     already sum to 1)
#   - the queries summed instead of averaged
#   - the heads averaged too ((B,) instead of (B, heads)) / the batch averaged ((heads,))
#   (a column instead of a row gives the same number: the distance is symmetric, so the mean over
#   queries of the row sums equals that over keys of the column sums)
def check_mean_attention_distance(fn: Callable[..., Any]) -> Feedback:
    """Exercise 3: ``fn(weights, height, width)`` is each head's mean attention distance, (B, heads)."""
    what = "Your mean_attention_distance"
    g = torch.Generator().manual_seed(3)
    # no two of B, heads, height, width, N are equal; height != width so (w h) order shows
    for b, heads, h, w in [(2, 3, 4, 6), (3, 2, 5, 7)]:
        n = h * w
        a = torch.softmax(torch.randn(b, heads, n, n, generator=g, dtype=torch.float64) * 2, dim=-1)
        got, fb = run_answer(fn, a, h, w, what=what)
        if fb is not None:
            return fb
        dist = _distances(h, w)
        expected = (a * dist).sum(-1).mean(-1)
        if isinstance(got, torch.Tensor):
            if tuple(got.shape) == (b,):
                return failed(f"{what}: one number per image, shape {tuple(got.shape)}; keep one per head, (B, heads) "
                              f"= {(b, heads)}: the heads are compared with each other.")
            if tuple(got.shape) == (heads,):
                return failed(f"{what}: one number per head for the whole batch, shape {tuple(got.shape)}; keep the "
                              f"images apart, (B, heads) = {(b, heads)}.")
        known = {
            "the positions are read in (w h) order; in (h w) order position n is at row n // W, column n % W":
                (a * _distances(h, w, order="w h")).sum(-1).mean(-1),
            "that is the squared distance; take the Euclidean distance, the square root of Δrow² + Δcol²":
                (a * _distances(h, w, metric="squared")).sum(-1).mean(-1),
            "that is the Manhattan distance |Δrow| + |Δcol|; take the Euclidean one, sqrt(Δrow² + Δcol²)":
                (a * _distances(h, w, metric="manhattan")).sum(-1).mean(-1),
            "the weights are ignored: that is the plain mean distance between positions; weight each key's "
            "distance by a_{n,m}": dist.mean().expand(b, heads).clone(),
            "the weighted distances are averaged over the keys (divided by N); sum them: a query's weights "
            "already sum to 1": (a * dist).mean(-1).mean(-1),
            "the queries are summed; average them": (a * dist).sum(-1).sum(-1),
        }
        fb = judge_tensor(got, expected, known, what=what)
        if fb is not None:
            return fb
    return passed(f"{what}: Σ_m a_(n,m) ‖p_n − p_m‖ in pixels, positions in (h w) order, averaged over the queries, "
                  "one number per image and head.")
