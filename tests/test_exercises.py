"""The shared checker machinery (``attncourse.exercises``): blanks are "not attempted", crashes
and wrong shapes are explained, ``assert_ok`` raises with the reason.

The checkers of each part have their own tables of typical mistakes:
``tests/test_checkers_channel.py`` (Part I and the einops primer) and
``tests/test_checkers_hybrid.py`` (Part II).
"""

from __future__ import annotations

import pytest
import torch

from attncourse.exercises import check_number, compare_tensors, run_answer


def test_blank_answers_are_not_attempted_without_raising():
    for blank in (..., None):
        fb = check_number(blank, 3, what="x")
        assert not fb and not fb.attempted and "not attempted" in repr(fb)

    def not_done(*args):
        raise NotImplementedError

    out, fb = run_answer(not_done, 1, what="f")
    assert out is None and not fb.attempted


def test_assert_ok_raises_with_the_reason():
    with pytest.raises(AssertionError, match="a hint"):
        check_number(4, 3, what="x", hints={4: "a hint"}).assert_ok()
    assert check_number(3, 3, what="x").assert_ok()


def test_crashes_and_shapes_are_explained():
    _, fb = run_answer(lambda: 1 / 0, what="f")
    assert fb.attempted and "ZeroDivisionError" in fb.message
    x = torch.arange(6.0).reshape(2, 3)
    assert "shape is (3, 2)" in compare_tensors(x.T, x, what="t").message
    assert "wrong places" in compare_tensors(x.flip(1), x, what="t").message
    assert compare_tensors(x.clone(), x, what="t") is None


def test_match_mistake_names_the_first_reproduced_mistake():
    from attncourse.exercises import match_mistake

    x = torch.arange(6.0).reshape(2, 3)
    known = {"skipped": None, "wrong shape": x.T, "doubled": 2 * x, "also doubled": 2 * x}
    fb = match_mistake(2 * x, known, what="Your f", end=".")
    assert not fb and repr(fb) == "✗ Your f: doubled."
    assert match_mistake(x, known, what="Your f") is None
    assert match_mistake("not a tensor", known, what="Your f") is None
    # a result that is also right is not a mistake
    assert match_mistake(2 * x, known, what="Your f", expected=2 * x) is None
