"""Checkers for the exercises of the HAT chapter (Part V): hybrid attention (HAB) and overlapping
cross-attention (OCAB).

Above each checker, a comment lists the mistakes a learner typically makes on that exercise;
each one gets its own message (``tests/test_checkers_hat.py`` tries every one of them).
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

from . import Feedback, check_number, judge_tensor, passed, run_answer

__all__ = ["check_ocab_parameters", "check_outside_keys", "check_full_hab", "official_ocab_parameters",
           "outside_keys", "full_hab"]

# Exercise 1: the learnable numbers of the official OCAB (XPixelGroup/HAT, hat/archs/hat_arch.py, class
# OCAB, LayerNorm and MLP included) at HAT's setting: C = 180, M = 16, λ = 0.5 (M_o = 24), 6 heads,
# mlp_ratio = 2 (the train configs'; the HAT class's own default is 4). qkv Linear with bias 3C² + 3C,
# proj C² + C, the table heads · (M + M_o − 1)², norm1 and norm2 2C each, Mlp fc1 C → 2C and fc2 2C → C
# with biases: 8C² + 11C + 6 · 39².
OCAB_C, OCAB_M, OCAB_HEADS = 180, 16, 6


def official_ocab_parameters(c: int = OCAB_C, m: int = OCAB_M, heads: int = OCAB_HEADS, overlap_ratio: float = 0.5,
                             mlp_ratio: float = 2.0) -> int:
    """The official OCAB's learnable numbers: attention, table, two LayerNorms, the MLP."""
    mo = m + int(m * overlap_ratio)
    hidden = int(c * mlp_ratio)
    return (3 * c * c + 3 * c) + (c * c + c) + heads * (m + mo - 1) ** 2 + 4 * c + (c * hidden + hidden) + (hidden * c + c)


# Typical mistakes:
#   - the plug-in's count, OverlappingCrossAttention2d(180, window_size=16, heads=6): no LayerNorm, no MLP
#   - the LayerNorms forgotten (4C), or one of them / their shifts (2C)
#   - mlp_ratio 4, the HAT class's default, instead of the configs' 2
#   - Swin's table (2M − 1)² per head
#   - a table of 47² per head: (2M_o − 1)², or M_o = 2M (an overlap of 1)
#   - one table for all heads
#   - 3C biases missing (qkv's, or the MLP's fc1 2C + fc2 C)
def check_ocab_parameters(answer: Any) -> Feedback:
    """Exercise 1: learnable numbers of the official OCAB at C = 180, M = 16, λ = 0.5, 6 heads, mlp_ratio 2."""
    c, m, h = OCAB_C, OCAB_M, OCAB_HEADS
    right = official_ocab_parameters()
    table = h * 39**2
    return check_number(
        answer,
        right,
        what="Learnable numbers of the official OCAB",
        hints={
            4 * c * c + 4 * c + table: "That is the plug-in's count (OverlappingCrossAttention2d(180, window_size=16, "
            "heads=6)); the official OCAB also has two LayerNorms and an MLP with biases.",
            right - 4 * c: "The two LayerNorms (norm1 before the attention, norm2 before the MLP) are missing: each has "
            "a scale and a shift per channel, 2C.",
            right - 2 * c: "2C short: the official OCAB has two LayerNorms (norm1, norm2), each with a scale and a "
            "shift per channel.",
            official_ocab_parameters(mlp_ratio=4.0): "That is mlp_ratio 4, the HAT class's default; the configs (and "
            "the exercise) use mlp_ratio 2: fc1 C → 2C, fc2 2C → C.",
            right - table + h * (2 * m - 1) ** 2: "That is Swin's table of (2M − 1)² = 31² per head; OCAB's keys come "
            "from M_o × M_o windows, so the offsets span M + M_o − 1 = 39 per axis.",
            right - table + h * 47**2: "A table of 47² per head: M_o = M + ⌊λM⌋ = 24 (λ = 0.5), and the offsets key − "
            "query span M + M_o − 1 = 39 per axis, not 2M_o − 1.",
            right - table + 39**2: "The table is per head: 6 tables of 39².",
            right - 3 * c: "3C biases are missing: the qkv Linear has 3C, the MLP's fc1 2C and fc2 C.",
        },
    )


