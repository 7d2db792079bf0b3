"""Checkers for the exercises of "Part III side by side".

Above each checker, a comment lists the mistakes a learner typically makes on that exercise;
each one gets its own message (``tests/test_checkers_selfattn_summary.py`` tries every one of them).
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from einops import rearrange

from ..cost import count_parameters
from . import Feedback, compare_tensors, failed, is_unanswered, match_mistake, not_attempted, passed, run_answer

__all__ = ["check_receptive_field", "check_added_parameters", "check_share"]

# The baseline: conv 3x3, conv 3x3, max-pool 2x2 (stride 2), conv 3x3; CBAM's 7x7 gate in block 2.
BASELINE, WITH_CBAM = 10, 16


# Exercise 1, the receptive fields (baseline, with CBAM in block 2) as a tuple.
# Typical mistakes:
#   - not a pair of numbers
#   - the pool forgotten (adds 1 pixel before doubling the stride): (9, 15)
#   - the stride forgotten after the pool (conv3 adds 2, not 4): (8, 14)
#   - both of these: (7, 13)
#   - CBAM's gate counted as +7 (its kernel size) instead of +6: (10, 17)
#   - CBAM's gate counted after the pool (at stride 2, +12): (10, 22)
#   - CBAM said to see the whole image, because its channel gate pools globally: (10, 12)
#   - the pair in the wrong order: (16, 10)
#   - the 12x12 image's side for both
def check_receptive_field(answer: Any) -> Feedback:
    """Exercise 1: the receptive field of the part's baseline, and with CBAM in block 2."""
    what = "Receptive fields (baseline, with CBAM)"
    if is_unanswered(answer):
        return not_attempted(what)
    if not (isinstance(answer, (tuple, list)) and len(answer) == 2):
        return failed(f"{what}: expected a tuple of two integers, got {answer!r}")
    if any(is_unanswered(a) for a in answer):
        return not_attempted(what)
    try:
        got = (int(answer[0]), int(answer[1]))
    except (TypeError, ValueError):
        return failed(f"{what}: expected two integers, got {answer!r}")
    if got == (BASELINE, WITH_CBAM):
        return passed(f"{what}: {got[0]} and {got[1]} pixels; the shapes span at least 11, so the baseline's "
                      "units never see both, CBAM's can (with a 3 × 3 gate, 12 pixels, too).")
    hints = {
        (9, 15): "the 2 × 2 max-pool widens the receptive field by one pixel (at stride 1) before it doubles the stride",
        (8, 14): "after the pool the stride is 2, so the last 3 × 3 convolution widens the field by 2 · 2 = 4 pixels",
        (7, 13): "the pool adds a pixel, and after it the last convolution adds 2 · 2 = 4 pixels, not 2",
        (BASELINE, 17): "a k × k convolution at stride 1 widens the field by k − 1 = 6 pixels, not by 7",
        (BASELINE, 22): "CBAM sits in the second block, before the pool: its gate works at stride 1 (+6, not +12)",
        (BASELINE, 12): "CBAM's channel gate pools the whole map, but it gives every position the same weight, as SE "
                        "(which does not help here); count the spatial gate's 7 × 7 convolution",
        (WITH_CBAM, BASELINE): "the pair is the other way round: (baseline, with CBAM)",
        (12, 12): "not every unit sees the whole 12 × 12 image: count what each layer adds",
    }
    if got in hints:
        return failed(f"{what}: {got} is not right: {hints[got]}.")
    if got[0] == BASELINE:
        return failed(f"{what}: the baseline's {BASELINE} is right; with CBAM, {got[1]} is not: add what its 7 × 7 "
                      "gate adds, at the stride where it sits.")
    return failed(f"{what}: {got} is not right. Start from 1 pixel at stride 1 and add (k − 1) · stride per layer.")


_VARIANTS = ["MHSA", "Non-local", "GC", "DANet", "CCNet"]


# Exercise 2, parameters each module would add with a middle block of 48 channels, as a dict.
# Typical mistakes:
#   - not a dict, or the variant names not the protocol's
#   - the protocol's width, 32 (the "added" column of the chapter's table)
#   - C = 64 (attncourse.create(name, 64), the first row of the chapter's parameter table)
#   - the whole network's count instead of what the module adds
#   - DANet without the channel module's β (the position module's count alone)
WIDTH = 48


