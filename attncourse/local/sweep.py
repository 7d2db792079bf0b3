"""What Part V's modules cost as the map grows: the sweep of Part V's side-by-side chapter.

Each module at C = 96 channels (Swin-T's first stage) on one image of S × S for S in 28, 56, 112,
forward only, float32: FLOPs as ``FlopCounterMode`` counts them (2 per multiply-add; matrix products
and convolutions; ``scaled_dot_product_attention`` counted under its math backend, which performs
the products the fused CPU kernel performs), peak bytes of the tensors the pass materialises
(:func:`attncourse.cost.peak_memory`: deterministic, blind to a fused kernel's scratch space), and
the median time of a forward pass. Part III's MHSA and Part IV's linear attention are the
references. Modules whose cost is quadratic in N and that materialise an N × N term per head
(MaSA's full form adds its decay as an N × N mask) are left out at 112² (about 3.8 GB).

Timings depend on the machine and its load: they are stored by a maintainer's command and never
asserted in tests (the chapter checks that the stored FLOPs and bytes are still the code's)::

    python -m attncourse.local.sweep            # writes attncourse/results/local_cost.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
from importlib import resources
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from .._registry import create
from ..cost import peak_memory, time_forward

__all__ = ["CHANNELS", "SIDES", "MODULES", "build", "flops", "peak_bytes", "sweep", "slope", "results_path", "save", "load"]

CHANNELS = 96
SIDES = (28, 56, 112)
#: label -> (registered name, keyword arguments, largest side measured)
MODULES: dict[str, tuple[str, dict[str, Any], int]] = {
    "MHSA": ("mhsa", {"heads": 3}, 112),
    "Linear": ("linear", {"heads": 3}, 112),
    "Window (M=7)": ("window", {}, 112),
    "Outlook": ("outlook", {}, 112),
    "CoT": ("cot", {}, 112),
    "HAB (M=7)": ("hab", {"window_size": 7}, 112),
    "OCAB (M=7)": ("ocab", {"window_size": 7}, 112),
    "MaSA": ("masa", {}, 56),
    "MaSA (decomposed)": ("masa", {"decomposed": True}, 112),
}


def build(label: str) -> nn.Module:
    """The module of ``label`` at :data:`CHANNELS` channels, seeded, in eval mode."""
    name, kwargs, _ = MODULES[label]
    torch.manual_seed(0)
    return create(name, CHANNELS, **kwargs).eval()


def _input(side: int) -> torch.Tensor:
    return torch.randn(1, CHANNELS, side, side, generator=torch.Generator().manual_seed(0))


def flops(label: str, side: int) -> int:
    """Counted FLOPs of one forward pass at ``side`` × ``side`` (SDPA under its math backend)."""
    m, x = build(label), _input(side)
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        m(x)
    return int(counter.get_total_flops())


def peak_bytes(label: str, side: int) -> int:
    """Peak bytes that one forward pass materialises (deterministic)."""
    m, x = build(label), _input(side)

    def run() -> None:
        with torch.no_grad():
            m(x)

    return peak_memory(run)


def sweep(sides: Sequence[int] = SIDES, labels: Sequence[str] | None = None, repeats: int = 3,
          progress: bool = False) -> dict[str, dict[str, list[float | None]]]:
    """FLOPs, peak bytes and seconds per label and side (``None`` beyond a module's largest side)."""
    out: dict[str, dict[str, list[float | None]]] = {}
    for label in labels or list(MODULES):
        row: dict[str, list[float | None]] = {"flops": [], "bytes": [], "seconds": []}
        for side in sides:
            if side > MODULES[label][2]:
                for key in row:
                    row[key].append(None)
                continue
            m, x = build(label), _input(side)
            row["flops"].append(flops(label, side))
            row["bytes"].append(peak_bytes(label, side))
            row["seconds"].append(time_forward(m, x, repeats=repeats, warmup=1))
            if progress:
                print(f"{label:<20} {side:>4}²  {row['flops'][-1] / 1e9:8.2f} GFLOPs  "
                      f"{row['bytes'][-1] / 2**20:9.1f} MiB  {1e3 * row['seconds'][-1]:9.1f} ms", flush=True)
        out[label] = row
    return out


def slope(sides: Sequence[int], values: Sequence[float | None]) -> float:
    """The log-log slope of ``values`` in N = side² between the first and the last measured side."""
    import math

    pairs = [(s * s, v) for s, v in zip(sides, values) if v is not None]
    (n0, v0), (n1, v1) = pairs[0], pairs[-1]
    return math.log(v1 / v0) / math.log(n1 / n0)


def results_path() -> Path:
    return Path(str(resources.files("attncourse") / "results" / "local_cost.json"))


def save(doc: dict[str, Any], path: str | Path | None = None) -> Path:
    path = Path(path) if path is not None else results_path()
    path.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    return path


def load(path: str | Path | None = None) -> dict[str, Any]:
    path = Path(path) if path is not None else results_path()
    return json.loads(path.read_text(encoding="utf-8"))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m attncourse.local.sweep", description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    results = sweep(repeats=args.repeats, progress=True)
    doc = {"channels": CHANNELS, "sides": list(SIDES), "modules": {k: list(v[:2]) + [v[2]] for k, v in MODULES.items()},
           "results": results, "machine": {"torch": torch.__version__, "threads": torch.get_num_threads(),
                                            "processor": platform.processor() or platform.machine(),
                                            "date": datetime.date.today().isoformat()}}
    print("written to", save(doc, args.out))


if __name__ == "__main__":
    main()
