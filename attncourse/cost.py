"""What a module costs: parameters, FLOPs and time.

FLOPs are counted by ``torch.utils.flop_counter.FlopCounterMode``, which counts matrix
multiplications and convolutions (2 FLOPs per multiply-add) and nothing else: pooling,
element-wise products, activations and normalisation count zero. The chapters derive those
separately where they matter.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

__all__ = ["count_parameters", "count_flops", "time_forward_backward", "Cost", "measure", "cost_table"]


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
