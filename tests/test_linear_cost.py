"""Part IV's cost sweep (attncourse.linear.sweep): the forms compute what they claim, the FLOP
counts are the chapter's formulas, memory grows as derived, and the stored sweep is complete.
Timings are never asserted here (they depend on the machine): `make bench` prints them."""

from __future__ import annotations

import pytest
import torch

from attncourse.linear import sweep


def test_sdpa_and_naive_compute_the_same_softmax_attention():
    q, k, v = torch.randn(3, 1, 1, 200, 16, dtype=torch.float64).unbind(0)
    want = torch.softmax(q @ k.transpose(-2, -1) / 4, dim=-1) @ v
    torch.testing.assert_close(sweep.step("naive")(q, k, v), want)
    torch.testing.assert_close(sweep.step("sdpa")(q, k, v), want)


def test_linear_and_external_steps_are_their_equations():
    q, k, v = torch.randn(3, 1, 1, 50, 8, dtype=torch.float64).unbind(0)
    phi = lambda x: torch.nn.functional.elu(x) + 1  # noqa: E731
    sim = phi(q) @ phi(k).transpose(-2, -1)
    torch.testing.assert_close(sweep.step("linear", 8)(q, k, v), sim / (sim.sum(-1, keepdim=True) + 1e-6) @ v)
    g = torch.Generator().manual_seed(0)
    mk, mv = torch.randn(sweep.MEMORY, 8, generator=g) * 8**-0.5, torch.randn(sweep.MEMORY, 8, generator=g)
    a = torch.softmax(q.float() @ mk.T, dim=-2)  # over the N positions
    a = a / (a.sum(-1, keepdim=True) + 1e-9)  # then over the S units
    torch.testing.assert_close(sweep.step("external", 8)(q.float(), k.float(), v.float()), a @ mv)


def test_focused_step_is_flattens_attention_without_its_convolution():
    from attncourse.linear.flatten import focusing_function

    q, k, v = torch.randn(3, 1, 1, 40, 8, dtype=torch.float64).unbind(0)
    phi = lambda x: focusing_function(torch.relu(x), 3)  # noqa: E731
    sim = phi(q) @ phi(k).transpose(-2, -1)
    torch.testing.assert_close(sweep.step("focused", 8)(q, k, v), sim / (sim.sum(-1, keepdim=True) + 1e-6) @ v)


def test_unknown_form_is_refused():
    with pytest.raises(ValueError, match="expected a form"):
        sweep.step("flash")


@pytest.mark.parametrize("n", [64, 300])
def test_flop_counts_are_the_chapter_formulas(n):
    d, s = 32, sweep.MEMORY
    assert sweep.flops("naive", n, d) == sweep.flops("sdpa", n, d) == 4 * n * n * d
    assert sweep.flops("linear", n, d) == sweep.flops("focused", n, d) == 4 * n * d * d + 2 * n * d
    assert sweep.flops("external", n, d) == 4 * n * s * d


def test_memory_grows_as_derived():
    ns = [512, 1024, 2048]
    out = sweep.sweep(ns, d=32, forms=("naive", "linear"), repeats=1)
    naive, linear = out["bytes"]["naive"], out["bytes"]["linear"]
    assert naive == [2 * 4 * n * n for n in ns]  # logits and weights, float32
    assert [b / a for a, b in zip(linear, linear[1:])] == pytest.approx([2, 2], rel=0.02)
    assert sweep.slope(ns, naive) == pytest.approx(2.0, abs=1e-9)


def test_slope_and_crossover():
    assert sweep.slope([1, 10, 100], [3, 300, 30000]) == pytest.approx(2.0)
    ns = [64, 128, 256, 512]
    assert sweep.crossover(ns, [1, 2, 4, 9], [3, 1.5, 5, 4]) == 512  # the win at 128 does not last
    assert sweep.crossover(ns, [1, 1, 1, 1], [2, 2, 2, 2]) is None
    assert sweep.crossover(ns, [2, 2, 2, 2], [1, 1, 1, 1]) == 64


def test_the_stored_sweep_is_complete():
    doc = sweep.load()
    assert doc["ns"] == list(sweep.NS) and doc["forms"] == list(sweep.FORMS) and doc["d"] == 64
    for mode in ("forward", "forward_backward"):
        for what in ("seconds", "bytes"):
            for f in sweep.FORMS:
                values = doc[mode][what][f]
                assert len(values) == len(sweep.NS) and all(x > 0 for x in values), (mode, what, f)
    # memory is deterministic: the stored bytes are those of the current code
    assert doc["forward"]["bytes"]["naive"][-1] == 2 * 4 * sweep.NS[-1] ** 2
    t = doc["targets"]
    assert t["n"] == 16384 and t["memory_ns"] == [4096, 8192, 16384]
    assert t["memory_bytes"]["naive"] == [2 * 4 * n * n for n in t["memory_ns"]]