def check_added_parameters(answer: Any) -> Feedback:
    """Exercise 2: the parameters each attention module adds in a middle block of 48 channels."""
    from .._registry import create
    from ..experiments import protocol
    from ..nets import TinyNet

    what = f"Parameters added by each module at C = {WIDTH}"
    if is_unanswered(answer):
        return not_attempted(what)
    if not isinstance(answer, dict):
        return failed(f"{what}: expected a dict from variant name to a number, got {type(answer).__name__}")
    missing = [v for v in _VARIANTS if v not in answer]
    if missing:
        return failed(f"{what}: expected the variants {_VARIANTS}, missing {missing} (use the protocol's names)")
    if any(is_unanswered(answer[v]) for v in _VARIANTS):
        return not_attempted(what)
    p = protocol("selfattn")
    spec = {v: p.variants[v] for v in _VARIANTS}
    right = {v: count_parameters(create(n, WIDTH, **kw)) for v, (n, kw) in spec.items()}
    widths = (p.widths[0], WIDTH, *p.widths[2:])
    for v, (n, kw) in spec.items():
        got_name = answer[v]
        try:
            got = int(got_name)
        except (TypeError, ValueError):
            return failed(f"{what}: {v}: expected a number, got {got_name!r}")
        if got == right[v]:
            continue
        if got == count_parameters(create(n, 32, **kw)):
            return failed(f"{what}: {v}: {got:,} is the module at the protocol's 32 channels (the table's "
                          f"\"added\" column); build it for {WIDTH}.")
        if got == count_parameters(create(n, 64, **kw)):
            return failed(f"{what}: {v}: {got:,} is the module at C = 64; the block has {WIDTH} channels.")
        if got == count_parameters(TinyNet(2, 2, widths=widths, attn=n, attn_kwargs=kw, **p.network_kwargs)):
            return failed(f"{what}: {v}: {got:,} is the whole network; the question is what the module adds.")
        if v == "DANet" and got == right[v] - 1:
            return failed(f"{what}: DANet: {got:,} leaves out the channel module, whose only parameter is β.")
        return failed(f"{what}: {v}: {got:,} is not right.")
    return passed(f"{what}: " + ", ".join(f"{v} {right[v]:,}" for v in _VARIANTS) + ".")


# Exercise 3, share(weights, query, region) -> (B,), the weight one query puts on a region,
# averaged over heads.
# Typical mistakes:
#   - the column instead of the row (what the others give to this position: weights[:, :, :, query])
#   - the heads summed instead of averaged
#   - the heads not reduced at all, (B, heads)
#   - the region flattened column by column ((w h) order, region.t())
#   - the mean over the region's weights instead of their sum
def check_share(fn: Callable[..., Any]) -> Feedback:
    """Exercise 3: the weight a query puts on a region of the map, averaged over heads."""
    what = "share(weights, query, region)"
    gen = torch.Generator().manual_seed(0)
    b, heads, h, w = 3, 4, 5, 6
    n = h * w
    weights = torch.randn(b, heads, n, n, generator=gen).softmax(-1)
    query = 7
    region = torch.zeros(h, w, dtype=torch.bool)
    region[1:4, 2:4] = True
    got, fb = run_answer(fn, weights, query, region, what=what)
    if fb is not None:
        return fb
    flat = rearrange(region, "h w -> (h w)")
    expected = weights[:, :, query, flat].sum(-1).mean(1)
    known = {
        "that is the column of the query (what the other positions give to it); a query's weights are its row, "
        "weights[:, :, query, :]": weights[:, :, flat, query].sum(-1).mean(1),
        "sum the region's weights and *average* the heads (each head's row sums to 1), do not sum them":
            weights[:, :, query, flat].sum(-1).sum(1),
        "average over the heads too: the result has one number per image, shape (B,)": weights[:, :, query, flat].sum(-1),
        "flatten the region in (h w) order, row by row, as the positions are (rearrange(region, 'h w -> (h w)'))":
            weights[:, :, query, rearrange(region, "h w -> (w h)")].sum(-1).mean(1),
        "the share is the *sum* of the weights on the region, not their mean": weights[:, :, query, flat].mean(-1).mean(1),
    }
    mistake = match_mistake(got, known, what=what, expected=expected)
    if mistake is not None:
        return mistake
    wrong = compare_tensors(got, expected, what=what)
    if wrong is not None:
        return wrong
    return passed(f"{what}: right on random weights ({b} images, {heads} heads, a {h} × {w} map).")
