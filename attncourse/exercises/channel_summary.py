"""Checkers for the exercises of "Part I side by side"."""

from __future__ import annotations

from typing import Any

from ..channel.eca import eca_kernel_size
from . import Feedback, check_number, failed, is_unanswered, not_attempted, passed

__all__ = ["check_spatial_shuffle", "check_permutation", "check_eca_resnet152_parameters", "check_eca_resnet50_parameters",
           "check_cross_channel"]

_WIDTHS = (256, 512, 1024, 2048)
_RESNET152 = (3, 8, 36, 3)
_RESNET50 = (3, 4, 6, 3)


def _judge_modules(answer: Any, expected: dict[str, bool], what: str, why: dict[str, str] | None = None) -> Feedback:
    """A dict answering yes or no per module: each wrong module named, with its reason (``why``)."""
    if is_unanswered(answer):
        return not_attempted(what)
    if not isinstance(answer, dict) or set(answer) != set(expected):
        return failed(f"{what}: expected a dict with keys {sorted(expected)}, got {answer!r}")
    why = why or {}
    wrong = [k for k in expected if bool(answer[k]) != expected[k]]
    if wrong:
        return failed(" ".join([f"{what}: not right for {', '.join(wrong)}.", *(why[k] for k in wrong if k in why)]))
    return passed(" ".join([f"{what}: right.", *why.values()]))


# Exercise 1 (which modules commute with one shuffle of the positions, the same for every channel
# and image), typical mistakes: SK taken as commuting because its weights come from a global mean
# (but its branches are convolutions, whose windows follow the positions and whose zero padding
# sits at the border), ECA taken as not commuting because it is a convolution (but it runs along
# the channels of the pooled descriptors, not over positions), SE taken as not commuting, SimAM
# taken as not commuting (its mean and variance are over all positions of a channel, which a
# shuffle keeps).
def check_spatial_shuffle(answer: Any) -> Feedback:
    """Exercise 1: for which modules does shuffling the positions just shuffle the output (same weights)?"""
    why = {
        "se": "SE: the squeeze is the mean over all positions, which a shuffle does not change, and the scale "
        "multiplies every position of a channel by the same weight, so the output is shuffled like the input.",
        "eca": "ECA: its 1-D convolution runs along the channel axis of the pooled descriptors, not over positions; "
        "the descriptors are means over all positions, which a shuffle keeps.",
        "sk": "SK: its branches are 3×3 convolutions, whose windows see neighbouring positions; after a shuffle a "
        "position has other neighbours (and the zero padding sits at other positions), so the branches change.",
        "simam": "SimAM: the mean and the variance of a channel are over all its positions, which a shuffle keeps, "
        "and each neuron's weight depends only on its own value and these two numbers.",
    }
    return _judge_modules(answer, {"se": True, "eca": True, "sk": False, "simam": True}, "Shuffling the positions", why)


# The former exercise 1 (the chapter prints ECA's kernel per width; the answer summed them over the
# blocks, as the ECA chapter does for ResNet-50); kept for older copies. ECA in ResNet-152 with
# the formula's kernels, typical mistakes: the released
# per-stage kernels (3, 5, 5, 7), one module per stage, a bias counted, ResNet-50's block counts,
# the formula applied to the inner 3×3 widths (64 ... 512), k = 3 everywhere.
def check_eca_resnet152_parameters(answer: Any) -> Feedback:
    """Exercise 1: ECA's parameters in ResNet-152 with the kernel sizes of the paper's formula."""
    ks = [eca_kernel_size(c) for c in _WIDTHS]
    right = sum(n * k for n, k in zip(_RESNET152, ks))
    return check_number(
        answer,
        right,
        what="ECA's parameters in ResNet-152",
        hints={
            sum(n * k for n, k in zip(_RESNET152, (3, 5, 5, 7))): "That uses the released ECA-ResNet-50's kernels "
            "(3, 5, 5, 7); the formula on the output widths 256 ... 2048 gives (5, 5, 5, 7).",
            sum(ks): "Every bottleneck has its own ECA: multiply by the blocks per stage (3, 8, 36, 3).",
            sum(n * (k + 1) for n, k in zip(_RESNET152, ks)): "ECA's 1-D convolution has no bias.",
            sum(n * k for n, k in zip(_RESNET50, ks)): "That is ResNet-50 (3, 4, 6, 3 blocks); ResNet-152 has 3, 8, 36, 3.",
            sum(n * eca_kernel_size(c // 4) for n, c in zip(_RESNET152, _WIDTHS)): "That applies ψ to the inner 3×3 "
            "widths (64 ... 512); ECA sits on the bottleneck's output, 256 ... 2048 channels.",
            3 * sum(_RESNET152): "That is k = 3 everywhere (the repository's default); the exercise asks for the formula's k.",
        },
    )


def check_eca_resnet50_parameters(answer: Any) -> Feedback:
    """The former exercise 1 (ResNet-50); kept for readers of older copies of the chapter."""
    right = sum(n * eca_kernel_size(c) for c, n in zip(_WIDTHS, _RESNET50))
    return check_number(answer, right, what="ECA's parameters in ResNet-50")


# Exercise 2 (which modules commute with a permutation of the channels, same weights), typical
# mistakes: ECA taken as equivariant because its kernel is shared (but its neighbourhoods follow
# the channel order, and the zero padding fixes the ends), SE taken as equivariant because it
# pools every channel alike (but W1 and W2 are tied to the order), SimAM taken as not
# equivariant although it treats every channel alike and alone.
def check_permutation(answer: Any) -> Feedback:
    """Exercise 2: for which modules does permuting the input channels just permute the output (same weights)?"""
    why = {
        "se": "SE: the weights of W1 and W2 are tied to the channel order. Permuting the input permutes the "
        "columns of W1's input, not W1 itself, so the weights change unless W1 and W2 are permuted too.",
        "eca": "ECA: the kernel is shared, but the neighbourhood of channel c is c − p ... c + p in the channel "
        "order. After a permutation, a channel has other neighbours (and the zero padding sits at other channels), "
        "so its weight changes.",
        "simam": "SimAM: each channel's weights depend only on that channel's own values, by the same formula for "
        "every channel, so permuting the channels permutes the output and nothing else.",
    }
    return _judge_modules(answer, {"se": False, "eca": False, "simam": True}, "Permuting the channels", why)


def check_cross_channel(answer: Any) -> Feedback:
    """The former exercise 2 (cross-channel context); kept for readers of older copies of the chapter."""
    return _judge_modules(answer, {"se": True, "eca": False, "simam": False}, "Cross-channel context")
