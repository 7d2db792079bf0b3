"""Checkers for the exercises of "MUSE: attention, convolution and a feed-forward network in parallel".

Above each checker, a comment lists the mistakes a learner typically makes on that exercise;
each one gets its own message (``tests/test_checkers_muse.py`` tries every one of them).
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from ..blocks.muse import MUSELayer
from ..cost import count_parameters
from . import Feedback, check_number, failed, judge_tensor, passed, run_answer

__all__ = ["check_concat_parameters", "check_causal_band", "check_conv_reach"]

#: Exercise 1's layer: MUSE without the gate (the kernel sizes' outputs concatenated), WMT's width.
CONCAT = {"dim": 256, "heads": 8, "mlp_ratio": 4, "kernels": (3, 7, 15)}


def concat_parameters(c: int, h: int, f: int, kernels: tuple[int, ...]) -> int:
    """The layer without the gate: in_proj 3C² + 3C, out_proj (n + 1)C·C + C, predictors C·h·Σk,
    FFN 2CF + F + C, LayerNorm 2C."""
    n = len(kernels)
    return 3 * c * c + 3 * c + (n + 1) * c * c + c + c * h * sum(kernels) + 2 * c * f + f + c + 2 * c


# Exercise 1: the parameters of MUSELayer(256, heads=8, mlp_ratio=4, kernels=(3, 7, 15), dynamic_gate=False).
# Typical mistakes:
#   - the gated layer's count (out_proj 2C -> C and the n alphas)
#   - the concatenated out_proj right, but the alphas counted too (there are none without the gate)
#   - a bias on the kernel predictors (they have none)
#   - one kernel per size for all heads (C·Σk instead of C·h·Σk)
#   - the LayerNorm forgotten (2C)
#   - out_proj reading only the n convolutions (nC inputs), the attention's block forgotten
def check_concat_parameters(answer: Any) -> Feedback:
    """Exercise 1: parameters of MUSE with the kernel sizes concatenated."""
    c, h, r, ks = CONCAT["dim"], CONCAT["heads"], CONCAT["mlp_ratio"], CONCAT["kernels"]
    f, n = c * r, len(ks)
    right = concat_parameters(c, h, f, ks)
    assert right == count_parameters(MUSELayer(c, heads=h, mlp_ratio=r, kernels=ks, dynamic_gate=False))
    gated = count_parameters(MUSELayer(c, heads=h, mlp_ratio=r, kernels=ks))
    hints = {
        gated: "That is the gated layer (out_proj 2C → C and one alpha per size). Without the gate each kernel "
        "size's output keeps its own C columns of out_proj: (n + 1)C inputs.",
        right + n: "There is no alpha without the gate: the kernel sizes are concatenated, not mixed.",
        right + h * sum(ks): "The kernel predictors W^D_k are linear maps without a bias (the official "
        "DynamicConv1dTBC builds them with bias=False).",
        right - c * h * sum(ks) + c * sum(ks): "Each of the h heads predicts its own kernel: a predictor maps C "
        "to h·k numbers, C·h·k weights per size.",
        right - 2 * c: "The LayerNorm has a weight and a bias of C entries each.",
        right - c * c: "out_proj reads the attention's output too: [attention, conv_3, conv_7, conv_15], "
        "(n + 1)C inputs.",
    }
    assert len(set(hints)) == len(hints) and right not in hints
    return check_number(answer, right, what=f"Parameters of MUSELayer({c}, heads={h}, mlp_ratio={r}, "
                        f"kernels={ks}, dynamic_gate=False)", hints=hints)


def _causal_band(w: torch.Tensor, how: str = "right") -> torch.Tensor:
    n, k = w.shape
    d = torch.zeros(n, n, dtype=w.dtype)
    for i in range(n):
        for j in range(k):
            if how == "right":
                m = i - (k - 1) + j  # padding k - 1 on the left: tap j reads position i - k + 1 + j
            elif how == "centred":
                m = i - k // 2 + j
            elif how == "future":
                m = i + j
            elif how == "reversed":
                m = i - j
            else:
                raise ValueError(how)
            if 0 <= m < n:
                d[i, m] = w[i, j]
    return d.t().contiguous() if how == "transposed" else d


# Exercise 2: causal_band(w) -> (N, N): the decoder's dynamic convolution (padding k - 1 on the left) as
# a matrix, D[n, m] = w[n, m - n + k - 1] for n - k + 1 <= m <= n, else 0; w is (N, k), one head.
# Typical mistakes:
#   - the encoder's centred padding k // 2 (reads the future)
#   - the window to the right of n, n .. n + k - 1 (the future)
#   - the taps reversed: tap j at n - j (tap 0 is the oldest position, n - k + 1)
#   - the matrix transposed (columns for rows)
def check_causal_band(fn: Callable[..., Any]) -> Feedback:
    """Exercise 2: the causal dynamic convolution as a banded matrix."""
    what = "causal_band(w)"
    g = torch.Generator().manual_seed(0)
    cases = [torch.rand(7, 3, generator=g, dtype=torch.float64), torch.rand(4, 6, generator=g, dtype=torch.float64)]
    got = []
    for w in cases:
        out, fb = run_answer(fn, w.clone(), what=what)
        if fb is not None:
            return fb
        n = w.shape[0]
        if not isinstance(out, torch.Tensor) or tuple(out.shape) != (n, n):
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            return failed(f"{what}: for w of shape (N, k) = {tuple(w.shape)} expected an (N, N) = {(n, n)} "
                          f"matrix, got {shape}.")
        got.append(out.double().flatten())
    got_all = torch.cat(got)

    def every(how: str) -> torch.Tensor:
        return torch.cat([_causal_band(w, how).flatten() if how != "transposed" else _causal_band(w).t().flatten()
                          for w in cases])

    known = {
        "that is the encoder's centred window (padding k // 2): it reads k // 2 positions of the future; the "
        "decoder pads k - 1 on the left, so that token n reads n - k + 1 .. n": every("centred"),
        "the window runs into the future (n .. n + k - 1); the causal window ends at n: n - k + 1 .. n": every("future"),
        "the taps are reversed: tap j reads position n - k + 1 + j (tap 0 the oldest, tap k - 1 the token "
        "itself), as the unfolded window lists them": every("reversed"),
        "the matrix is transposed: row n holds the weights token n gives to its window (D V mixes rows of V)": every(
            "transposed"),
    }
    wrong = judge_tensor(got_all, every("right"), known, what=what)
    if wrong is not None:
        return wrong
    return passed(f"{what}: right, for N = 7, k = 3 and for a kernel longer than the sequence (N = 4, k = 6): "
                  "taps before the first token read zeros.")


def _reach(h: int, w: int, i: int, j: int, k: int, how: str = "right") -> torch.Tensor:
    out = torch.zeros(h, w, dtype=torch.bool)
    r = k // 2
    if how == "square":
        out[max(0, i - r) : i + r + 1, max(0, j - r) : j + r + 1] = True
        return out
    if how == "row only":
        out[i, max(0, j - r) : j + r + 1] = True
        return out
    if how == "torus row":
        for d in range(-r, r + 1):
            out[i, (j + d) % w] = True
        return out
    if how == "column-major":
        n = j * h + i
        for m in range(max(0, n - r), min(h * w, n + r + 1)):
            out[m % h, m // h] = True
        return out
    radius = k if how == "radius k" else r
    n = i * w + j
    for m in range(n - radius, n + radius + 1):
        if how == "cyclic map":
            m %= h * w
        if 0 <= m < h * w:
            out[m // w, m % w] = True
    return out


#: Exercise 3's cases: (H, W, i, j, k): the end of a row; near the map's start; a kernel wider than a row.
REACH_CASES = [(5, 6, 2, 5, 5), (4, 5, 0, 1, 7), (4, 3, 1, 1, 7)]


# Exercise 3: conv_reach(h, w, i, j, k) -> bool (H, W): the pixels that MUSE2d's kernel-k convolution
# at pixel (i, j) reads (row-major tokens, k // 2 on each side, zeros outside the sequence).
# Typical mistakes:
#   - a k x k square window (a 2-D convolution)
#   - the window clipped to the pixel's row (the sequence does not know where a row ends)
#   - the window wrapping round inside the row (a torus)
#   - the window wrapping from the map's last pixel to its first (cyclic; the code pads with zeros)
#   - k positions on each side instead of k // 2
#   - column-major tokens, (w h)
def check_conv_reach(fn: Callable[..., Any]) -> Feedback:
    """Exercise 3: which pixels MUSE's 1-D convolution reads on a map."""
    what = "conv_reach(h, w, i, j, k)"
    got = []
    for h, w, i, j, k in REACH_CASES:
        out, fb = run_answer(fn, h, w, i, j, k, what=what)
        if fb is not None:
            return fb
        if not isinstance(out, torch.Tensor) or tuple(out.shape) != (h, w):
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            return failed(f"{what}: for h, w = {h}, {w} expected an (H, W) = {(h, w)} mask, got {shape}.")
        got.append(out.bool().double().flatten())
    got_all = torch.cat(got)

    def every(how: str) -> torch.Tensor:
        return torch.cat([_reach(*case, how=how).double().flatten() for case in REACH_CASES])

    known = {
        "that is a k × k square: MUSE's convolution is 1-D, over the row-major sequence of tokens": every("square"),
        "the window stops at the row's end, but the sequence does not know where a row ends: the token after "
        "(i, W - 1) is (i + 1, 0)": every("row only"),
        "the window wraps round inside the row; in the sequence, the token after (i, W - 1) is the next row's "
        "first, (i + 1, 0)": every("torus row"),
        "the window wraps from the map's last pixel to its first; the convolution pads the sequence with zeros, "
        "so before token 0 and after token HW - 1 there is nothing": every("cyclic map"),
        "a kernel of k taps centred on the token reaches k // 2 positions on each side, not k": every("radius k"),
        "those are column-major neighbours; the tokens are row-major, n = i·W + j, (h w)": every("column-major"),
    }
    wrong = judge_tensor(got_all, every("right"), known, what=what, atol=0, rtol=0)
    if wrong is not None:
        return wrong
    return passed(f"{what}: right in all {len(REACH_CASES)} cases, including a kernel wider than a row, which "
                  "reaches the pixels above and below.")
