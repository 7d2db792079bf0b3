"""The shared parts of every exercise checker (``attncourse/exercises/__init__.py``): what a
learner sees when their code raises, when they have not started, and when a tensor is wrong."""

from __future__ import annotations

import linecache

import torch

from attncourse.exercises import compare_tensors, learner_line, not_attempted, run_answer


def _notebook_function(source: str, name: str, filename: str = "/tmp/ipykernel_4242/123456.py"):
    """Define ``name`` as a notebook cell does: compiled under an ipykernel file name whose source
    only linecache knows (the file does not exist)."""
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    scope: dict = {"torch": torch}
    exec(compile(source, filename, "exec"), scope)
    return scope[name]


def test_a_crash_shows_the_learners_failing_line_not_torchs():
    fn = _notebook_function(
        "def attention(q, k):\n"
        "    scores = q @ k.transpose(-2, -1)\n"
        "    return scores @ k.transpose(-2, -1)  # the slip: k instead of v\n",
        "attention",
    )
    out, fb = run_answer(fn, torch.randn(2, 5, 3), torch.randn(2, 7, 3), what="Your attention")
    assert out is None and not fb and fb.attempted
    assert "RuntimeError" in fb.message
    assert "(in attention, line 3: `return scores @ k.transpose(-2, -1)  # the slip: k instead of v`)" in fb.message


def test_the_deepest_learner_frame_is_named_when_their_helpers_call_each_other():
    fn = _notebook_function(
        "import einops\n"
        "def helper(x):\n"
        "    return einops.rearrange(x, 'b (h d) n -> b h d n', h=3)\n"
        "def answer(x):\n"
        "    y = x * 2\n"
        "    return helper(y)\n",
        "answer",
    )
    _, fb = run_answer(fn, torch.randn(2, 8, 4), what="Your answer")
    assert "in helper, line 3: `return einops.rearrange(x, 'b (h d) n -> b h d n', h=3)`" in fb.message, fb.message


def test_learner_line_is_empty_when_only_library_code_failed():
    try:
        torch.ones(2) @ torch.ones(3)
    except RuntimeError as err:
        # this test file is not library code, so its own line is found ...
        assert "torch.ones(2) @ torch.ones(3)" in learner_line(err)
    err = RuntimeError("raised with no traceback")
    assert learner_line(err) == ""


def test_not_attempted_names_the_placeholder_the_cell_holds():
    def blank(x):
        raise NotImplementedError  # your code here

    _, fb = run_answer(blank, 1, what="Exercise 1")
    assert not fb.attempted and "Replace `raise NotImplementedError` with your code" in fb.message
    _, fb = run_answer(..., 1, what="Exercise 1")
    assert not fb.attempted and "Replace the `...` with your answer" in fb.message
    assert "raise NotImplementedError" in not_attempted("x", "raise").message


def test_compare_tensors_separates_nan_rounding_and_real_differences():
    expected = torch.rand(3, 4, dtype=torch.float64) + 1
    nan = expected.clone()
    nan[0, 1] = float("nan")
    assert "NaN at 1 of 12 entries" in compare_tensors(nan, expected, what="x").message
    inf = expected.clone()
    inf[2, 3] = float("inf")
    assert "infinite values at 1 of 12" in compare_tensors(inf, expected, what="x").message
    # a forgotten ε = 1e-6 in a denominator near 1: a tiny difference, but beyond a tight tolerance
    small = expected * (1 + 1e-6)
    msg = compare_tensors(small, expected, what="x", atol=1e-9, rtol=1e-7).message
    assert "12 of 12 values differ" in msg and "not rounding" in msg and "1e-09 + 1e-07" in msg
    assert compare_tensors(expected + 1e-12, expected, what="x", atol=1e-9, rtol=1e-7) is None
    assert "wrong places" in compare_tensors(expected.flip(0), expected, what="x").message
