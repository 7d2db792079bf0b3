"""Checkers for the exercises of the DANet chapter.

Above each checker, a comment lists the mistakes a learner typically makes on that exercise;
each one gets its own message (``tests/test_checkers_danet.py`` tries every one of them).
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from ..cost import peak_memory
from . import Feedback, check_number, compare_tensors, failed, match_mistake, passed, run_answer

__all__ = ["check_equal_cost", "check_cam_grouped", "check_pam_chunked"]


def _crossing(c: int, d: int, *, convs: bool = True, energies: bool = True, values: bool = True,
              value_width: int | None = None) -> float:
    """N at which the position module's multiply-adds equal the channel module's, 2 C² N.

    PAM = N C (2d + c_v) [convolutions] + N² d [energies] + N² c_v [D Sᵀ], with c_v the value width."""
    cv = c if value_width is None else value_width
    linear = c * (2 * d + cv) if convs else 0          # per position
    quadratic = (d if energies else 0) + (cv if values else 0)   # per pair of positions
    return (2 * c * c - linear) / quadratic


# Exercise 1: the N at which PositionAttention(120, reduction=4) and ChannelAttention(120) do the
# same number of multiply-adds per image (48). PAM: N C (2C' + C) + N² C' + N² C; CAM: 2 C² N.
# Typical mistakes:
#   - the default width C/8 instead of C/reduction = C/4 (80)
#   - the energies B_i · C_j forgotten, N² C' (60)
#   - the product D Sᵀ forgotten, N² C (240)
#   - the three 1×1 convolutions forgotten, N C (2C' + C) (192)
#   - the value convolution reduced to C' like the query and key (300)
#   - the side of a square map instead of N (√48 is not an integer: any side 7 means 49)
def check_equal_cost(answer: Any) -> Feedback:
    """Exercise 1: N at which PositionAttention(120, reduction=4) costs what ChannelAttention(120) costs."""
    c, d = 120, 120 // 4
    right = _crossing(c, d)
    assert right == 48
    return check_number(
        answer,
        right,
        what="Positions N at which PAM and CAM cost the same (C = 120, reduction=4)",
        hints={
            _crossing(c, c // 8): "That is the default query/key width C/8 = 15; with reduction=4 the query and key "
            "have C/4 = 30 channels.",
            _crossing(c, d, energies=False): "The energies B_i · C_j are N² dot products of C' = 30 numbers: "
            "N² C' multiply-adds, which you left out.",
            _crossing(c, d, values=False): "The sum Σ_i s_ji D_i of eq. (2), the product D Sᵀ, costs N² C "
            "multiply-adds, which you left out.",
            _crossing(c, d, convs=False): "The three 1×1 convolutions cost N C (2C' + C) multiply-adds too; "
            "only the channel module has no convolution.",
            _crossing(c, d, value_width=d): "The value convolution D keeps all C = 120 channels (N C² for the "
            "convolution, N² C for D Sᵀ); only the query and key are reduced to C/4.",
            7: "The question asks for the number of positions N, not the side of a map.",
            49: "At N = 49 (7 × 7) the position module already costs more; solve PAM = CAM for N exactly.",
        },
    )


def _random(shape: tuple[int, ...], g: torch.Generator, scale: float = 1.0) -> torch.Tensor:
    return scale * torch.randn(shape, generator=g, dtype=torch.float64)


def _cam_grouped(x: torch.Tensor, beta: torch.Tensor, groups: int, how: str = "right") -> torch.Tensor:
    """E = β X A + A with X = softmax_i(A_i · A_j) over the channels i of j's group (consecutive channels)."""
    b, c, h, w = x.shape
    a = x.reshape(b, c, h * w)
    k = c // groups
    if how == "interleaved":                    # group g = channels g, g + G, g + 2G, ...
        perm = torch.arange(c).view(k, groups).t().reshape(-1)
    elif how == "size G":                       # C/G groups of G channels
        perm, groups, k = torch.arange(c), k, groups
    else:
        perm = torch.arange(c)
    if how == "ungrouped":
        groups, k = 1, c
    ag = a[:, perm].reshape(b, groups, k, h * w)
    energy = ag @ ag.transpose(-1, -2)          # (b, g, j, i)
    if how == "masked":                         # a softmax over all C channels, then the other groups zeroed
        full = torch.softmax(a @ a.transpose(1, 2), -1)
        mask = torch.block_diag(*[torch.ones(k, k, dtype=torch.bool)] * groups)
        out = (full * mask) @ a
        return (beta * out + a).view_as(x)
    X = torch.softmax(-energy if how == "official" else energy, -1)
    if how == "transposed":
        X = X.transpose(-1, -2)
    out = torch.empty_like(a)
    out[:, perm] = (X @ ag).reshape(b, c, h * w)
    if how == "no residual":
        return (beta * out).view_as(x)
    if how == "no beta":
        return (out + a).view_as(x)
    return (beta * out + a).view_as(x)


