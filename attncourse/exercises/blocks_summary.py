"""Checkers for the exercises of "Part VI side by side".

Above each checker, a comment lists the mistakes a learner typically makes on that exercise;
each one gets its own message (``tests/test_checkers_blocks_summary.py`` tries every one of them).
"""

from __future__ import annotations

import math
from typing import Any, Callable

import torch

from . import Feedback, failed, passed, run_answer

__all__ = ["check_retained", "check_layer_similarity", "check_block_flops"]


def _number(got: Any) -> float | None:
    try:
        return float(got)
    except (TypeError, ValueError, RuntimeError):
        return None


# Exercise 1: retained(clean, corrupted) -> the mean over seeds of corrupted[s] / clean[s], the share of
# its clean accuracy a network keeps under a corruption (two tensors of final accuracies, seed by seed).
# Typical mistakes:
#   - the ratio of the means (the seeds unpaired)
#   - the ratio upside down (clean / corrupted, above 1)
#   - the drop clean - corrupted (a difference, not a share)
#   - the median of the ratios instead of their mean
def check_retained(fn: Callable[..., Any]) -> Feedback:
    """Exercise 1: the share of the clean accuracy kept under a corruption, seed by seed."""
    what = "retained(clean, corrupted)"
    clean = torch.tensor([0.95, 0.90, 0.99, 0.80, 0.97], dtype=torch.float64)
    corrupted = torch.tensor([0.50, 0.72, 0.60, 0.30, 0.85], dtype=torch.float64)
    got, fb = run_answer(fn, clean.clone(), corrupted.clone(), what=what)
    if fb is not None:
        return fb
    value = _number(got)
    if value is None:
        return failed(f"{what}: expected one number (the mean over the seeds), got {got!r}.")
    want = float((corrupted / clean).mean())
    if math.isclose(value, want, abs_tol=1e-9):
        return passed(f"{what}: right, {want:.3f}: the mean over five seeds of each seed's corrupted / clean accuracy.")
    known = {
        float(corrupted.mean() / clean.mean()): "that is the ratio of the means: divide seed by seed first (each "
                                                "seed's network is tested clean and corrupted), then average",
        float((clean / corrupted).mean()): "the ratio is upside down: the corrupted accuracy over the clean one (a share, "
                                           "at most about 1)",
        float((clean - corrupted).mean()): "that is the drop in accuracy, a difference; the share kept is a ratio",
        float((corrupted / clean).median()): "that is the median of the ratios; the mean is asked for",
    }
    for wrong, hint in known.items():
        if math.isclose(value, wrong, abs_tol=1e-9):
            return failed(f"{what}: {hint}.")
    return failed(f"{what}: expected {want:.4f}, got {value:.4f}.")


