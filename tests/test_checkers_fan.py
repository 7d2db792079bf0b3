"""The checkers of "FAN": each typical mistake its own message, the right answer passes, a blank
answer is "not attempted" (the mistakes are listed above each checker)."""

from __future__ import annotations

import torch
from einops import rearrange

from attncourse.blocks.fan import ChannelProcessing
from attncourse.exercises import fan as ex

from checker_tables import check_table


def _right(q, k, tau):
    h = tau.numel()
    qs = rearrange(q, "b (h d) n -> b h d n", h=h).softmax(-1)
    kbar = rearrange(k, "b (h d) n -> b h d n", h=h).softmax(-1).mean(-2)
    return rearrange(torch.sigmoid(torch.einsum("bhdn,bhn->bhd", qs, kbar)) * tau[:, None], "b h d -> b (h d)")


def test_gates_cn_right_answer_is_the_modules():
    """The exercise's gates are ChannelProcessing's, transposed to channels-first."""
    cp = ChannelProcessing(8, heads=2).double()
    with torch.no_grad():
        cp.gate.activation.temperature.copy_(torch.tensor([1.5, 0.5]).reshape(2, 1, 1))
    t = torch.randn(3, 5, 8, dtype=torch.float64)
    q = rearrange(cp.q(t), "b n c -> b c n")
    want = rearrange(cp.attention(t), "b h d 1 -> b (h d)")
    torch.testing.assert_close(_right(q, rearrange(t, "b n c -> b c n"), torch.tensor([1.5, 0.5], dtype=torch.float64)), want)


def test_gates_cn():
    def mk(how):
        return lambda q, k, tau: ex._gates_cn(q, k, tau, how)

    check_table(ex.check_gates_cn, _right, {
        "softmax over channels": (mk("softmax over channels"), "over the channels"),
        "k without softmax": (mk("k without softmax"), "k needs its softmax"),
        "sum": (mk("sum over channels"), "not their sum"),
        "all channels": (mk("mean over all channels"), "not over all C"),
        "tau inside": (mk("tau inside"), "does not scale the logits"),
        "no sigmoid": (mk("no sigmoid"), "sigmoid is missing"),
        "(d h)": (mk("(d h)"), "ordered (d h)"),
        "per head": (lambda q, k, tau: rearrange(_right(q, k, tau), "b (h d) -> b h d", h=2), "per head"),
        "crash": (lambda q, k, tau: q @ k, "your code raised"),
        "other": (lambda q, k, tau: _right(q, k, tau) * 1.01, "not rounding"),
    })


def test_value_reach_is_what_autograd_finds():
    cp = ChannelProcessing(4, heads=1).double().eval()
    t = torch.randn(1, 20, 4, dtype=torch.float64, requires_grad=True)
    v = cp.norm_v(cp.mlp_v(t, (5, 4)))
    (v[0, 1 * 4 + 3] * torch.randn(4, dtype=torch.float64)).sum().backward()  # (LN output sums to a constant)
    assert int((t.grad[0].abs().sum(-1) > 0).sum()) == 12


def test_value_reach():
    check_table(ex.check_value_reach, 12, {
        "no border": (25, "border"),
        "one conv": (6, "one 3 × 3 convolution"),
        "whole map": (20, "whole map"),
        "per token": (1, "mixes each token"),
        "swapped": (16, "swapped"),
        "other": (9, "not right"),
    })


def test_peak_input():
    right = torch.zeros(6, 4)
    right[2] = 20.0
    spread = torch.zeros(6, 4)
    for c in range(4):
        spread[c, c] = 20.0
    low = torch.zeros(6, 4)
    low[2] = 1.0
    negative = torch.zeros(6, 4)
    negative[2] = -20.0
    check_table(ex.check_peak_input, right, {
        "different tokens": (spread, "different tokens"),
        "low peak": (low, "not sharp enough"),
        "negative": (negative, "large negative"),
        "transposed": (right.t().contiguous(), "(C, N)"),
        "shape": (torch.zeros(5, 4), "expected shape"),
        "int": (torch.zeros(6, 4, dtype=torch.long), "floating-point"),
        "nan": (torch.full((6, 4), float("nan")), "NaN"),
    })