# Exercise 2: cam_grouped(x, beta, groups): eqs. (3)-(4) within each of `groups` groups of C/groups
# consecutive channels (channel j reads only the channels of its own group).
# Typical mistakes:
#   - the groups interleaved (channel c in group c mod G: einops "(k g)" instead of "(g k)")
#   - G and C/G exchanged: C/G groups of G channels
#   - no groups at all: the chapter's channel module over all C channels
#   - one softmax over all C channels, the other groups' weights then zeroed (rows no longer sum to 1)
#   - the official code's affinity softmax(-E) in each group
#   - X transposed, or the softmax over j (the same mistake here: the energies are symmetric)
#   - the residual forgotten / the scale β forgotten
#   - the weights X (B, G, C/G, C/G) returned instead of E
def check_cam_grouped(fn: Callable[..., Any]) -> Feedback:
    """Exercise 2: ``fn(x, beta, groups)`` returns the grouped channel attention's E, ``(B, C, H, W)``."""
    what = "Your cam_grouped"
    g = torch.Generator().manual_seed(17)
    # every axis a different size: B, C, groups, C/groups, H, W
    for shape, groups in [((3, 8, 5, 7), 2), ((2, 15, 4, 6), 3)]:
        x, beta = _random(shape, g, 0.3), _random((1,), g)
        got, fb = run_answer(fn, x, beta, groups, what=what)
        if fb is not None:
            return fb
        expected = _cam_grouped(x, beta, groups)
        B, C, H, W = shape
        if isinstance(got, torch.Tensor):
            got = got.detach().to(torch.float64)
            if got.shape == (B, groups, C // groups, C // groups):
                return failed(f"{what}: that has the shape of the weights X, (B, groups, C/groups, C/groups); "
                              f"return E = β X A + A, shape {tuple(shape)}.")
            known = {
                "your groups are interleaved (channel c in group c mod groups); a group is C/groups consecutive "
                "channels: rearrange 'b (g k) n -> b g k n' with g = groups": _cam_grouped(x, beta, groups, "interleaved"),
                "you made C/groups groups of `groups` channels; there are `groups` groups of C/groups channels "
                "each": _cam_grouped(x, beta, groups, "size G"),
                "that is the chapter's channel module over all C channels; here channel j reads only the "
                "channels of its own group": _cam_grouped(x, beta, groups, "ungrouped"),
                "you took one softmax over all C channels and then zeroed the other groups' weights, so a row "
                "no longer sums to 1; take the softmax within each group": _cam_grouped(x, beta, groups, "masked"),
                "that is the official code's affinity, softmax(−G) with G = A Aᵀ, which favours dissimilar "
                "channels; the exercise asks for the paper's eq. (3), softmax(G), in each group":
                    _cam_grouped(x, beta, groups, "official"),
                "the weights of channel j must sum to 1 over i and multiply A from the left: softmax over the "
                "last axis of G = A Aᵀ, then X A (not Xᵀ A, nor a softmax over the j axis, the same thing here "
                "because G is symmetric)": _cam_grouped(x, beta, groups, "transposed"),
                "the residual + A_j of eq. (4) is missing": _cam_grouped(x, beta, groups, "no residual"),
                "the scale β of eq. (4) is missing (it multiplies the aggregated channels, not A)":
                    _cam_grouped(x, beta, groups, "no beta"),
            }
            fb = match_mistake(got, known, what=what, expected=expected, end=".")
            if fb is not None:
                return fb
        bad = compare_tensors(got, expected, what=what)
        if bad is not None:
            return bad
    return passed(f"{what} computes eqs. (3)-(4) within each group of C/groups consecutive channels.")


def _pam(x: torch.Tensor, wq, bq, wk, bk, wv, bv, alpha, how: str = "right", chunk: int | None = None) -> torch.Tensor:
    a = x.flatten(2)
    q = wq @ a + bq[:, None]  # the paper's C (queries)
    k = wk @ a + bk[:, None]  # the paper's B (keys)
    v = wv @ a + bv[:, None]  # D
    if how == "swapped":
        q, k = k, q
    if how == "no value":
        v = a
    logits = q.transpose(1, 2) @ k  # [j, i] = C_j · B_i
    if how == "scaled":
        logits = logits / q.shape[1] ** 0.5
    if how == "key chunks":       # a softmax within each chunk of keys, the chunks' sums added
        S = torch.cat([torch.softmax(part, -1) for part in logits.split(chunk, dim=-1)], -1)
    elif how == "softmax over j":  # within each chunk of queries, over the chunk's queries
        S = torch.cat([torch.softmax(part, 1) for part in logits.split(chunk, dim=1)], 1)
    elif how == "sigmoid":
        S = torch.sigmoid(logits)
    else:
        S = torch.softmax(logits, dim=-1)
    out = (v @ (S if how == "D S" else S.transpose(1, 2))).view_as(x)
    return {"no residual": lambda: alpha * out, "no alpha": lambda: out + x}.get(how, lambda: alpha * out + x)()


# Exercise 3: pam_chunked(x, wq, bq, wk, bk, wv, bv, alpha, chunk): E of eqs. (1)-(2), computed for
# `chunk` output positions (queries) at a time, so that at most chunk × N weights exist at once.
# wq, wk are the paper's C and B (official query_conv, key_conv) as (d, C) matrices, wv is D, (C, C).
# Typical mistakes:
#   - the last, shorter chunk left out when chunk does not divide N
#   - the keys split into chunks, with a softmax within each chunk (each query's weights then sum
#     to the number of chunks, not 1)
#   - the whole N × N matrix S materialised anyway (peak memory of at least N² weights)
#   - query and key exchanged (the energies transposed before the softmax)
#   - D S instead of D Sᵀ (position j gets Σ_i s_ij D_i)
#   - the softmax over the chunk's output positions j instead of the attended positions i
#   - the logits scaled by 1/sqrt(d), as in the Transformer (DANet does not scale)
#   - a sigmoid instead of the softmax
#   - the value convolution D skipped (A aggregated instead of D)
#   - the residual "+ A" forgotten / the scale α forgotten
#   - the attention weights returned instead of E (a shape message)
def check_pam_chunked(fn: Callable[..., Any]) -> Feedback:
    """Exercise 3: ``fn(x, wq, bq, wk, bk, wv, bv, alpha, chunk)``, E = α D Sᵀ + A, ``chunk`` queries at a time."""
    what = "Your pam_chunked"
    g = torch.Generator().manual_seed(13)
    # every axis a different size (B, C, H, W, d, N, chunk), and chunk never divides N
    for shape, d, chunk in [((3, 8, 4, 5), 2, 6), ((2, 6, 5, 7), 3, 8)]:
        B, C, H, W = shape
        N = H * W
        x = _random(shape, g)
        weights = (_random((d, C), g, 0.5), _random((d,), g), _random((d, C), g, 0.5), _random((d,), g),
                   _random((C, C), g, 0.5), _random((C,), g), _random((1,), g))
        got, fb = run_answer(fn, x, *weights, chunk, what=what)
        if fb is not None:
            return fb
        expected = _pam(x, *weights)
        if isinstance(got, torch.Tensor):
            got = got.detach().to(torch.float64)
            if got.shape in ((B, N, N), (B, 1, N, N)):
                return failed(f"{what}: that is the attention map S, (B, N, N); return E = α D Sᵀ + A, "
                              f"shape {tuple(shape)}.")
            if got.shape == expected.shape:
                done = N - N % chunk
                flat, ref = got.flatten(2), expected.flatten(2)
                if torch.allclose(flat[..., :done], ref[..., :done]) and not torch.allclose(flat, ref):
                    return failed(f"{what}: the first {done} positions are right, the last {N % chunk} are not: "
                                  f"N = {N} is not a multiple of chunk = {chunk}, so the last chunk is shorter "
                                  "(range(0, N, chunk) and a slice [s:s + chunk] handle it).")
                known = {
                    "you split the keys into chunks with a softmax within each, so a query's weights sum to the "
                    "number of chunks; split the queries: each chunk of queries takes its softmax over all N "
                    "keys": _pam(x, *weights, "key chunks", chunk=chunk),
                    "query and key are exchanged: in eq. (1) the output position j brings the query C_j (wq) and "
                    "the attended positions i the keys B_i (wk)": _pam(x, *weights, "swapped"),
                    "that is D S; eq. (2) sums Σ_i s_ji D_i, which is D Sᵀ (row j of S holds the weights of "
                    "output position j)": _pam(x, *weights, "D S"),
                    "the softmax runs over the output positions j of the chunk; eq. (1) normalises over the "
                    "attended positions i (the last axis of the energies [j, i])":
                        _pam(x, *weights, "softmax over j", chunk=chunk),
                    "you scaled the logits by 1/√d as a Transformer does; DANet's eq. (1) uses the plain dot "
                    "product B_i · C_j": _pam(x, *weights, "scaled"),
                    "eq. (1) is a softmax over i, not an independent sigmoid per pair": _pam(x, *weights, "sigmoid"),
                    "the values are D = wv A + bv, a third 1×1 convolution; you aggregated A itself":
                        _pam(x, *weights, "no value"),
                    "the residual + A_j of eq. (2) is missing": _pam(x, *weights, "no residual"),
                    "the scale α of eq. (2) is missing (it multiplies the aggregated values, not A)":
                        _pam(x, *weights, "no alpha"),
                }
                fb = match_mistake(got, known, what=what, expected=expected, end=".")
                if fb is not None:
                    return fb
        bad = compare_tensors(got, expected, what=what)
        if bad is not None:
            return bad
    # the memory: at N = 720 positions and chunk = 48, the whole S is 15 times one chunk's weights
    shape, d, chunk = (1, 6, 24, 30), 2, 48
    N = shape[2] * shape[3]
    x = _random(shape, g)
    weights = (_random((d, 6), g, 0.5), _random((d,), g), _random((d, 6), g, 0.5), _random((d,), g),
               _random((6, 6), g, 0.5), _random((6,), g), _random((1,), g))
    ran: dict[str, Any] = {}
    with torch.no_grad():
        peak = peak_memory(lambda: ran.setdefault("out", run_answer(fn, x, *weights, chunk, what=what)))
    got, fb = ran["out"]
    if fb is not None:
        return fb
    bad = compare_tensors(got, _pam(x, *weights), what=what)
    if bad is not None:
        return bad
    full = N * N * x.element_size()
    if peak >= full:
        return failed(f"{what}: the values are right, but at N = {N} positions and chunk = {chunk} your function "
                      f"held {peak / 2**20:.1f} MiB at once, at least the whole N × N matrix S ({full / 2**20:.1f} "
                      f"MiB); compute the weights of one chunk of queries (chunk × N), use them, and let them go "
                      "before the next chunk.")
    return passed(f"{what} computes eqs. (1)-(2) chunk by chunk: at N = {N}, chunk = {chunk}, it held "
                  f"{peak / 2**20:.2f} MiB at most, less than the {full / 2**20:.1f} MiB of the whole S.")
