"""Speed figures for every registered mechanism on this machine: `make bench`.

Timings depend on the machine and its load, so they live here and never in the tests.

Three tables:

- ``costs``: parameters, counted FLOPs and the median time of one forward+backward pass for
  each mechanism at a few ResNet-like shapes, next to a 3x3 convolution of the same width.
- ``refs``: each mechanism against a *reference*, the same computation written the way its
  official code writes it (its layouts and calls; timm or another library where there is no
  official code): plain PyTorch, no einops, no input checks, no ``Gate`` submodules. Each
  reference gets the module's weights and is checked equal to it (outputs and gradients) before
  it is timed; module and reference then run interleaved (ABBA order, blocks of passes, the
  minimum over blocks of each block's median), so that load drifting on a shared machine hits
  both alike.
- ``local``: Part V's targets for window attention (issue 20): ``WindowAttention2d`` at Swin-T's
  first stage (56 x 56, C = 96, M = 7, 3 heads, batch 8) against the official-code reference,
  forward+backward (target: ratio <= 1.05), and the log-log slope of its time over maps of
  28², 56², 112² at fixed M (target <= 1.2: linear in N).
- ``linear``: Part IV's targets at N = 16,384 tokens (``attncourse.linear.sweep.targets``): linear
  attention's step against ``scaled_dot_product_attention`` and the naive softmax, the
  ``LinearAttention2d`` module against Part III's MHSA, and how peak memory grows with N.

The references live in ``tools/refs/<part>.py``, one file per part of the package
(``attncourse/selfattn`` -> ``tools/refs/selfattn.py``); this file is the timing code only.
``refs.reference_for(module)`` returns a reference holding a copy of ``module``'s weights;
``tests/test_benchmark_refs.py`` checks every one of them against its module, so they cannot
drift. Every registered mechanism must have one.

Options: ``--threads`` (torch threads), ``--table costs|refs|local|linear|all``, ``--only`` names,
``--overhead`` (also time each module with its input checks and gates stripped out),
``--clock cpu`` (the process's CPU time instead of wall time; steadier on a busy machine
with ``--threads 1``, meaningless with several threads that spin while they wait).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import math
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

import attncourse
from attncourse.cost import measure, time_forward_backward
from attncourse.layers import Gate

SHAPES = [(8, 64, 56, 56), (8, 256, 28, 28), (8, 512, 14, 14)]
REF_SHAPES = [(8, 256, 28, 28), (8, 512, 14, 14)]

# The references live in tools/refs/<part>.py, one file per part of the package. This file is
# loaded by path in the tests (and run as a script), so it puts tools/ on the path itself.
_TOOLS = str(Path(__file__).resolve().parent)
if _TOOLS not in sys.path:
    sys.path.insert(0, _TOOLS)

import refs  # noqa: E402
from refs import REFERENCES, check_reference, reference_for  # noqa: E402,F401


def __getattr__(name: str):
    """The reference classes, as before they moved to tools/refs (e.g. ``benchmark.TripletRef``)."""
    try:
        return getattr(refs, name)
    except AttributeError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None


# ----------------------------------------------------------------------------------------------
# Stripped modules: the same module without its input checks and gates, to measure their cost.
# ----------------------------------------------------------------------------------------------


class _Stripped(nn.Module):
    """``module`` with every ``Gate`` replaced by its activation and ``check_input`` made a no-op."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.inner = copy.deepcopy(module)
        for parent in list(self.inner.modules()):
            for key, child in list(parent.named_children()):
                if isinstance(child, Gate):
                    setattr(parent, key, child.activation)
        # every module file whose forward may run here, base classes' included (scSE's cSE runs
        # SqueezeExcite.forward, which looks check_input up in se.py)
        self._namespaces = {
            sys.modules[cls.__module__]
            for m in self.inner.modules()
            for cls in type(m).__mro__
            if hasattr(sys.modules.get(cls.__module__), "check_input")
        }

    @contextlib.contextmanager
    def _no_checks(self):
        saved = [(ns, ns.check_input) for ns in self._namespaces]
        for ns, _ in saved:
            ns.check_input = lambda module, x, *args, **kwargs: x
        try:
            yield
        finally:
            for ns, f in saved:
                ns.check_input = f

    def forward(self, x):
        with self._no_checks():
            return self.inner(x)


# ----------------------------------------------------------------------------------------------
# Interleaved timing.
# ----------------------------------------------------------------------------------------------


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
_clock = time.perf_counter


def _one_pass(m: nn.Module, x: torch.Tensor, g: torch.Tensor) -> float:
    x.grad = None
    for p in m.parameters():
        p.grad = None
    start = _clock()
    m(x).backward(g)
    return _clock() - start


