"""The one table test every exercise checker gets (imported by the tests/test_checkers_*.py files).

A table lists, per typical mistake, a wrong answer and a fragment of the message it must get.
"""

from __future__ import annotations


def _blank(*args):
    raise NotImplementedError


def check_table(check, right, mistakes):
    """The right answer passes; each mistake fails with its own fragment; messages differ; a blank
    answer (``...``, ``None``, or a function that raises ``NotImplementedError``) is "not
    attempted", without an exception."""
    assert check(right), repr(check(right))
    messages = {}
    for label, (wrong, fragment) in mistakes.items():
        fb = check(wrong)
        assert not fb and fb.attempted, f"{label}: {fb!r}"
        assert fragment in fb.message, f"{label}: expected {fragment!r} in {fb.message!r}"
        messages[label] = fb.message
    assert len(set(messages.values())) == len(messages), "two mistakes got the same message"
    for blank in ([..., None] if not callable(right) else [..., _blank]):
        fb = check(blank)
        assert not fb and not fb.attempted and "not attempted" in fb.message
        # the message names the placeholder the cell holds
        assert ("raise NotImplementedError" if blank is _blank else "`...`") in fb.message, fb.message
