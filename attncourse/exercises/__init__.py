"""Exercise checkers: they run the reader's answer and say what, if anything, is wrong.

Every checker returns a :class:`Feedback`. In a notebook it displays as a ✓ or ✗ line with
the reason; ``bool(feedback)`` is whether the answer is right, and ``feedback.assert_ok()``
raises ``AssertionError`` with the reason (the book's solutions use it, so a wrong solution
fails the build). An exercise left as ``...`` or raising ``NotImplementedError`` is reported as
"not attempted yet", without an error, so the notebook still runs top to bottom; the message
says which placeholder to replace. When the reader's function raises, the feedback shows the
line of the reader's own code that failed (not a line deep inside torch or einops).

One module per chapter: ``attncourse.exercises.se`` holds the SE chapter's checkers.
"""

from __future__ import annotations

import linecache
import math
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

__all__ = [
    "Feedback", "passed", "failed", "not_attempted", "is_unanswered", "compare_tensors", "match_mistake", "judge_tensor",
    "run_answer", "check_number", "learner_line",
]

_PACKAGE = Path(__file__).resolve().parent.parent  # attncourse/: code that is not the reader's
_STDLIB = Path(traceback.__file__).resolve().parent  # the standard library: not the reader's either


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


def not_attempted(what: str, placeholder: str = "...") -> Feedback:
    """Feedback for an exercise not started yet; ``placeholder`` is what the cell still holds:
    ``"..."`` (a value to fill in) or ``"raise"`` (a function body that raises NotImplementedError)."""
    if placeholder == "raise":
        todo = "Replace `raise NotImplementedError` with your code"
    else:
        todo = "Replace the `...` with your answer"
    return Feedback(False, f"{what}: not attempted yet. {todo} and run the cell again.", attempted=False)


def is_unanswered(answer: Any) -> bool:
    """True for the placeholders an exercise starts with: ``...`` and ``None``."""
    return answer is ... or answer is None


def _is_library(filename: str) -> bool:
    """Frames that are not the reader's: this package, installed packages, the standard library."""
    if filename.startswith("<") and not filename.startswith("<ipython-input"):
        return True  # <frozen ...>, <string> from library code generators
    path = Path(filename).resolve()
    return bool({"site-packages", "dist-packages"} & set(path.parts)) or any(
        path.is_relative_to(root) for root in (_PACKAGE, _STDLIB))


def learner_line(err: BaseException) -> str:
    """Where the reader's own code raised ``err``: ``" (in fn, line 3: `x = y @ z`)"``, or ``""``.

    The deepest frame of the traceback that lies outside this package, installed packages and the
    standard library is the reader's (a notebook cell, or a file of their own); its line number is
    the line within that cell or file.
    """
    frames = [f for f in traceback.extract_tb(err.__traceback__) if not _is_library(f.filename)]
    if not frames:
        return ""
    frame = frames[-1]
    line = (frame.line or linecache.getline(frame.filename, frame.lineno)).strip()
    where = f"in {frame.name}, line {frame.lineno}" if frame.name != "<module>" else f"line {frame.lineno}"
    return f" ({where}: `{line}`)" if line else f" ({where})"


def run_answer(fn: Callable[..., Any], *args: Any, what: str) -> tuple[Any, Feedback | None]:
    """Call the reader's function; turn ``NotImplementedError``/``...`` and crashes into feedback.

    A crash is reported with its exception and the line of the reader's code that raised it."""
    if is_unanswered(fn):
        return None, not_attempted(what)
    try:
        out = fn(*args)
    except NotImplementedError:
        return None, not_attempted(what, "raise")
    except Exception as err:  # the reader's code failed: say how and where, don't crash the notebook
        return None, failed(f"{what}: your code raised {type(err).__name__}: {err}{learner_line(err)}")
    if out is ...:
        return None, not_attempted(what)
    return out, None


def compare_tensors(got: Any, expected: torch.Tensor, *, what: str, atol: float = 1e-5, rtol: float = 1e-4) -> Feedback | None:
    """``None`` if ``got`` equals ``expected``, else feedback on the first thing that differs:
    not a tensor, the shape, NaN or infinite values, the right numbers in the wrong places, or how
    far the values are from the expected ones against the tolerance (so a small but real slip, such
    as a forgotten ε, does not read as rounding)."""
    if not isinstance(got, torch.Tensor):
        return failed(f"{what}: expected a torch.Tensor, got {type(got).__name__}")
    if tuple(got.shape) != tuple(expected.shape):
        return failed(f"{what}: the shape is {tuple(got.shape)}, expected {tuple(expected.shape)}")
    g = got.detach().to(expected.dtype)
    bad = ~torch.isfinite(g) & torch.isfinite(expected)
    if bad.any():
        kind = "NaN" if torch.isnan(g[bad]).any() else "infinite values"
        return failed(
            f"{what}: the output holds {kind} at {int(bad.sum())} of {g.numel()} entries, where the expected "
            "output is finite (a division by zero, or a log or square root of a non-positive number?)"
        )
    if not torch.allclose(g, expected, atol=atol, rtol=rtol):
        diff = (g - expected).abs()
        off = diff > atol + rtol * expected.abs()
        if torch.allclose(torch.sort(g.flatten())[0], torch.sort(expected.flatten())[0], atol=atol, rtol=rtol):
            return failed(f"{what}: the right numbers in the wrong places (an axis order is swapped)")
        return failed(
            f"{what}: the shape is right but {int(off.sum())} of {g.numel()} values differ, by up to "
            f"{diff.max().item():.3g}; rounding allows {atol:.0e} + {rtol:.0e} × |expected| here, so this is a "
            "real difference, not rounding"
        )
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