def time_interleaved(
    modules: list[nn.Module], x: torch.Tensor, *, blocks: int = 5, per_block: int = 6, warmup: int = 2
) -> list[float]:
    """Seconds of one forward+backward pass of each module on ``x``: the passes alternate
    (forward order, then reversed, within every round), and each module's figure is the minimum
    over ``blocks`` of the median of its ``per_block`` passes in that block."""
    x = x.detach().clone().requires_grad_(True)
    g = torch.randn_like(x)
    for _ in range(warmup):
        for m in modules:
            _one_pass(m, x, g)
    best = [math.inf] * len(modules)
    for _ in range(blocks):
        times: list[list[float]] = [[] for _ in modules]
        for r in range(per_block):
            order = range(len(modules)) if r % 2 == 0 else reversed(range(len(modules)))
            for i in order:
                times[i].append(_one_pass(modules[i], x, g))
        best = [min(b, statistics.median(t)) for b, t in zip(best, times)]
    return best


def compare(names: list[str], shapes, *, blocks: int, per_block: int, overhead: bool) -> None:
    print(f"{'module':<8} {'input (B, C, H, W)':<20} {'ms module':>10} {'ms reference':>13} {'ratio':>7}"
          + (f" {'ms stripped':>12} {'checks+gates':>13}" if overhead else ""))
    ratios = []
    for shape in shapes:
        torch.manual_seed(0)
        x = torch.randn(shape)
        for name in names:
            module = attncourse.create(name, shape[1])
            ref = reference_for(module)
            check_reference(copy.deepcopy(module).double(), copy.deepcopy(ref).double(), x[:2].double())
            candidates = [module, ref] + ([_Stripped(module)] if overhead else [])
            t = time_interleaved(candidates, x, blocks=blocks, per_block=per_block)
            ratios.append(t[0] / t[1])
            line = f"{name:<8} {str(shape):<20} {1e3 * t[0]:>10.2f} {1e3 * t[1]:>13.2f} {t[0] / t[1]:>7.3f}"
            if overhead:
                line += f" {1e3 * t[2]:>12.2f} {100 * (t[0] / t[2] - 1):>+12.1f}%"
            print(line, flush=True)
    gm = math.exp(sum(math.log(r) for r in ratios) / len(ratios))
    print(f"\ngeometric mean of the ratios: {gm:.3f}  (worst: {max(ratios):.3f}; target: each <= 1.05, mean <= 0.95)")


def overhead_micro() -> None:
    """The absolute cost of one input check and of one Gate (against the bare activation)."""
    import timeit

    from attncourse._checks import check_input

    m, x, t = attncourse.create("se", 256), torch.randn(8, 256, 28, 28), torch.randn(8, 256)
    gate, bare = Gate(nn.Sigmoid()), nn.Sigmoid()
    rows = {"check_input": lambda: check_input(m, x, 256), "Gate(Sigmoid) on (8, 256)": lambda: gate(t),
            "nn.Sigmoid on (8, 256)": lambda: bare(t)}
    for label, f in rows.items():
        best = min(timeit.repeat(f, number=5000, repeat=5)) / 5000
        print(f"{label:<28} {1e6 * best:7.2f} us per call")
    print()


def costs(names: list[str], repeats: int) -> None:
    print(f"{'module':<10} {'input (B, C, H, W)':<22} {'params':>10} {'MFLOPs':>10} {'ms':>9} {'ms 3x3 conv':>12}")
    for shape in SHAPES:
        x = torch.randn(shape)
        conv = nn.Conv2d(shape[1], shape[1], 3, padding=1, bias=False)
        t_conv = time_forward_backward(conv, x, repeats=repeats)
        for name in names:
            c = measure(attncourse.create(name, shape[1]), x, repeats=repeats)
            print(f"{name:<10} {str(shape):<22} {c.parameters:>10,} {c.flops / 1e6:>10.2f} "
                  f"{1e3 * c.seconds:>9.2f} {1e3 * t_conv:>12.2f}")
        print()


