"""A registry of attention mechanisms, so that ``create("se", 64)`` builds ``SqueezeExcite(64)``."""

from __future__ import annotations

from typing import Callable, TypeVar

from torch import nn

__all__ = ["register", "create", "available", "get"]

_REGISTRY: dict[str, type[nn.Module]] = {}

M = TypeVar("M", bound=type[nn.Module])


def register(name: str) -> Callable[[M], M]:
    """Class decorator: register an attention module under a short ``name``.

    The class must take the channel count as its first positional argument.
    """

    def decorate(cls: M) -> M:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"attncourse.register: the name {name!r} is already taken by {_REGISTRY[name].__name__}")
        _REGISTRY[name] = cls
        return cls

    return decorate


def available() -> list[str]:
    """Sorted short names of every registered mechanism."""
    return sorted(_REGISTRY)


def get(name: str) -> type[nn.Module]:
    """The class registered under ``name``."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(
            f"attncourse.create: unknown mechanism {name!r}; available: {', '.join(available())}"
        ) from None


def create(name: str, channels: int, **kwargs) -> nn.Module:
    """Build the mechanism registered as ``name`` for ``channels`` channels.

    Keyword arguments are the class's own hyperparameters (for example ``reduction=8``).

    >>> import attncourse
    >>> attncourse.create("se", 64).hidden
    4
    """
    return get(name)(channels, **kwargs)
