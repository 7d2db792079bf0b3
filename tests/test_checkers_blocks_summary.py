"""The checkers of "Part VI side by side": each typical mistake its own message, the right answer
passes, a blank answer is "not attempted" (the mistakes are listed above each checker)."""

from __future__ import annotations

import torch

import attncourse
from attncourse.exercises import blocks_summary as ex

from checker_tables import check_table


def test_retained():
    check_table(ex.check_retained, lambda c, k: (k / c).mean(), {
        "unpaired": (lambda c, k: k.mean() / c.mean(), "ratio of the means"),
        "upside down": (lambda c, k: (c / k).mean(), "upside down"),
        "drop": (lambda c, k: (c - k).mean(), "drop in accuracy"),
        "median": (lambda c, k: (k / c).median(), "median"),
        "not a number": (lambda c, k: k / c, "one number"),
        "other": (lambda c, k: 0.5, "expected"),
    })


def test_layer_similarity():
    cos = torch.nn.functional.cosine_similarity

    def right(w):
        return torch.stack([cos(w[:, i], w[:, i + 1], dim=-1).mean() for i in range(w.shape[1] - 1)])

    check_table(ex.check_layer_similarity, right, {
        "flat": (lambda w: torch.stack([cos(w[:, i].flatten(-2), w[:, i + 1].flatten(-2), dim=-1).mean()
                                        for i in range(w.shape[1] - 1)]), "whole map"),
        "dot": (lambda w: torch.stack([(w[:, i] * w[:, i + 1]).sum(-1).mean() for i in range(w.shape[1] - 1)]),
                "dot product"),
        "columns": (lambda w: torch.stack([cos(w[:, i], w[:, i + 1], dim=-2).mean() for i in range(w.shape[1] - 1)]),
                    "over the queries"),
        "ends": (lambda w: cos(w[:, 0], w[:, -1], dim=-1).mean(), "first and last"),
        "one": (lambda w: torch.tensor(0.3), "not one for the stack"),
        "count": (lambda w: right(w)[:2], "expected 3 values"),
        "other": (lambda w: right(w) + 0.01, "expected"),
    })


def test_block_flops():
    check_table(ex.check_block_flops, lambda n, d, r: 8 * n * d * d + 4 * n * n * d + 4 * r * n * d * d, {
        "macs": (lambda n, d, r: (8 * n * d * d + 4 * n * n * d + 4 * r * n * d * d) / 2, "multiply-adds"),
        "no n2": (lambda n, d, r: 8 * n * d * d + 4 * r * n * d * d, "attention's own products"),
        "ratio 4": (lambda n, d, r: 8 * n * d * d + 4 * n * n * d + 16 * n * d * d, "not 4D"),
        "no mlp": (lambda n, d, r: 8 * n * d * d + 4 * n * n * d, "MLP is missing"),
        "text": (lambda n, d, r: "many", "one number"),
        "other": (lambda n, d, r: 1.0, "expected"),
    })


def test_the_flops_formula_is_what_count_flops_counts_for_the_vit_block():
    from torch.nn.attention import SDPBackend, sdpa_kernel

    n_side, d, r = 6, 32, 2
    block = attncourse.create("vit", d, heads=4, mlp_ratio=r)
    with sdpa_kernel(SDPBackend.MATH):
        counted = attncourse.count_flops(block, torch.randn(1, d, n_side, n_side))
    matmuls = ex.block_flops_reference(n_side * n_side, d, r)
    assert matmuls <= counted < 1.05 * matmuls  # the rest: LayerNorms, softmax, GELU, biases
