"""Checkers for the exercises of the chapter "einops for attention"."""

from __future__ import annotations

import math
from typing import Any, Callable

import torch

from . import Feedback, compare_tensors, failed, passed, run_answer

__all__ = [
    "check_window_tokens",
    "check_map_heads",
    "check_unpatchify",
    "check_shared_key_scores",
    "check_conv_unpatchify",
    "check_to_tokens",
    "check_split_heads",
    "check_patchify",
    "check_attention_scores",
]


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


# The exercises of the chapter. The four checkers below the line of "former exercises" are kept
# for readers of older copies of the chapter, whose exercises repeated patterns the text shows.


# Exercise 1 (windows of p x p tokens), typical mistakes: strided sampling instead of contiguous
# windows ((p1 h) instead of (h p1)), the channel axis not moved last (values, or the shape
# (B·n, C, p·p)), windows ordered (w h), the windows put after the batch ((h w b)), the tokens
# inside a window in (p2 p1) order, the windows not merged into the batch (B, n, p·p, C), each
# window flattened into one vector ((B·n, p·p·C), or the chapter's patch layout (B, n, p·p·C)).
# The cases have no two axes of equal size (B, C, H/p, W/p, p all differ), so that no axis can
# pass for another.
def check_window_tokens(fn: Callable[[torch.Tensor, int], torch.Tensor]) -> Feedback:
    """Exercise 1: ``(B, C, H, W) -> (B·(H/p)·(W/p), p·p, C)``: non-overlapping p×p windows as token sequences."""
    what = "window_tokens"
    g = torch.Generator().manual_seed(0)
    cases = [(torch.randn(3, 5, 14, 8, generator=g), 2), (torch.randn(2, 5, 12, 18, generator=g), 3)]

    def reference(x, p):
        b, c, h, w = x.shape
        return x.reshape(b, c, h // p, p, w // p, p).permute(0, 2, 4, 3, 5, 1).reshape(-1, p * p, c)

    def diagnose(got, expected, x, p):
        b, c, h, w = x.shape
        n = (h // p) * (w // p)
        shapes = {
            (b, n, p * p, c): "the shape is (B, windows, p·p, C): merge the windows into the batch axis, "
            "'... -> (b h w) (p1 p2) c', so that each window is one sequence.",
            (b * n, p * p * c): "each window is flattened into one vector of p·p·C numbers; here a window is a "
            "sequence of p·p tokens, each a C-vector: '... -> (b h w) (p1 p2) c'.",
            (b, n, p * p * c): "that is the patch layout of the chapter's ViT embedding, one vector per patch; "
            "here each window is a sequence of p·p tokens of C channels, '(b h w) (p1 p2) c'.",
            (b * n, c, p * p): "the shape is (B·windows, C, p·p): the channels come before the tokens; each token "
            "must be a C-vector, '... -> (b h w) (p1 p2) c'.",
        }
        if got.shape != expected.shape:
            return shapes.get(tuple(got.shape))
        v = x.reshape(b, c, h // p, p, w // p, p)                                    # b c h p1 w p2
        strided = x.reshape(b, c, p, h // p, p, w // p).permute(0, 3, 5, 2, 4, 1).reshape(-1, p * p, c)
        alternatives = {
            "the windows are strided samples, not contiguous blocks: split H as (h p1), the window index outside "
            "and the offset inside, 'b c (h p1) (w p2) -> ...', not (p1 h).": strided,
            "the channels are not last: each token must be a C-vector, '... -> (b h w) (p1 p2) c'.":
                v.permute(0, 2, 4, 1, 3, 5).reshape(-1, p * p, c),
            "the windows are in (w h) order; the convention is row-major, (b h w).":
                v.permute(0, 4, 2, 3, 5, 1).reshape(-1, p * p, c),
            "the batch axis is inside the window index: use (b h w), so that one image's windows stay together.":
                v.permute(2, 4, 0, 3, 5, 1).reshape(-1, p * p, c),
            "the tokens inside a window are in (p2 p1) order; keep row-major (p1 p2).":
                v.permute(0, 2, 4, 5, 3, 1).reshape(-1, p * p, c),
        }
        for why, alt in alternatives.items():
            if torch.equal(got, alt) and not torch.equal(got, expected):
                return why
        return None

    return _result(_first_problem(fn, cases, reference, what, diagnose),
                   f"{what} is right: 'b c (h p1) (w p2) -> (b h w) (p1 p2) c'.")


# Exercise 2 (heads from a feature map), typical mistakes: channels split as (d heads), the
# tokens in (w h) order, d before the tokens ((B, heads, d, N)), the spatial axes not flattened,
# the tokens before the heads ((B, N, heads, d)), the channels not split into heads ((B, N, C)).
# No two axes of a case have the same size (B, heads, d, H, W all differ).
def check_map_heads(fn: Callable[[torch.Tensor, int], torch.Tensor]) -> Feedback:
    """Exercise 2: ``(B, heads·d, H, W) -> (B, heads, H·W, d)``, head 0 owning the first d channels."""
    what = "map_heads"
    g = torch.Generator().manual_seed(1)
    cases = [(torch.randn(2, 12, 5, 7, generator=g), 3), (torch.randn(4, 10, 3, 7, generator=g), 5)]

    def reference(x, heads):
        b, hd, h, w = x.shape
        return x.reshape(b, heads, hd // heads, h * w).transpose(2, 3)

    def diagnose(got, expected, x, heads):
        b, hd, h, w = x.shape
        d = hd // heads
        if got.shape == (b, heads, d, h * w):
            return "the shape is (B, heads, d, H·W): the tokens come before the channels of a head, (B, heads, H·W, d)."
        if got.shape == (b, heads, h, w, d):
            return "the spatial axes are not flattened into tokens: (h w) becomes one axis of length H·W."
        if got.shape == (b, h * w, heads, d):
            return "the shape is (B, H·W, heads, d): the head axis comes before the tokens, (B, heads, H·W, d), " \
                   "so that each head is one sequence."
        if got.shape == (b, h * w, hd):
            return "the shape is (B, H·W, C): the channels are not split into heads; '(heads d)' on the left and " \
                   "'heads ... d' on the right."
        if got.shape != expected.shape:
            return None
        if torch.equal(got, x.reshape(b, d, heads, h * w).permute(0, 2, 3, 1)):
            return "you split the channels as (d heads) instead of (heads d): head 0 should own channels 0..d-1."
        if torch.equal(got, x.reshape(b, heads, d, h, w).permute(0, 1, 4, 3, 2).reshape(b, heads, h * w, d)):
            return "the tokens are in (w h) order; the convention is row-major, (h w)."
        return None

    return _result(_first_problem(fn, cases, reference, what, diagnose),
                   f"{what} is right: 'b (heads d) h w -> b heads (h w) d'.")


# The former exercise 3 (its answer was the chapter's patch pattern read backwards); kept for
# older copies. Typical mistakes: patches read as (c p1 p2), the patch grid read with the number
# of columns as rows, the patch index and the offset swapped ((p1 h) instead of (h p1)).
def check_unpatchify(fn: Callable[[torch.Tensor, int, int], torch.Tensor]) -> Feedback:
    """Exercise 3: ``(B, (H/p)·(W/p), p·p·C) -> (B, C, H, W)``, patches flattened as (p1 p2 c), given H/p rows."""
    what = "unpatchify"
    g = torch.Generator().manual_seed(1)
    cases = [(torch.randn(2, 6, 12, generator=g), 2, 2), (torch.randn(1, 6, 18, generator=g), 3, 3)]

    def reference(t, p, rows):
        b, n, ppc = t.shape
        cols, c = n // rows, ppc // (p * p)
        return t.reshape(b, rows, cols, p, p, c).permute(0, 5, 1, 3, 2, 4).reshape(b, c, rows * p, cols * p)

    def diagnose(got, expected, t, p, rows):
        b, n, ppc = t.shape
        cols, c = n // rows, ppc // (p * p)
        if got.shape == (b, c, cols * p, rows * p) and got.shape != expected.shape:
            return f"the image is {cols * p} x {rows * p}: `rows` is the number of patch rows, H/p, so H = rows·p."
        if got.shape != expected.shape:
            return None
        alternatives = {
            "each patch was read as (c p1 p2); the patches here are flattened channels last, (p1 p2 c).":
                t.reshape(b, rows, cols, c, p, p).permute(0, 3, 1, 4, 2, 5).reshape(b, c, rows * p, cols * p),
            "the patch index and the offset inside a patch are swapped: H is (h p1), patch row outside, not (p1 h).":
                t.reshape(b, rows, cols, p, p, c).permute(0, 5, 3, 1, 4, 2).reshape(b, c, rows * p, cols * p),
        }
        for why, alt in alternatives.items():
            if torch.equal(got, alt) and not torch.equal(got, expected):
                return why
        return None

    return _result(_first_problem(fn, cases, reference, what, diagnose),
                   f"{what} is right: 'b (h w) (p1 p2 c) -> b c (h p1) (w p2)'.")


# Exercise 4 (scores with one key set shared by all heads), typical mistakes: the scale missing,
# divided by d instead of sqrt(d), the softmax applied, the scores transposed (N_k, N_q), the
# scale taken from the total width heads·d, the head axis summed out ((B, N_q, N_k)).
# B, heads, N_q, N_k and d differ in each case.
def check_shared_key_scores(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> Feedback:
    """Exercise 4: ``q (B, heads, N_q, d)``, ``k (B, N_k, d)`` shared by the heads -> ``(B, heads, N_q, N_k)``."""
    what = "shared_key_scores"
    g = torch.Generator().manual_seed(2)
    cases = [
        (torch.randn(2, 3, 5, 4, generator=g), torch.randn(2, 7, 4, generator=g)),
        (torch.randn(1, 2, 3, 9, generator=g), torch.randn(1, 4, 9, generator=g)),
    ]

    def reference(q, k):
        return q @ k.unsqueeze(1).transpose(-1, -2) / math.sqrt(q.shape[-1])

    def diagnose(got, expected, q, k):
        raw = q @ k.unsqueeze(1).transpose(-1, -2)
        heads, d = q.shape[1], q.shape[-1]
        if got.shape == expected.transpose(-1, -2).shape and got.shape != expected.shape:
            return "the scores have shape (B, heads, N_k, N_q): queries index the rows, 'b heads i d, b j d -> b heads i j'."
        if tuple(got.shape) == (q.shape[0], q.shape[2], k.shape[1]):
            return "the head axis is missing (the scores were summed or averaged over the heads): every head keeps " \
                   "its own scores, 'b heads i d, b j d -> b heads i j'."
        if got.shape != expected.shape:
            return None
        alternatives = {
            "the scale is missing: divide by sqrt(d), the key/query width.": raw,
            "you divided by d; the scale is 1/sqrt(d).": raw / d,
            "you applied the softmax; the exercise asks for the scores (logits) before it.": expected.softmax(-1),
            "the scale uses heads·d; d is the width of one head's queries and keys.": raw / math.sqrt(heads * d),
        }
        # atol 1e-5: einsum and matmul sum in different orders (differences up to about 5e-7 seen
        # on an AVX-512 machine), which the default atol of 1e-8 reads as a different answer
        for why, alt in alternatives.items():
            if torch.allclose(got, alt, atol=1e-5) and not torch.allclose(got, expected, atol=1e-5):
                return why
        return None

    return _result(_first_problem(fn, cases, reference, what, diagnose),
                   f"{what} is right: einsum(q, k, 'b heads i d, b j d -> b heads i j') / sqrt(d).")


# Exercise 3 (patches flattened channels first, (c p1 p2), back to an image), typical mistakes:
# the patches read as (p1 p2 c), the chapter's ViT layout; the offsets inside a patch read as
# (p2 p1), which transposes every patch; the patch grid read column by column ((w h)); the patch
# index and the offset swapped ((p1 h) instead of (h p1)); `rows` taken as the number of patch
# columns. B, C, p, the patch rows and the patch columns all differ in each case.
def check_conv_unpatchify(fn: Callable[[torch.Tensor, int, int], torch.Tensor]) -> Feedback:
    """Exercise 3: ``(B, (H/p)·(W/p), C·p·p) -> (B, C, H, W)``, each patch flattened as (c p1 p2), given H/p rows."""
    what = "unpatchify_conv"
    g = torch.Generator().manual_seed(3)
    # (B, patch rows, patch columns, p, C)
    cases = []
    for b, rows, cols, p, c in [(3, 2, 5, 4, 6), (2, 3, 4, 5, 7)]:
        cases.append((torch.randn(b, rows * cols, c * p * p, generator=g), p, rows))

    def grid(t, p, rows):
        b, n, cpp = t.shape
        return b, rows, n // rows, cpp // (p * p)

    def reference(t, p, rows):
        b, rows, cols, c = grid(t, p, rows)
        return t.reshape(b, rows, cols, c, p, p).permute(0, 3, 1, 4, 2, 5).reshape(b, c, rows * p, cols * p)

    def diagnose(got, expected, t, p, rows):
        b, rows, cols, c = grid(t, p, rows)
        if got.shape == (b, c, cols * p, rows * p) and got.shape != expected.shape:
            return f"the image is {cols * p} x {rows * p}: `rows` is the number of patch rows, H/p, so H = rows·p."
        if got.shape != expected.shape:
            return None
        v = t.reshape(b, rows, cols, c, p, p)                                    # b h w c p1 p2
        alternatives = {
            "each patch was read as (p1 p2 c), the ViT layout of the chapter; here the patches are flattened "
            "channels first, (c p1 p2), as a strided convolution's weight (D, C, p, p) reads them.":
                t.reshape(b, rows, cols, p, p, c).permute(0, 5, 1, 3, 2, 4).reshape(b, c, rows * p, cols * p),
            "the offsets inside a patch are read as (p2 p1), so every patch comes out transposed; the row offset "
            "comes first, (c p1 p2).":
                v.permute(0, 3, 1, 5, 2, 4).reshape(b, c, rows * p, cols * p),
            "the patches are read column by column; they are in row-major order, '(h w)' with h the patch rows.":
                t.reshape(b, cols, rows, c, p, p).permute(0, 3, 2, 4, 1, 5).reshape(b, c, rows * p, cols * p),
            "the patch index and the offset inside a patch are swapped: H is (h p1), patch row outside, not (p1 h).":
                v.permute(0, 3, 4, 1, 5, 2).reshape(b, c, rows * p, cols * p),
        }
        for why, alt in alternatives.items():
            if torch.equal(got, alt) and not torch.equal(got, expected):
                return why
        return None

    return _result(_first_problem(fn, cases, reference, what, diagnose),
                   f"{what} is right: 'b (h w) (c p1 p2) -> b c (h p1) (w p2)'.")