def linear_targets(repeats: int) -> None:
    """Part IV's targets (issue 10) at N = 16,384 tokens, d = 64, one head, batch 1, float32, forward."""
    from attncourse.linear.sweep import targets

    t = targets(repeats=repeats)
    s, m, sp = t["step_seconds"], t["module_seconds"], t["speedup"]
    rows = [
        ("attention step: linear vs sdpa", f"{1e3 * s['linear']:.2f} vs {1e3 * s['sdpa']:.1f} ms", sp["linear_vs_sdpa"], 20),
        ("attention step: linear vs naive", f"{1e3 * s['linear']:.2f} vs {1e3 * s['naive']:.1f} ms", sp["linear_vs_naive"], 50),
        ("module: LinearAttention2d vs MHSA (h=1)", f"{1e3 * m['linear']:.2f} vs {1e3 * m['mhsa']:.1f} ms",
         sp["module_linear_vs_mhsa"], 10),
    ]
    print(f"{'':<42} {'measured':>24} {'speed-up':>9} {'target':>7}")
    for label, figures, ratio, target in rows:
        print(f"{label:<42} {figures:>24} {ratio:>8.1f}x {'>= ' + str(target) + 'x':>7}  {'ok' if ratio >= target else 'MISSED'}")
    print(f"\npeak memory of the step at N = {', '.join(f'{n:,}' for n in t['memory_ns'])} (MiB), growth per doubling:")
    for form, want in (("linear", "about 2x"), ("naive", "4x")):
        mib = ", ".join(f"{b / 2**20:.2f}" for b in t["memory_bytes"][form])
        growth = ", ".join(f"{g:.2f}x" for g in t["memory_growth"][form])
        print(f"  {form:<7} {mib:<30} {growth:<16} (target {want})")
    print()


def local_targets(blocks: int, per_block: int) -> None:
    """Part V's window-attention targets: the module against its reference at Swin-T's first stage,
    and how its time grows with the map at fixed M (forward+backward, interleaved timing)."""
    torch.manual_seed(0)
    module = attncourse.create("window", 96)  # M = 7, 3 heads of 32
    ref = reference_for(module)
    x = torch.randn(8, 96, 56, 56)
    check_reference(copy.deepcopy(module).double(), copy.deepcopy(ref).double(), x[:1].double())
    t_mod, t_ref = time_interleaved([module, ref], x, blocks=blocks, per_block=per_block)
    ratio = t_mod / t_ref
    print(f"{'window (8, 96, 56, 56), M = 7':<40} module {1e3 * t_mod:8.2f} ms, reference {1e3 * t_ref:8.2f} ms, "
          f"ratio {ratio:.3f} (target <= 1.05)  {'ok' if ratio <= 1.05 else 'MISSED'}")
    sides, times = [28, 56, 112], []
    for side in sides:
        (t,) = time_interleaved([module], torch.randn(2, 96, side, side), blocks=blocks, per_block=per_block)
        times.append(t)
        print(f"  (2, 96, {side}, {side}): {1e3 * t:8.2f} ms")
    slope = math.log(times[-1] / times[0]) / math.log(sides[-1] ** 2 / sides[0] ** 2)
    print(f"  log-log slope of time in N over 28² ... 112²: {slope:.3f} (target <= 1.2)  {'ok' if slope <= 1.2 else 'MISSED'}\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10, help="passes per figure in the costs table")
    parser.add_argument("--blocks", type=int, default=5, help="blocks of interleaved passes (refs table)")
    parser.add_argument("--per-block", type=int, default=6, help="passes of each module per block (refs table)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="wall",
                        help="wall time (default), or the process's CPU time: with --threads 1 on a busy "
                             "machine, CPU time leaves out the time the process waits for a core")
    parser.add_argument("--table", choices=["costs", "refs", "local", "linear", "all"], default="all")
    parser.add_argument("--overhead", action="store_true", help="also time each module without checks and gates")
    parser.add_argument("--only", nargs="*", default=None, help="mechanism names (default: all)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    global _clock
    _clock = CLOCKS[args.clock]
    names = args.only or attncourse.available()
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, {args.threads} threads, "
          f"{args.clock} clock\n")
    if args.table in ("costs", "all"):
        print(f"Costs: median of {args.repeats} forward+backward passes\n")
        costs(names, args.repeats)
    if args.table in ("refs", "all"):
        print(f"Module against its plain-PyTorch reference: forward+backward, float32, interleaved, "
              f"min over {args.blocks} blocks of the median of {args.per_block} passes\n")
        if args.overhead:
            overhead_micro()
        compare(names, REF_SHAPES, blocks=args.blocks, per_block=args.per_block, overhead=args.overhead)
    if args.table in ("local", "all"):
        print("Part V targets: window attention, forward+backward, float32, interleaved\n")
        local_targets(args.blocks, args.per_block)
    if args.table in ("linear", "all"):
        print("Part IV targets: N = 16,384 tokens (128 x 128), d = 64, one head, batch 1, float32, forward; "
              "median of 5 passes\n")
        linear_targets(repeats=5)


if __name__ == "__main__":
    main()
