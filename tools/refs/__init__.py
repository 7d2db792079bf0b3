"""The benchmark's references: every registered module's computation as its official code writes it.

``make bench`` (``tools/benchmark.py``) times each module against its reference. A reference is
plain PyTorch that follows the official code (or, where there is none, the library named in its
docstring): its memory layouts, its calls, its order of operations, so that the table measures
what a user would switch from. Its docstring cites the file it follows. It has no einops, no
input checks, no ``Gate`` submodules; it is given the module's weights and is checked equal to it
(outputs and gradients) before it is timed, and ``tests/test_benchmark_refs.py`` checks every
reference against its module, so they cannot drift.

One file per part of the package: the reference of a module in ``attncourse/<part>/`` lives in
``tools/refs/<part>.py``, as a class and a builder registered with ``@_reference("<name>")``
that takes the package's module, refuses settings the reference does not implement
(``_require``) and copies the weights (``_copy``). ``reference_for(module)`` builds it.
"""

from __future__ import annotations

import copy
from typing import Callable, TypeVar

import torch
from torch import nn

import attncourse

M = TypeVar("M", bound=nn.Module)

REFERENCES: dict[str, Callable[[nn.Module], nn.Module]] = {}


def _reference(name: str):
    """Register ``build(module) -> reference`` as the reference of the mechanism ``name``."""

    def decorate(build):
        if name in REFERENCES:
            raise ValueError(f"two references for {name!r}")
        REFERENCES[name] = build
        return build

    return decorate


def _require(module: nn.Module, **settings) -> None:
    """The reference implements only these settings of the module (its defaults)."""
    for key, want in settings.items():
        got = getattr(module, key)
        if got != want:
            raise NotImplementedError(f"the reference for {type(module).__name__} needs {key}={want!r}, got {got!r}")


def _copy(dst: M, src: nn.Module) -> M:
    """Copy src's parameters and buffers into dst's (same order; reshaped, e.g. Linear -> 1x1 conv);
    returns dst, so a builder reads ``return _copy(XRef(...), m)``."""
    d, s = dict(dst.state_dict()), src.state_dict()
    if len(d) != len(s):
        raise ValueError(f"{type(dst).__name__} has {len(d)} tensors, {type(src).__name__} has {len(s)}")
    with torch.no_grad():
        for (kd, td), (ks, ts) in zip(d.items(), s.items()):
            if td.numel() != ts.numel():
                raise ValueError(f"cannot copy {ks} {tuple(ts.shape)} into {kd} {tuple(td.shape)}")
            td.copy_(ts.reshape(td.shape))
    return dst


# The parts register their references on import (after the helpers above, which they use).
from . import blocks, channel, hybrid, linear, local, selfattn  # noqa: E402
from .channel import ECARef, SERef, SimAMRef, SKRef  # noqa: E402
from .hybrid import (  # noqa: E402
    BAMRef,
    CBAMRef,
    CoordRef,
    EMARef,
    GAMRef,
    SCSERef,
    ShuffleRef,
    TripletGateRef,
    TripletRef,
)
from .linear import ExternalAttentionRef, FLattenRef, LinearAttentionRef  # noqa: E402
from .selfattn import CCNetRef, DANetCAMRef, DANetDualRef, DANetPAMRef, GCRef, MHSARef, NonLocalRef  # noqa: E402

PARTS = {"blocks": blocks, "channel": channel, "hybrid": hybrid, "linear": linear, "local": local, "selfattn": selfattn}


def _name_of(module: nn.Module) -> str:
    for name in attncourse.available():
        if type(module) is attncourse.get(name):
            return name
    raise ValueError(f"{type(module).__name__} is not a registered mechanism")


def part_of(name: str) -> str:
    """The package part that holds the mechanism ``name`` (``attncourse/<part>/``), and so the file
    ``tools/refs/<part>.py`` that holds its reference."""
    return attncourse.get(name).__module__.split(".")[1]


def reference_for(module: nn.Module) -> nn.Module:
    """A plain-PyTorch reference of ``module``'s computation, holding a copy of its weights,
    in the same training mode. Raises ``KeyError`` if the mechanism has no reference."""
    name = _name_of(module)
    if name not in REFERENCES:
        raise KeyError(f"no benchmark reference for {name!r}: add one to tools/refs/{part_of(name)}.py")
    ref = REFERENCES[name](module)
    return ref.to(next(iter(module.parameters()), torch.empty(0)).dtype).train(module.training)


def check_reference(module: nn.Module, ref: nn.Module, x: torch.Tensor, **tolerances) -> None:
    """Assert that ``ref`` computes what ``module`` computes: output and input gradient, on
    copies of both (so that batch-norm running statistics are left as they were)."""
    module, ref = copy.deepcopy(module), copy.deepcopy(ref)
    g = torch.randn_like(x)
    outs = []
    for m in (module, ref):
        xi = x.detach().clone().requires_grad_(True)
        y = m(xi)
        y.backward(g)
        outs.append((y.detach(), xi.grad))
    torch.testing.assert_close(outs[1][0], outs[0][0], **tolerances)
    torch.testing.assert_close(outs[1][1], outs[0][1], **tolerances)
