"""What attention costs as the number of tokens grows: the sweep of Part IV's cost chapter.

Time and peak memory of one attention step, ``(N, d)`` queries, keys and values of one head
(batch 1, float32, d = 64 by default), for N from 64 to 16,384:

- ``"naive"``: ``softmax(Q Kᵀ / √d) V`` written out, which materialises the N × N matrix;
- ``"sdpa"``: ``torch.nn.functional.scaled_dot_product_attention``, the same result from a fused
  kernel that works through the keys in blocks and never holds the N × N matrix;
- ``"linear"``: ``kernel_attention(φ(Q), φ(K), V)`` with φ = elu + 1 (Katharopoulos et al. 2020);
- ``"external"``: External Attention's step on the queries alone, ``Norm(Q M_kᵀ) M_v`` with
  S = 64 memory units (Guo et al. 2022): softmax over the N positions, then ℓ1 over the units;
- ``"focused"``: FLatten's focused linear attention (Han et al. 2023), ``kernel_attention`` with
  φ_p = f_3(ReLU(·)); without its depthwise convolution on V, which needs the 2-D map (it adds
  2 · k² · N · d FLOPs, linear in N).

Timings depend on the machine and its load: they are never asserted in tests. The chapter runs a
reduced sweep live and loads the full one, stored by a maintainer's command::

    python -m attncourse.linear.sweep            # writes attncourse/results/linear_cost.json

:func:`targets` measures the issue's speed and memory targets at N = 16,384 (a 128 × 128 map);
``make bench`` prints them (``tools/benchmark.py --table linear``) and the sweep stores them.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from ..cost import peak_memory, time_forward
from .flatten import focusing_function
from .kernel import elu_feature_map, kernel_attention

__all__ = ["FORMS", "NS", "MEMORY", "step", "flops", "measure", "sweep", "slope", "crossover", "targets", "results_path", "save", "load"]

#: The token counts of the full sweep: 64 · 2^k up to 16,384 (an 8 × 8 to a 128 × 128 map).
NS = tuple(64 * 2**k for k in range(9))
#: External Attention's memory size S (the paper's default).
MEMORY = 64

Step = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def _naive(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return torch.softmax(q @ k.transpose(-2, -1) * q.shape[-1] ** -0.5, dim=-1) @ v  # N × N weights, then · V


def _sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return F.scaled_dot_product_attention(q, k, v)


def _linear(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return kernel_attention(elu_feature_map(q), elu_feature_map(k), v)


def _focused(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return kernel_attention(focusing_function(F.relu(q), 3), focusing_function(F.relu(k), 3), v)


def _external(memory_k: torch.Tensor, memory_v: torch.Tensor) -> Step:
    def step_(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        a = torch.softmax(q @ memory_k.transpose(-2, -1), dim=-2)  # (N, S): softmax over the N positions
        a = a / (a.sum(dim=-1, keepdim=True) + 1e-9)  # then ℓ1 over the S units (EANet's 1e-9)
        return a @ memory_v  # (N, d)

    return step_


#: The forms of the sweep, in the order of the plots.
FORMS = ("naive", "sdpa", "linear", "focused", "external")


def step(form: str, d: int = 64, *, generator: torch.Generator | None = None) -> Step:
    """The attention step ``(q, k, v) -> out`` of ``form`` (one of :data:`FORMS`), for head width ``d``."""
    if form == "external":
        g = generator if generator is not None else torch.Generator().manual_seed(0)
        return _external(torch.randn(MEMORY, d, generator=g) * d**-0.5, torch.randn(MEMORY, d, generator=g))
    steps = {"naive": _naive, "sdpa": _sdpa, "linear": _linear, "focused": _focused}
    if form not in steps:
        raise ValueError(f"sweep.step expected a form in {list(FORMS)}, got {form!r}")
    return steps[form]


def _qkv(n: int, d: int, *, grad: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(n)
    return tuple(torch.randn(1, 1, n, d, generator=g).requires_grad_(grad) for _ in range(3))  # B = 1, one head


def _seconds(fn: Callable[[], object], repeats: int) -> float:
    """Median seconds of ``fn()`` (one warm-up call first)."""
    return time_forward(lambda _: fn(), None, repeats=repeats, warmup=1)


def flops(form: str, n: int, d: int = 64) -> int:
    """FLOPs of one step of ``form`` at N = ``n`` as ``FlopCounterMode`` counts them: matrix
    products only, 2 per multiply-add (exp, elu, sums and divisions count 0). ``sdpa`` is counted
    under its math backend, which performs the same two products as the fused kernel
    (``FlopCounterMode`` sees nothing of the fused CPU kernel in torch 2.13)."""
    f = step(form, d)
    q, k, v = _qkv(n, d)
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        f(q, k, v)
    return int(counter.get_total_flops())


def measure(form: str, n: int, d: int = 64, *, backward: bool = False, repeats: int = 3) -> dict[str, float]:
    """Seconds (median of ``repeats``) and peak bytes of one step of ``form`` at N = ``n``,
    forward only (under ``torch.no_grad``) or forward + backward."""
    f = step(form, d)
    q, k, v = _qkv(n, d, grad=backward)
    if backward:
        def run() -> None:
            with torch.enable_grad():  # time_forward times under no_grad
                f(q, k, v).sum().backward()
    else:
        def run() -> None:
            with torch.no_grad():
                f(q, k, v)
    return {"seconds": _seconds(run, repeats), "bytes": peak_memory(run)}


def sweep(
    ns: Sequence[int] = NS, *, d: int = 64, forms: Sequence[str] = FORMS, backward: bool = False,
    repeats: int = 3, progress: bool = False,
) -> dict[str, dict[str, list[float]]]:
    """Seconds and peak bytes of every form at every N: ``{"seconds": {form: [...]}, "bytes": {...}}``."""
    out: dict[str, dict[str, list[float]]] = {"seconds": {f: [] for f in forms}, "bytes": {f: [] for f in forms}}
    for n in ns:
        for f in forms:
            m = measure(f, n, d, backward=backward, repeats=repeats)
            out["seconds"][f].append(m["seconds"])
            out["bytes"][f].append(m["bytes"])
            if progress:
                print(f"  {'fwd+bwd' if backward else 'forward'} {f:>9} N={n:>6}: "
                      f"{m['seconds'] * 1e3:9.2f} ms {m['bytes'] / 2**20:10.2f} MiB", flush=True)
    return out


def slope(ns: Sequence[float], values: Sequence[float]) -> float:
    """The least-squares slope of log(value) against log(N): p for a cost that grows as N^p."""
    xs = torch.log(torch.as_tensor(ns, dtype=torch.float64))
    ys = torch.log(torch.as_tensor(values, dtype=torch.float64))
    xs, ys = xs - xs.mean(), ys - ys.mean()
    return float((xs * ys).sum() / (xs * xs).sum())


def crossover(ns: Sequence[int], slow: Sequence[float], fast: Sequence[float]) -> int | None:
    """The smallest N in ``ns`` from which ``fast`` takes less time than ``slow`` at that N and at
    every larger one (timings are noisy: a single win followed by a loss is not a crossover);
    ``None`` if there is none."""
    for i, n in enumerate(ns):
        if all(f < s for s, f in zip(slow[i:], fast[i:])):
            return n
    return None


def targets(*, n: int = 16384, d: int = 64, repeats: int = 5) -> dict[str, Any]:
    """The issue's targets at N = ``n`` (a 128 × 128 map), d = 64, one head, batch 1, float32, forward.

    - ``step``: seconds of the attention step, linear vs ``sdpa`` vs naive (targets: linear at
      least 20× faster than sdpa and 50× faster than naive);
    - ``module``: seconds of the whole ``LinearAttention2d(d, heads=1)`` vs Part III's
      ``MultiHeadSelfAttention2d(d, heads=1)`` on a ``(1, d, √n, √n)`` map (target: 10×);
    - ``bytes``: peak bytes of the linear and naive steps at n/4, n/2, n (targets: about 2× per
      doubling for linear, 4× for naive).
    """
    from ..selfattn.mhsa import MultiHeadSelfAttention2d
    from .linear import LinearAttention2d

    step_s = {f: measure(f, n, d, repeats=repeats)["seconds"] for f in ("linear", "sdpa", "naive")}
    side = int(round(n**0.5))
    x = torch.randn(1, d, side, side, generator=torch.Generator().manual_seed(0))
    module_s = {}
    for name, cls in (("linear", LinearAttention2d), ("mhsa", MultiHeadSelfAttention2d)):
        m = cls(d, heads=1).eval()
        with torch.no_grad():
            module_s[name] = _seconds(lambda: m(x), repeats)
    sizes = [n // 4, n // 2, n]
    mem = {f: [measure(f, s, d, repeats=1)["bytes"] for s in sizes] for f in ("linear", "naive")}
    return {
        "n": n, "d": d, "step_seconds": step_s, "module_seconds": module_s, "memory_ns": sizes, "memory_bytes": mem,
        "speedup": {
            "linear_vs_sdpa": step_s["sdpa"] / step_s["linear"],
            "linear_vs_naive": step_s["naive"] / step_s["linear"],
            "module_linear_vs_mhsa": module_s["mhsa"] / module_s["linear"],
        },
        "memory_growth": {f: [b / a for a, b in zip(v, v[1:])] for f, v in mem.items()},
    }


def results_path() -> Path:
    """Where the package stores the full sweep."""
    return Path(str(resources.files("attncourse") / "results" / "linear_cost.json"))


def _machine() -> dict[str, Any]:
    return {"torch": torch.__version__, "threads": torch.get_num_threads(),
            "processor": platform.processor() or platform.machine(), "python": platform.python_version(),
            "date": datetime.date.today().isoformat()}


def save(doc: dict[str, Any], path: str | Path | None = None) -> Path:
    path = Path(path) if path is not None else results_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    return path


def load(path: str | Path | None = None) -> dict[str, Any]:
    """The stored sweep: ``{"ns", "d", "forms", "forward", "forward_backward", "targets", "machine"}``."""
    path = Path(path) if path is not None else results_path()
    return json.loads(path.read_text(encoding="utf-8"))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ns", type=int, nargs="+", default=list(NS))
    parser.add_argument("--d", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=None, help="where to write (default: the package's results)")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    print(f"forward, d={args.d}, threads={torch.get_num_threads()}")
    fwd = sweep(args.ns, d=args.d, repeats=args.repeats, progress=True)
    print("forward + backward")
    bwd = sweep(args.ns, d=args.d, backward=True, repeats=args.repeats, progress=True)
    print("targets at N = 16,384")
    tgt = targets(d=args.d)
    print(json.dumps(tgt["speedup"], indent=1), json.dumps(tgt["memory_growth"], indent=1))
    doc = {"ns": list(args.ns), "d": args.d, "forms": list(FORMS), "forward": fwd, "forward_backward": bwd,
           "targets": tgt, "machine": _machine()}
    print("wrote", save(doc, args.out))


if __name__ == "__main__":
    main()
