"""Checkers for the exercises of "Part I side by side"."""

from __future__ import annotations

from typing import Any

from ..channel.eca import eca_kernel_size
from . import Feedback, check_number, failed, is_unanswered, not_attempted, passed

__all__ = ["check_eca_resnet50_parameters", "check_cross_channel"]

_STAGES = [(256, 3), (512, 4), (1024, 6), (2048, 3)]


def check_eca_resnet50_parameters(answer: Any) -> Feedback:
    """Exercise 1: ECA's parameters in ResNet-50 with the formula's kernel sizes."""
    right = sum(n * eca_kernel_size(c) for c, n in _STAGES)
    released = 3 * 3 + 4 * 5 + 6 * 5 + 3 * 7
    return check_number(
        answer,
        right,
        what="ECA's parameters in ResNet-50",
        hints={
            released: "That is the released model's count with k = (3, 5, 5, 7) per stage; the formula gives (5, 5, 5, 7).",
            sum(eca_kernel_size(c) for c, _ in _STAGES): "Every bottleneck has its own ECA: multiply by the blocks per stage.",
            sum(n * (eca_kernel_size(c) + 1) for c, n in _STAGES): "ECA's 1-D convolution has no bias.",
        },
    )


def check_cross_channel(answer: Any) -> Feedback:
    """Exercise 2: which modules can let channel c depend on a far-away channel c'."""
    what = "Cross-channel context"
    if is_unanswered(answer):
        return not_attempted(what)
    expected = {"se": True, "eca": False, "simam": False}
    if not isinstance(answer, dict) or set(answer) != set(expected):
        return failed(f"{what}: expected a dict with keys {sorted(expected)}, got {answer!r}")
    why = {
        "se": "SE's first layer W1 mixes all C channels, so any channel's weight can depend on any other's mean.",
        "eca": "ECA's weight for channel c depends only on the k channels around c in the channel order (k = 3 to 7).",
        "simam": "SimAM compares each neuron with its own channel's mean and variance; nothing crosses channels.",
    }
    wrong = [k for k in expected if bool(answer[k]) != expected[k]]
    if wrong:
        return failed(f"{what}: not right for {', '.join(wrong)}. " + " ".join(why[k] for k in wrong))
    return passed(f"{what}: right. " + " ".join(why.values()))
