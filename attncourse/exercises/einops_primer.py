"""Checkers for the exercises of the chapter "einops for attention"."""

from __future__ import annotations

import math
from typing import Any, Callable

import torch

from . import Feedback, compare_tensors, failed, passed, run_answer

__all__ = ["check_to_tokens", "check_split_heads", "check_patchify", "check_attention_scores"]


def _result(problem: Feedback | None, success: str) -> Feedback:
    return passed(success) if problem is None else problem


def _first_problem(fn: Callable[..., Any], cases, reference, what: str, diagnose=None) -> Feedback | None:
    for args in cases:
        got, fb = run_answer(fn, *args, what=what)
        if fb is not None:
            return fb
        expected = reference(*args)
        if diagnose is not None and isinstance(got, torch.Tensor):
            hint = diagnose(got, expected, *args)
            if hint:
                return failed(f"{what}: {hint}")
        bad = compare_tensors(got, expected, what=what)
        if bad is not None:
            return bad
    return None


def check_to_tokens(fn: Callable[[torch.Tensor], torch.Tensor]) -> Feedback:
    """Exercise 1: ``(B, C, H, W) -> (B, H*W, C)``, row-major over (h, w)."""
    what = "to_tokens"
    cases = [(torch.randn(2, 3, 4, 5),), (torch.randn(1, 6, 7, 3),)]

    def reference(x):
        b, c, h, w = x.shape
        return x.permute(0, 2, 3, 1).reshape(b, h * w, c)

    def diagnose(got, expected, x):
        b, c, h, w = x.shape
        if got.shape == (b, c, h * w):
            return "the shape is (B, C, H*W): the tokens must be the second axis and the channels last, (B, H*W, C)."
        if got.shape == expected.shape and torch.equal(got, x.reshape(b, h * w, c)):
            return "you reshaped without moving the channel axis, which mixes channels and positions. Move c last: 'b c h w -> b (h w) c'."
        if got.shape == expected.shape and torch.equal(got, x.permute(0, 3, 2, 1).reshape(b, h * w, c)):
            return "the tokens are in (w h) order; the convention is row-major, (h w)."
        return None

    return _result(_first_problem(fn, cases, reference, what, diagnose), f"{what} is right: 'b c h w -> b (h w) c'.")


def check_split_heads(fn: Callable[[torch.Tensor, int], torch.Tensor]) -> Feedback:
    """Exercise 2: ``(B, N, heads*d) -> (B, heads, N, d)`` with the head axis outermost in the channels."""
    what = "split_heads"
    cases = [(torch.randn(2, 5, 12), 3), (torch.randn(1, 4, 8), 2)]

    def reference(x, heads):
        b, n, hd = x.shape
        return x.reshape(b, n, heads, hd // heads).permute(0, 2, 1, 3)

    def diagnose(got, expected, x, heads):
        b, n, hd = x.shape
        alt = x.reshape(b, n, hd // heads, heads).permute(0, 3, 1, 2)
        if got.shape == expected.shape and torch.equal(got, alt):
            return "you split the channels as (d heads) instead of (heads d): head 0 should own channels 0..d-1."
        if got.shape == (b, n, heads, hd // heads):
            return "the shape is (B, N, heads, d): the head axis must come before the tokens, (B, heads, N, d)."
        return None

    return _result(_first_problem(fn, cases, reference, what, diagnose), f"{what} is right: 'b n (h d) -> b h n d'.")


def check_patchify(fn: Callable[[torch.Tensor, int], torch.Tensor]) -> Feedback:
    """Exercise 3: ViT patches, ``(B, C, H, W) -> (B, (H/p)(W/p), p*p*C)``, each patch flattened as (p1 p2 c)."""
    what = "patchify"
    cases = [(torch.randn(2, 3, 8, 12), 4), (torch.randn(1, 2, 6, 6), 3)]

    def reference(x, p):
        b, c, h, w = x.shape
        return x.reshape(b, c, h // p, p, w // p, p).permute(0, 2, 4, 3, 5, 1).reshape(b, (h // p) * (w // p), p * p * c)

    def diagnose(got, expected, x, p):
        b, c, h, w = x.shape
        alt = x.reshape(b, c, h // p, p, w // p, p).permute(0, 2, 4, 1, 3, 5).reshape(b, (h // p) * (w // p), p * p * c)
        if got.shape == expected.shape and torch.equal(got, alt):
            return "each patch is flattened as (c p1 p2); the ViT convention used here is (p1 p2 c), channels last."
        return None

    return _result(_first_problem(fn, cases, reference, what, diagnose), f"{what} is right: 'b c (h p1) (w p2) -> b (h w) (p1 p2 c)'.")


def check_attention_scores(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> Feedback:
    """Exercise 4: scaled dot-product scores ``q k^T / sqrt(d)`` for ``(B, heads, N, d)`` inputs."""
    what = "attention_scores"
    g = torch.Generator().manual_seed(0)
    cases = [
        (torch.randn(2, 3, 5, 4, generator=g), torch.randn(2, 3, 7, 4, generator=g)),
        (torch.randn(1, 1, 2, 9, generator=g), torch.randn(1, 1, 2, 9, generator=g)),
    ]

    def reference(q, k):
        return q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])

    def diagnose(got, expected, q, k):
        raw = q @ k.transpose(-1, -2)
        if got.shape == expected.shape and torch.allclose(got, raw):
            return "the scale is missing: divide by sqrt(d), the key/query width."
        if got.shape == expected.shape and torch.allclose(got, raw / q.shape[-1]):
            return "you divided by d; the scale is 1/sqrt(d)."
        if got.shape == expected.shape and torch.allclose(got, expected.softmax(-1)):
            return "you applied the softmax; the exercise asks for the scores (logits) before it."
        if got.shape == expected.transpose(-1, -2).shape and got.shape != expected.shape:
            return "the scores have shape (B, heads, N_k, N_q): queries index the rows, 'b h i d, b h j d -> b h i j'."
        return None

    return _result(_first_problem(fn, cases, reference, what, diagnose), f"{what} is right: einsum('b h i d, b h j d -> b h i j') / sqrt(d).")