def outside_keys(h: int, w: int, m: int, overlap_ratio: float, how: str = "right") -> torch.Tensor:
    """``(⌈H/M⌉, ⌈W/M⌉)``: per window, how many of the M_o² keys of its key window lie outside the
    H × W map (and its typical wrong versions)."""
    mo = m + int(m * overlap_ratio)
    p = (mo - m) // 2
    if how == "ceil":
        p = mo - m - p
    elif how == "all left":
        p = mo - m
    size = mo
    if how == "symmetric":
        size = m + 2 * p

    def inside(n: int) -> torch.Tensor:
        count = -(-n // m)
        rows = torch.arange(count)[:, None] * m - p + torch.arange(size)  # (windows, size)
        limit = count * m if how == "aligned" else n
        ok = rows < limit
        if how != "top left inside":
            ok = ok & (rows >= 0)
        return ok.sum(1)

    out = size * size - inside(h)[:, None] * inside(w)[None, :]
    return size * size - out if how == "inside" else out


# Exercise 2: outside_keys(H, W, M, overlap_ratio) -> (⌈H/M⌉, ⌈W/M⌉): per query window, the number of
# keys of its M_o × M_o key window (from (iM − p, jM − p), p = ⌊(M_o − M)/2⌋) outside the H × W map.
# Test cases: (7, 10, 4, 0.5), (12, 20, 6, 0.5) (odd overlap: 1 above, 2 below), (5, 11, 4, 1.0).
# Typical mistakes:
#   - the overhang taken as p on both sides (an M + 2p window: wrong when M_o − M is odd)
#   - ⌈(M_o − M)/2⌉ above and left instead of ⌊·⌋
#   - the whole overhang above and left (the window starting at iM − (M_o − M))
#   - the padding to a multiple of M counted as inside (only the unfold's zero padding outside)
#   - the keys above and left of the map counted as inside (only the bottom and right checked)
#   - the keys inside counted instead of those outside
#   - (⌈W/M⌉, ⌈H/M⌉), transposed: caught by the shape
def check_outside_keys(fn: Callable[..., Any]) -> Feedback:
    """Exercise 2: ``fn(h, w, m, overlap_ratio)`` counts each window's keys outside the map."""
    what = "Your outside_keys"
    for case in [(7, 10, 4, 0.5), (12, 20, 6, 0.5), (5, 11, 4, 1.0)]:
        expected = outside_keys(*case).double()
        got, fb = run_answer(fn, *case, what=what)
        if fb is not None:
            return fb
        if isinstance(got, torch.Tensor):
            got = got.double()
        known = {
            "the key window is M_o × M_o, with ⌊(M_o − M)/2⌋ rows above the query window and the rest below "
            "(the official unfold's start iM − p, and its size); an overhang of p on both sides gives an M + 2p "
            "window, one short when M_o − M is odd": outside_keys(*case, how="symmetric").double(),
            "the overhang above and left is ⌊(M_o − M)/2⌋ (the unfold's padding), not ⌈(M_o − M)/2⌉: the extra row "
            "of an odd overlap goes below and right": outside_keys(*case, how="ceil").double(),
            "the key window starts p = ⌊(M_o − M)/2⌋ above and left of the query window, not M_o − M: it is "
            "(roughly) centred on it": outside_keys(*case, how="all left").double(),
            "the rows and columns that pad the map to a multiple of M lie outside the map too: they are zero keys "
            "like the unfold's padding": outside_keys(*case, how="aligned").double(),
            "the keys above and left of the map (negative rows or columns) are outside too": outside_keys(
                *case, how="top left inside").double(),
            "those are the keys inside the map; count the ones outside (M_o² minus those)": outside_keys(
                *case, how="inside").double(),
        }
        fb = judge_tensor(got, expected, known, what=what, atol=1e-9, rtol=0)
        if fb is not None:
            return fb
    return passed(f"{what} places each key window at (iM − p, jM − p) with M_o rows and columns and counts the keys "
                  "outside the map, the padding to a multiple of M included.")


def _channels_last(layer: nn.Module, t: torch.Tensor) -> torch.Tensor:
    """A LayerNorm or an MLP over the channels of a (B, C, H, W) map."""
    return layer(t.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


def full_hab(x, norm1, attn, cab, alpha, norm2, mlp, how: str = "right"):
    """The paper's HAB from the package's parts (and its typical wrong versions):
    X_N = LN(X), X_M = W-MSA(X_N) + α CAB(X_N) + X, Y = MLP(LN(X_M)) + X_M; ``attn(t)`` returns
    ``t + W-MSA(t)``."""
    xn = x if how == "no norm1" else _channels_last(norm1, x)
    wmsa = attn(xn) - xn  # W-MSA(X_N)
    c_in = x if how == "cab on x" else xn
    if how == "twice":
        xm = attn(xn) + alpha * cab(c_in) + x
    elif how == "from xn":
        xm = attn(xn) + alpha * cab(c_in)
    elif how == "alpha on attention":
        xm = x + alpha * wmsa + cab(c_in)
    else:
        xm = x + wmsa + alpha * cab(c_in)
    if how == "no mlp":
        return xm
    if how == "no norm2":
        return xm + _channels_last(mlp, xm)
    if how == "post-norm":
        return _channels_last(norm2, xm + _channels_last(mlp, xm))
    return xm + _channels_last(mlp, _channels_last(norm2, xm))


def _hab_parts(c: int, seed: int):
    from ..local.hat import ChannelAttentionBlock
    from ..local.window import WindowAttention2d

    torch.manual_seed(seed)
    norm1, norm2 = nn.LayerNorm(c), nn.LayerNorm(c)
    attn = WindowAttention2d(c, window_size=4, heads=2, identity_init=False)
    cab = ChannelAttentionBlock(c, compress_ratio=2, squeeze_factor=4)
    mlp = nn.Sequential(nn.Linear(c, 2 * c), nn.GELU(), nn.Linear(2 * c, c))
    parts = nn.ModuleList([norm1, attn, cab, norm2, mlp]).double()
    with torch.no_grad():
        for p in parts.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return norm1, attn, cab, norm2, mlp


# Exercise 3: full_hab(x, norm1, attn, cab, alpha, norm2, mlp): the paper's whole HAB on a (B, C, H, W)
# map from the package's parts: norm1, norm2 nn.LayerNorm(C) (over the channels: channels-last), attn a
# WindowAttention2d (which returns t + W-MSA(t)), cab a ChannelAttentionBlock, mlp Linear-GELU-Linear on
# channels-last tokens. Test shapes (3, 12, 5, 7) and (2, 8, 6, 9), α = 0.25.
# Typical mistakes:
#   - X_N added twice: attn(X_N) + α CAB(X_N) + X (attn already returns X_N + W-MSA(X_N))
#   - the residual from X_N instead of X: attn(X_N) + α CAB(X_N)
#   - α on the attention instead of CAB
#   - no first LayerNorm (the plug-in inside the block: W-MSA and CAB on X)
#   - CAB on X instead of X_N
#   - the MLP half missing (returns X_M)
#   - no second LayerNorm before the MLP
#   - post-norm: LN(X_M + MLP(X_M))
#   - a LayerNorm or the MLP applied to (B, C, H, W) directly: a crash (W ≠ C), reported by run_answer
def check_full_hab(fn: Callable[..., Any]) -> Feedback:
    """Exercise 3: ``fn(x, norm1, attn, cab, alpha, norm2, mlp)`` is the paper's HAB."""
    what = "Your full_hab"
    alpha = 0.25
    for seed, shape in enumerate([(3, 12, 5, 7), (2, 8, 6, 9)]):
        parts = _hab_parts(shape[1], seed)
        x = torch.randn(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(10 + seed))
        norm1, attn, cab, norm2, mlp = parts
        with torch.no_grad():
            expected = full_hab(x, norm1, attn, cab, alpha, norm2, mlp)
            got, fb = run_answer(fn, x.clone(), norm1, attn, cab, alpha, norm2, mlp, what=what)
            if fb is not None:
                return fb

            def wrong(how):
                return full_hab(x, norm1, attn, cab, alpha, norm2, mlp, how)

            known = {
                "X_N is added twice: attn(t) already returns t + W-MSA(t), so W-MSA(X_N) = attn(X_N) − X_N, and X_M = "
                "W-MSA(X_N) + α CAB(X_N) + X": wrong("twice"),
                "the residual is X, the block's input, not the normalised X_N: X_M = W-MSA(X_N) + α CAB(X_N) + X, "
                "with W-MSA(X_N) = attn(X_N) − X_N": wrong("from xn"),
                "α scales CAB, the convolution branch, not the attention: X_M = W-MSA(X_N) + α CAB(X_N) + X":
                    wrong("alpha on attention"),
                "the first LayerNorm is missing: the paper's HAB computes W-MSA and CAB on X_N = LN(X) (over the "
                "channels), and adds the residual X": wrong("no norm1"),
                "CAB reads X_N = LN(X), as the attention does, not X": wrong("cab on x"),
                "that is X_M; the block goes on: Y = MLP(LN(X_M)) + X_M": wrong("no mlp"),
                "the MLP reads LN(X_M), the second LayerNorm's output: Y = MLP(LN(X_M)) + X_M": wrong("no norm2"),
                "that is a post-norm block, LN(X_M + MLP(X_M)); HAB normalises before the MLP: Y = MLP(LN(X_M)) + X_M":
                    wrong("post-norm"),
            }
        fb = judge_tensor(got, expected, known, what=what, atol=1e-9, rtol=1e-7)
        if fb is not None:
            return fb
    return passed(f"{what} normalises, adds W-MSA(X_N) + α CAB(X_N) to X, then the MLP on LN(X_M) with its "
                  "residual: the paper's HAB.")
