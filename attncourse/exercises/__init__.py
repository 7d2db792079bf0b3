"""Exercise checkers: they run the reader's answer and say what, if anything, is wrong.

Every checker returns a :class:`Feedback`. In a notebook it displays as a ✓ or ✗ line with
the reason; ``bool(feedback)`` is whether the answer is right, and ``feedback.assert_ok()``
raises ``AssertionError`` with the reason (the book's solutions use it, so a wrong solution
fails the build). An exercise left as ``...`` or raising ``NotImplementedError`` is reported as
"not attempted yet", without an error, so the notebook still runs top to bottom.

One module per chapter: ``attncourse.exercises.se`` holds the SE chapter's checkers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import torch

__all__ = [
    "Feedback", "passed", "failed", "not_attempted", "is_unanswered", "compare_tensors", "match_mistake", "judge_tensor",
    "run_answer", "check_number",
]


@dataclass(frozen=True)
class Feedback:
    """The result of one check."""

    ok: bool
    message: str
    attempted: bool = True

    def __bool__(self) -> bool:
        return self.ok

    def __repr__(self) -> str:
        mark = "✓" if self.ok else ("…" if not self.attempted else "✗")
        return f"{mark} {self.message}"

    def _repr_markdown_(self) -> str:
        mark = "✓" if self.ok else ("…" if not self.attempted else "✗")
        return f"**{mark}** {self.message}"

    def assert_ok(self) -> "Feedback":
        """Raise ``AssertionError`` with the message unless the answer was right; else return self."""
        if not self.ok:
            raise AssertionError(repr(self))
        return self


def passed(message: str) -> Feedback:
    return Feedback(True, message)


def failed(message: str) -> Feedback:
    return Feedback(False, message)


def not_attempted(what: str) -> Feedback:
    return Feedback(False, f"{what}: not attempted yet. Replace the `...` with your answer and run the cell again.", attempted=False)


def is_unanswered(answer: Any) -> bool:
    """True for the placeholders an exercise starts with: ``...`` and ``None``."""
    return answer is ... or answer is None


def run_answer(fn: Callable[..., Any], *args: Any, what: str) -> tuple[Any, Feedback | None]:
    """Call the reader's function; turn ``NotImplementedError``/``...`` and crashes into feedback."""
    if is_unanswered(fn):
        return None, not_attempted(what)
    try:
        out = fn(*args)
    except NotImplementedError:
        return None, not_attempted(what)
    except Exception as err:  # the reader's code failed: say how, don't crash the notebook
        return None, failed(f"{what}: your code raised {type(err).__name__}: {err}")
    if out is ...:
        return None, not_attempted(what)
    return out, None


def compare_tensors(got: Any, expected: torch.Tensor, *, what: str, atol: float = 1e-5, rtol: float = 1e-4) -> Feedback | None:
    """``None`` if ``got`` equals ``expected``, else feedback on the first thing that differs."""
    if not isinstance(got, torch.Tensor):
        return failed(f"{what}: expected a torch.Tensor, got {type(got).__name__}")
    if tuple(got.shape) != tuple(expected.shape):
        return failed(f"{what}: the shape is {tuple(got.shape)}, expected {tuple(expected.shape)}")
    if not torch.allclose(got.to(expected.dtype), expected, atol=atol, rtol=rtol):
        diff = (got.to(expected.dtype) - expected).abs()
        if torch.allclose(torch.sort(got.flatten())[0].to(expected.dtype), torch.sort(expected.flatten())[0], atol=atol, rtol=rtol):
            return failed(f"{what}: the right numbers in the wrong places (an axis order is swapped)")
        return failed(f"{what}: the shape is right but the values differ (largest difference {diff.max().item():.3g})")
    return None


def match_mistake(
    got: Any, known: dict[str, torch.Tensor | None], *, what: str, expected: torch.Tensor | None = None, end: str = ""
) -> Feedback | None:
    """Feedback naming the first typical mistake that ``got`` reproduces, else ``None``.

    ``known`` maps a message to the result that mistake produces (``None``: not detectable on
    this input). With ``expected``, a result that is also right is not called a mistake.
    """
    if not isinstance(got, torch.Tensor):
        return None
    for message, wrong in known.items():
        if wrong is None or wrong.shape != got.shape:
            continue
        g = got.detach().to(wrong.dtype)
        also_right = expected is not None and expected.shape == g.shape and torch.allclose(g, expected.to(wrong.dtype))
        if torch.allclose(g, wrong) and not also_right:
            return failed(f"{what}: {message}{end}")
    return None


def judge_tensor(
    got: Any, expected: torch.Tensor, known: dict[str, torch.Tensor | None], *, what: str, end: str = ".",
    atol: float = 1e-5, rtol: float = 1e-4,
) -> Feedback | None:
    """``None`` if the tensor answer ``got`` equals ``expected``; else feedback naming the first
    typical mistake in ``known`` that it reproduces (:func:`match_mistake`), or else what differs
    (:func:`compare_tensors`)."""
    mistake = match_mistake(got, known, what=what, expected=expected, end=end)
    if mistake is not None:
        return mistake
    return compare_tensors(got, expected, what=what, atol=atol, rtol=rtol)

def check_number(answer: Any, expected: float, *, what: str, hints: dict[float, str] | None = None, rel: float = 1e-9) -> Feedback:
    """Check a numeric answer; ``hints`` maps known wrong answers to an explanation."""
    if is_unanswered(answer):
        return not_attempted(what)
    try:
        value = float(answer)
    except (TypeError, ValueError):
        return failed(f"{what}: expected a number, got {answer!r}")
    if math.isclose(value, expected, rel_tol=rel, abs_tol=rel):
        return passed(f"{what}: {answer} is right.")
    for wrong, hint in (hints or {}).items():
        if math.isclose(value, wrong, rel_tol=rel, abs_tol=rel):
            return failed(f"{what}: {answer} is not right. {hint}")
    return failed(f"{what}: {answer} is not right.")