def _cos_rows(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.cosine_similarity(a, b, dim=-1)


def layer_similarity_reference(weights: torch.Tensor) -> torch.Tensor:
    """The exercise's answer: for each pair of consecutive layers, the cosine similarity of every
    query's attention row, averaged over images, heads and queries; ``(L - 1,)``."""
    return torch.stack([_cos_rows(weights[:, i], weights[:, i + 1]).mean() for i in range(weights.shape[1] - 1)])


# Exercise 2: layer_similarity(weights) -> for attention weights (B, L, h, N, N) (ReViT2d.attention's
# layout: images, layers, heads, queries, keys), the cosine similarity between each query's row in layer
# l and in layer l + 1, averaged over images, heads and queries: a tensor of L - 1 values.
# Typical mistakes:
#   - one cosine per whole map (rows flattened together) instead of one per query row
#   - the dot product of the rows, not normalised
#   - only the first and last layers (one value)
#   - the cosine over the queries (dim -2: columns) instead of the keys
def check_layer_similarity(fn: Callable[..., Any]) -> Feedback:
    """Exercise 2: how alike consecutive layers' attention maps are."""
    what = "layer_similarity(weights)"
    gen = torch.Generator().manual_seed(5)
    weights = torch.softmax(3 * torch.randn(3, 4, 2, 6, 6, generator=gen, dtype=torch.float64), dim=-1)
    got, fb = run_answer(fn, weights.clone(), what=what)
    if fb is not None:
        return fb
    want = layer_similarity_reference(weights)
    try:
        got_t = torch.as_tensor(got, dtype=torch.float64).reshape(-1)
    except (TypeError, ValueError, RuntimeError):
        return failed(f"{what}: expected a tensor of {len(want)} numbers (one per pair of consecutive layers), got {got!r}.")
    if got_t.numel() == len(want) and torch.allclose(got_t, want, atol=1e-9):
        return passed(f"{what}: right; {', '.join(f'{v:.3f}' for v in want)} for the three pairs of consecutive layers.")
    if got_t.numel() == 1:
        end = _cos_rows(weights[:, 0], weights[:, -1]).mean()
        if torch.allclose(got_t, end.reshape(1), atol=1e-9):
            return failed(f"{what}: that compares the first and last layers only; one value per pair of consecutive layers "
                          f"(l, l + 1), {len(want)} here.")
        return failed(f"{what}: one value per pair of consecutive layers ({len(want)} here), not one for the stack.")
    if got_t.numel() != len(want):
        return failed(f"{what}: expected {len(want)} values (one per pair of consecutive layers), got {got_t.numel()}.")
    wrong = {
        "flat": torch.stack([_cos_rows(weights[:, i].flatten(-2), weights[:, i + 1].flatten(-2)).mean()
                             for i in range(weights.shape[1] - 1)]),
        "dot": torch.stack([(weights[:, i] * weights[:, i + 1]).sum(-1).mean() for i in range(weights.shape[1] - 1)]),
        "columns": torch.stack([torch.nn.functional.cosine_similarity(weights[:, i], weights[:, i + 1], dim=-2).mean()
                                for i in range(weights.shape[1] - 1)]),
    }
    hints = {
        "flat": "that is one cosine per whole map (its rows flattened together); compare each query's row, then average",
        "dot": "that is the dot product of the rows; divide by both rows' lengths (a cosine) so that a flat and a peaked "
               "row are compared by their shape",
        "columns": "the cosine ran over the queries (dim -2); each query's row is over the keys, the last axis",
    }
    for key, w in wrong.items():
        if torch.allclose(got_t, w, atol=1e-9):
            return failed(f"{what}: {hints[key]}.")
    return failed(f"{what}: expected {', '.join(f'{v:.4f}' for v in want)}, got {', '.join(f'{v:.4f}' for v in got_t)}.")


def block_flops_reference(n: int, d: int, r: float) -> float:
    """The exercise's answer: FLOPs (2 per multiply-add) of one ViT block on N tokens of width D with
    MLP ratio r: q, k, v and the output projection 8ND², the two attention products 4N²D, the MLP 4rND²."""
    return 8 * n * d * d + 4 * n * n * d + 4 * r * n * d * d


# Exercise 3: block_flops(n, d, r) -> the FLOPs of one ViT block's matrix products (2 per multiply-add),
# N tokens of width D, MLP width rD: 8ND² (q, k, v, output projection) + 4N²D (QK^T and AV) + 4rND² (MLP).
# Typical mistakes:
#   - multiply-adds, not FLOPs (half)
#   - the attention products forgotten (no N² term)
#   - the MLP at ratio 4 whatever r is
#   - the MLP forgotten
def check_block_flops(fn: Callable[..., Any]) -> Feedback:
    """Exercise 3: a ViT block's FLOPs from its shapes."""
    what = "block_flops(n, d, r)"
    n, d, r = 36, 32, 2
    got, fb = run_answer(fn, n, d, r, what=what)
    if fb is not None:
        return fb
    value = _number(got)
    if value is None:
        return failed(f"{what}: expected one number, got {got!r}.")
    want = block_flops_reference(n, d, r)
    if math.isclose(value, want, rel_tol=1e-9):
        return passed(f"{what}: right, {want:,.0f} FLOPs at N = {n}, D = {d}, r = {r}.")
    known = {
        want / 2: "that counts multiply-adds; a multiply-add is 2 FLOPs (the convention of count_flops and the papers)",
        want - 4 * n * n * d: "the attention's own products are missing: Q Kᵀ and the weights times V, 2N²D each",
        want - 4 * r * n * d * d + 16 * n * d * d: f"the MLP's width is r·D with the r given (here {r}), not 4D",
        want - 4 * r * n * d * d: "the MLP is missing: D → rD → D, 4rND² FLOPs",
    }
    for wrong, hint in known.items():
        if math.isclose(value, wrong, rel_tol=1e-9):
            return failed(f"{what}: {hint}.")
    return failed(f"{what}: expected {want:,.0f}, got {value:,.0f}.")
