"""The one input check every module uses, so that bad input gets the same clear ``ValueError``.

Every message names the module, what it expected and what it got, e.g.
``SqueezeExcite expected input of shape (B, 64, H, W), got (2, 32, 7, 9)``.
"""

from __future__ import annotations

import numbers
from typing import Sequence

import torch

__all__ = ["check_channels", "check_positive_int", "check_choice", "check_input", "check_divisible", "check_norm_batch"]


def _name(module: object) -> str:
    return module if isinstance(module, str) else type(module).__name__


def check_positive_int(module: object, arg: str, value: object, *, minimum: int = 1) -> int:
    """Return ``value`` if it is an integer ``>= minimum`` (bools rejected), else raise ``ValueError``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{_name(module)} expected {arg} to be an integer >= {minimum}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{_name(module)} expected {arg} to be an integer >= {minimum}, got {value}")
    return int(value)


def check_channels(module: object, channels: object) -> int:
    """Validate a constructor's channel count: a positive integer."""
    return check_positive_int(module, "channels", channels)


def check_divisible(module: object, arg: str, value: int, by_arg: str, by: int) -> None:
    """Raise unless ``value`` (named ``arg``) is divisible by ``by`` (named ``by_arg``)."""
    if value % by:
        raise ValueError(f"{_name(module)} expected {arg}={value} to be divisible by {by_arg}={by}")


def check_heads(module: object, channels: int, heads: object, *, width: int, source: str) -> int:
    """The number of heads: ``heads``, a positive divisor of ``channels``; or, for ``heads=None``,
    ``channels // width`` (a paper's head width, named by ``source``, e.g. "Swin's "), which needs
    ``channels`` divisible by ``width``."""
    if heads is None:
        if channels % width:
            raise ValueError(
                f"{_name(module)} with heads=None uses {source}head width of {width} and expected channels "
                f"divisible by {width}, got channels={channels}: pass heads="
            )
        heads = channels // width
    heads = check_positive_int(module, "heads", heads)
    check_divisible(module, "channels", channels, "heads", heads)
    return heads


def check_choice(module: object, arg: str, value: object, choices: Sequence[object]) -> None:
    """Raise unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{_name(module)} expected {arg} to be one of {list(choices)}, got {value!r}")


def _shape(dims: Sequence[object]) -> str:
    return "(" + ", ".join(str(d) for d in dims) + ")"


def check_input(
    module: object,
    x: object,
    channels: int | None = None,
    *,
    layout: str = "B C H W",
    min_size: Sequence[int] | None = None,
) -> torch.Tensor:
    """Check a module's input and return it unchanged.

    Args:
        module: the module (or its name) to name in the message.
        x: the input.
        channels: the channel count the module was built for; ``None`` accepts any.
        layout: space-separated axis names; its length is the expected rank and the axis
            named ``C`` is checked against ``channels``.
        min_size: optional minimum sizes for the axes after ``C`` (e.g. ``(3, 3)`` for H, W).

    Raises:
        ValueError: wrong type, rank, channel count, a non-floating dtype, or a size too small.
    """
    name = _name(module)
    axes = layout.split()
    expected = _shape(str(channels) if (a == "C" and channels is not None) else a for a in axes)
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} expected a torch.Tensor of shape {expected}, got {type(x).__name__}")
    if x.dim() != len(axes):
        raise ValueError(
            f"{name} expected a {len(axes)}-D input of shape {expected}, "
            f"got a {x.dim()}-D tensor of shape {_shape(x.shape)}"
        )
    if channels is not None and "C" in axes:
        c = axes.index("C")
        if x.shape[c] != channels:
            raise ValueError(f"{name} expected input of shape {expected}, got {_shape(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"{name} expected a floating-point tensor, got dtype {x.dtype}")
    if min_size is not None:
        start = axes.index("C") + 1 if "C" in axes else len(axes) - len(min_size)
        sizes = tuple(x.shape[start : start + len(min_size)])
        if any(s < m for s, m in zip(sizes, min_size)):
            names = " x ".join(axes[start : start + len(min_size)])
            raise ValueError(
                f"{name} expected spatial size ({names}) of at least {_shape(min_size)}, got {_shape(sizes)}"
            )
    return x


def check_norm_batch(module: object, x: torch.Tensor, what: str) -> None:
    """A batch norm over ``(B, ·, H, W)`` in training mode needs more than one value per channel:
    refuse B × H × W = 1 with a message naming the module and ``what`` batch-normalises."""
    b, _, h, w = x.shape
    if b * h * w == 1:
        raise ValueError(
            f"{_name(module)} in training mode needs more than one value per channel for {what}: "
            f"batch size x H x W must be > 1, got input of shape {tuple(x.shape)} (use a larger batch, or eval mode)"
        )
