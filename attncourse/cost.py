"""What a module costs: parameters, FLOPs and time.

FLOPs are counted by ``torch.utils.flop_counter.FlopCounterMode``, which counts matrix
multiplications and convolutions (2 FLOPs per multiply-add) and nothing else: pooling,
element-wise products, activations and normalisation count zero. The chapters derive those
separately where they matter.
"""

from __future__ import annotations

import time
import weakref
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.flop_counter import FlopCounterMode

__all__ = ["count_parameters", "count_flops", "time_forward", "time_forward_backward", "peak_memory", "Cost", "measure", "cost_table"]


def count_parameters(module: nn.Module, *, trainable_only: bool = False) -> int:
    """Number of parameters (buffers such as batch-norm statistics are not counted)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def count_flops(module: nn.Module, x: torch.Tensor) -> int:
    """FLOPs of one forward pass on ``x``, as counted by ``FlopCounterMode`` (matmuls and convs)."""
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            module(x)
    finally:
        module.train(was_training)
    return int(counter.get_total_flops())


@torch.no_grad()
def time_forward(module: nn.Module, x: torch.Tensor, *, repeats: int = 3, warmup: int = 1) -> float:
    """Median seconds for one forward pass on ``x`` without autograd (for chapters' cost tables;
    timings depend on the machine, so they never go into tests)."""
    times = []
    for i in range(warmup + repeats):
        start = time.perf_counter()
        module(x)
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def time_forward_backward(module: nn.Module, x: torch.Tensor, *, repeats: int = 20, warmup: int = 3) -> float:
    """Median seconds for one forward+backward pass on ``x`` on the current device.

    For benchmarks and chapters' cost sections, not for tests: timings depend on the machine.
    """
    x = x.detach().clone().requires_grad_(True)
    times = []
    for i in range(warmup + repeats):
        start = time.perf_counter()
        module(x).sum().backward()
        if i >= warmup:
            times.append(time.perf_counter() - start)
    module.zero_grad(set_to_none=True)
    return sorted(times)[len(times) // 2]


@dataclass(frozen=True)
class Cost:
    """Parameters and counted FLOPs of one module on one input shape, and the time of one
    forward+backward pass when it was measured."""

    parameters: int
    flops: int
    input_shape: tuple[int, ...]
    seconds: float | None = None


def measure(module: nn.Module, x: torch.Tensor, *, repeats: int = 0, warmup: int = 3) -> Cost:
    """Parameters and FLOPs of ``module`` on ``x``; with ``repeats > 0`` also the median time of
    one forward+backward pass (:func:`time_forward_backward`), which depends on the machine."""
    parameters, flops = count_parameters(module), count_flops(module, x)
    seconds = time_forward_backward(module, x, repeats=repeats, warmup=warmup) if repeats > 0 else None
    return Cost(parameters, flops, tuple(x.shape), seconds)


def cost_table(costs: dict[str, Cost]) -> str:
    """The rows of ``costs`` as a plain-text table: parameters, counted MFLOPs, ms per forward+backward."""
    lines = [f"{'module':<22}{'parameters':>12}{'counted MFLOPs':>16}{'ms fwd+bwd':>12}"]
    for name, c in costs.items():
        ms = "" if c.seconds is None else f"{1e3 * c.seconds:.1f}"
        lines.append(f"{name:<22}{c.parameters:>12,}{c.flops / 1e6:>16.2f}{ms:>12}")
    return "\n".join(lines)


class _LiveTensors(TorchDispatchMode):
    """Counts the bytes of the storages that the operations run under it create, while they live."""

    def __init__(self) -> None:
        super().__init__()
        self.live: dict[int, list[int]] = {}  # storage address -> [live tensors on it, bytes]
        self.current = 0
        self.peak = 0

    def _release(self, key: int) -> None:
        entry = self.live[key]
        entry[0] -= 1
        if entry[0] == 0:
            del self.live[key]
            self.current -= entry[1]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {a.untyped_storage().data_ptr() for a in tree_flatten((args, kwargs))[0] if isinstance(a, torch.Tensor)}
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor) and t.device.type != "meta":
                storage = t.untyped_storage()
                key = storage.data_ptr()
                if key in self.live:  # a view, or an in-place result: the same memory
                    self.live[key][0] += 1
                elif key in inputs:  # a view of memory that existed before: nothing new
                    continue
                else:
                    self.live[key] = [1, storage.nbytes()]
                    self.current += storage.nbytes()
                    self.peak = max(self.peak, self.current)
                weakref.finalize(t, self._release, key)
        return out


def peak_memory(fn: Callable[[], object]) -> int:
    """Peak bytes of the tensors that ``fn()`` creates and holds at the same time.

    Every tensor an ATen operation returns while ``fn`` runs is counted from its creation until
    it is freed (a view counts once, with the memory it shares); tensors that existed before the
    call (inputs, weights) are not counted. This is the memory a computation *materialises*: the
    N × N matrix of a naive attention, the activations autograd saves for the backward pass. It
    does not see scratch space that one kernel allocates and frees inside itself (e.g. the
    blocks of ``scaled_dot_product_attention``'s CPU kernel), nor the allocator's own overhead;
    the peak resident size of a fresh process would include both. Deterministic, and independent
    of what else runs on the machine, unlike a timing.
    """
    with _LiveTensors() as counter:
        fn()
    return counter.peak
