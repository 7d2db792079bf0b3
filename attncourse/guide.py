"""Which module should I use? Every registered mechanism, measured on the same machine.

For every name in :func:`attncourse.available` this module gathers, from code:

- **what it costs** in a ResNet-50 (:func:`attncourse.nets.resnet50`): its parameters and counted
  FLOPs at one block of each stage and summed over all 16 blocks; the CPU time of one bottleneck
  block with it, forward and forward + backward, as a ratio to the same block without it; the
  memory the training step materialises (:func:`attncourse.cost.peak_memory`), with and without it;
- **what it needs**: the channel counts and map sizes it accepts, probed by building and running it
  (the module's own refusals, e.g. "channels divisible by 64"); the axes that stay static when it
  is exported (its ``export_static_dims``); whether it replaces blocks (``spans_blocks``);
- **what its paper claims** (:mod:`attncourse.claims`, marked as claims; "not checked" where the
  course's notes say the number was recalled, not read);
- **what the course measured**: every stored comparison of :mod:`attncourse.experiments` that ran
  it, with its gain over the comparison's reference network and in how many seeds it was ahead.

Timings depend on the machine; they are measured by ``make results`` (:func:`store`, into
``attncourse/results/guide.json``) and by the command line for a reader's own stage::

    python -m attncourse.guide --channels 256 --size 56 --batch 1

Parameters, FLOPs and memory are deterministic: the chapter recomputes a sample of them live and
asserts they are the stored ones.
"""

from __future__ import annotations

import argparse
import inspect
import json
import math
import statistics
import time
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from . import experiments
from ._registry import available, create, get
from .claims import Claim, claim
from .cost import count_flops, count_parameters, peak_memory
from .nets import Bottleneck

__all__ = [
    "Stage", "STAGES", "StageCost", "measure_stage", "Needs", "needs", "Result", "course_results",
    "helped", "mechanism_of", "Entry", "entry", "Stored", "store", "load", "guide_path", "stage_table", "main",
]


@dataclass(frozen=True)
class Stage:
    """One stage of a ResNet: its name, output channels, map side and number of blocks."""

    name: str
    channels: int
    size: int
    blocks: int


#: ResNet-50's four stages at a 224 × 224 input (torchvision's ``layer1`` … ``layer4``).
STAGES: tuple[Stage, ...] = (
    Stage("layer1", 256, 56, 3), Stage("layer2", 512, 28, 4), Stage("layer3", 1024, 14, 6), Stage("layer4", 2048, 7, 3),
)


@dataclass(frozen=True)
class StageCost:
    """A mechanism at one stage: in a ResNet-50 bottleneck of ``channels`` output channels on a
    ``size`` × ``size`` map, against the same block without it (``block_*``).

    FLOPs are counted at batch 1 by :func:`attncourse.cost.count_flops` (matmuls and convolutions;
    ``scaled_dot_product_attention`` counted as its math backend's products); memory is the peak of what one training step (forward, ``sum``, backward) materialises at
    ``batch``; times are medians in milliseconds at ``batch`` (``None`` when not timed)."""

    channels: int
    size: int
    batch: int
    parameters: int
    flops: int
    memory: int
    block_parameters: int
    block_flops: int
    block_memory: int
    forward_ms: float | None = None
    train_ms: float | None = None
    block_forward_ms: float | None = None
    block_train_ms: float | None = None

    @property
    def forward_ratio(self) -> float | None:
        """Forward time of the block with the mechanism over the block's alone."""
        return None if self.forward_ms is None else self.forward_ms / self.block_forward_ms

    @property
    def train_ratio(self) -> float | None:
        """Forward + backward time of the block with the mechanism over the block's alone."""
        return None if self.train_ms is None else self.train_ms / self.block_train_ms


def _blocks(name: str, channels: int, kwargs: dict[str, Any] | None = None) -> tuple[nn.Module, nn.Module]:
    if channels % 4:
        raise ValueError(f"attncourse.guide expected channels divisible by 4 (a bottleneck's width is channels / 4), "
                         f"got {channels}")
    torch.manual_seed(0)
    plain = Bottleneck(channels, channels // 4)
    torch.manual_seed(0)
    with_it = Bottleneck(channels, channels // 4, attn=name, attn_kwargs=kwargs)
    return plain, with_it


def _train_step(block: nn.Module, x: torch.Tensor) -> Callable[[], None]:
    def step() -> None:
        block(x).sum().backward()
    return step


def _paired_median_ms(a: Callable[[], object], b: Callable[[], object], repeats: int,
                      slow_ms: float = 200.0) -> tuple[float, float]:
    """Median milliseconds of ``a`` and of ``b``, timed in turns after one warm-up run each, so that a
    machine that slows down during the measurement slows both. A pair whose warm-up runs take more
    than ``slow_ms`` together is timed by those runs alone (a slow computation is long enough to
    time once, and its first run's overhead is small beside it)."""
    ta, tb = [], []
    for i in range(repeats + 1):
        for fn, out in ((a, ta), (b, tb)):
            start = time.perf_counter()
            fn()
            out.append(1e3 * (time.perf_counter() - start))
        if i == 0:
            if ta[0] + tb[0] > slow_ms:
                return ta[0], tb[0]
            ta.clear(), tb.clear()
    return statistics.median(ta), statistics.median(tb)


def measure_stage(name: str, channels: int, size: int, *, batch: int = 1, repeats: int = 5,
                  kwargs: dict[str, Any] | None = None) -> StageCost:
    """Measure mechanism ``name`` in a ResNet-50 bottleneck of ``channels`` outputs on ``size`` × ``size``
    maps (``repeats=0``: parameters, FLOPs and memory only, which are deterministic)."""
    plain, with_it = _blocks(name, channels, kwargs)
    x1 = torch.randn(1, channels, size, size, generator=torch.Generator().manual_seed(0))
    x = torch.randn(batch, channels, size, size, generator=torch.Generator().manual_seed(0))
    with sdpa_kernel(SDPBackend.MATH):  # FlopCounterMode has no formula for the fused CPU kernel
        flops_plain, flops_with = count_flops(plain, x1), count_flops(with_it, x1)
    plain.train(), with_it.train()
    mem_plain = peak_memory(_train_step(plain, x))
    mem_with = peak_memory(_train_step(with_it, x))
    p_plain, p_with = count_parameters(plain), count_parameters(with_it)
    times: dict[str, float | None] = dict.fromkeys(("forward_ms", "train_ms", "block_forward_ms", "block_train_ms"))
    if repeats > 0:
        with torch.no_grad():
            plain.eval(), with_it.eval()
            times["forward_ms"], times["block_forward_ms"] = _paired_median_ms(
                lambda: with_it(x), lambda: plain(x), repeats)
        plain.train(), with_it.train()
        times["train_ms"], times["block_train_ms"] = _paired_median_ms(
            _train_step(with_it, x), _train_step(plain, x), repeats)
    return StageCost(channels, size, batch, p_with - p_plain, flops_with - flops_plain, mem_with - mem_plain,
                     p_plain, flops_plain, mem_plain, **times)


# --- what a mechanism needs --------------------------------------------------------------------

@dataclass(frozen=True)
class Needs:
    """What a mechanism accepts, probed by building it for channel counts 1-128 and running it on
    square maps of side 1-8 (see :func:`needs`)."""

    channel_rule: str          # "any", "C divisible by 8", "C >= 4", "C divisible by 2, >= 16", ...
    channel_refusal: str       # the module's own message for the smallest refused count ("" if none)
    refused_sizes: tuple[int, ...]  # map sides in 1-8 it refuses at a valid channel count
    size_refusal: str
    static_axes: tuple[str, ...]    # axes exported static (export_static_dims)
    spans_blocks: bool
    extra_inputs: tuple[str, ...]   # forward arguments besides the map

    @property
    def text(self) -> str:
        """A short summary for a table cell."""
        parts = [] if self.channel_rule == "any" else [self.channel_rule]
        if self.refused_sizes:
            parts.append("side " + ("≥ " + str(max(self.refused_sizes) + 1) if self.refused_sizes == tuple(
                range(1, max(self.refused_sizes) + 1)) else "not " + ", ".join(map(str, self.refused_sizes))))
        if self.static_axes:
            parts.append("static " + ", ".join(self.static_axes) + " at export")
        if self.spans_blocks:
            parts.append("replaces blocks")
        if self.extra_inputs:
            parts.append("second input: " + ", ".join(self.extra_inputs))
        return "; ".join(parts) or "nothing"


def _channel_rule(valid: list[int], probed: range) -> str:
    if len(valid) == len(probed):
        return "any"
    if not valid:
        return f"none in {probed.start}-{probed.stop - 1}"
    lo = min(valid)
    for d in range(max(valid), 0, -1):
        if all(c % d == 0 for c in valid):
            expected = [c for c in probed if c >= lo and c % d == 0]
            if expected == valid:
                if d == 1:
                    return f"C ≥ {lo}"
                return f"C divisible by {d}" + (f", ≥ {lo}" if lo > d else "")
            break
    return "C in {" + ", ".join(map(str, valid[:6])) + (", …}" if len(valid) > 6 else "}")


def needs(name: str, *, channels: range = range(1, 129), sizes: Sequence[int] = range(1, 9)) -> Needs:
    """Probe mechanism ``name``: which channel counts it builds for, which map sides it runs on
    (at the largest valid channel count up to 64, batch 2, eval mode), what it declares."""
    cls = get(name)
    valid, refusal = [], ""
    for c in channels:
        try:
            create(name, c)
            valid.append(c)
        except ValueError as err:
            refusal = refusal or f"C = {c}: {err}"
    refused, size_refusal = [], ""
    small = [c for c in valid if c <= 64]
    if small:
        torch.manual_seed(0)
        m = create(name, max(small)).eval()
        for s in sizes:
            try:
                with torch.no_grad():
                    m(torch.randn(2, max(small), s, s))
            except ValueError as err:
                refused.append(s)
                size_refusal = size_refusal or f"side {s}: {err}"
    params = list(inspect.signature(cls.forward).parameters.values())[2:]
    extra = tuple(p.name for p in params if p.default is inspect.Parameter.empty)
    return Needs(_channel_rule(valid, channels), refusal, tuple(refused), size_refusal,
                 tuple(sorted(getattr(cls, "export_static_dims", {}))), bool(getattr(cls, "spans_blocks", False)), extra)


# --- what the course measured ------------------------------------------------------------------

@dataclass(frozen=True)
class Result:
    """One stored comparison that ran the mechanism: ``variant`` of protocol ``protocol`` against
    ``reference`` (the same network without the mechanism), final test accuracies over ``seeds``."""

    protocol: str
    task: str
    variant: str
    reference: str
    mean: float
    std: float
    reference_mean: float
    ahead: int          # seeds in which the variant beat the reference (same seed)
    seeds: int

    @property
    def gain(self) -> float:
        return self.mean - self.reference_mean


def helped(r: Result) -> bool:
    """The course's rule for "it helped": a higher mean than the reference *and* ahead of it in at
    least 80 % of the seeds, same seed against same seed (4 of 5, 3 of 3)."""
    return r.gain > 0 and r.ahead >= math.ceil(0.8 * r.seeds)


def _mechanism(attn: str | None, kwargs: dict[str, Any]) -> str | None:
    if attn == "tinyvit":
        return kwargs.get("block", "vit")
    return attn if attn in available() else None


def _reference(p: experiments.Protocol, variant: str) -> str | None:
    """The variant of ``p`` that is ``variant``'s network without its mechanism: the plain network
    for a module in a CNN slot and for the ViT itself; for another ViT block, the ViT with the same
    settings otherwise (ReViT against the ViT from the same start). ``None`` for the ViT's ablations
    (no positions, another start), which measure no mechanism."""
    attn, kwargs = p.variants[variant]
    if attn == "tinyvit":
        rest = {k: v for k, v in kwargs.items() if k != "block"}
        if kwargs.get("block", "vit") != "vit":
            return next((v for v, (a, kw) in p.variants.items() if a == "tinyvit" and kw == {"block": "vit", **rest}), None)
        if rest:
            return None
    return next((v for v, (a, _) in p.variants.items() if a is None), None)


def _same_run(p: experiments.Protocol, variant: str) -> str:
    """What determines a row's numbers: protocols that repeat another's runs (hybrid2's CBAM and
    baseline are hybrid's) give equal keys."""
    return json.dumps([p.task, p.task_kwargs, p.variants[variant], _reference(p, variant), p.widths, p.network_kwargs,
                       p.net, p.in_channels, p.num_classes, p.fit_kwargs(), p.vit_kwargs], sort_keys=True)


def course_results(name: str | None = None, *, protocols: Sequence[str] | None = None) -> list[Result]:
    """Every stored comparison row of mechanism ``name`` (all mechanisms when ``None``) that has a
    reference network in its protocol, in protocol order; a run that a later protocol repeats
    (the same task, network, variant and budget) is listed once, under its first protocol."""
    rows, seen = [], set()
    for pname in protocols or experiments.PROTOCOLS:
        p, stored = experiments.protocol(pname), experiments.load(pname).result
        for variant, (attn, kwargs) in p.variants.items():
            mech, ref = _mechanism(attn, kwargs), _reference(p, variant)
            if mech is None or ref is None or (name is not None and mech != name) or variant not in stored.histories:
                continue
            key = _same_run(p, variant)
            if key in seen:
                continue
            seen.add(key)
            a, b = stored.accuracies(variant), stored.accuracies(ref)
            rows.append(Result(pname, p.task, variant, ref, float(a.mean()), float(a.std()), float(b.mean()),
                               int((a > b).sum()), len(a)))
    return rows


def mechanism_of(r: Result) -> str:
    """The registered name a result row measured."""
    attn, kwargs = experiments.protocol(r.protocol).variants[r.variant]
    return _mechanism(attn, kwargs)  # type: ignore[return-value]


# --- one row per mechanism ---------------------------------------------------------------------

@dataclass(frozen=True)
class Entry:
    """Everything the guide knows about one mechanism."""

    name: str
    cls: str
    stages: tuple[StageCost, ...]
    needs: Needs
    claim: Claim
    results: tuple[Result, ...]

    @property
    def resnet50_parameters(self) -> int:
        """Parameters added to ResNet-50 with the mechanism in all 16 blocks."""
        return sum(s.parameters * st.blocks for s, st in zip(self.stages, STAGES))

    @property
    def resnet50_flops(self) -> int:
        """Counted FLOPs added to one 224 × 224 forward of ResNet-50 (all 16 blocks)."""
        return sum(s.flops * st.blocks for s, st in zip(self.stages, STAGES))

    def _ratio(self, field: str) -> float | None:
        times = [(getattr(s, field), getattr(s, "block_" + field), st.blocks) for s, st in zip(self.stages, STAGES)]
        if any(t is None for t, _, _ in times):
            return None
        return sum(t * n for t, _, n in times) / sum(b * n for _, b, n in times)

    @property
    def train_ratio(self) -> float | None:
        """Forward + backward time of ResNet-50's 16 blocks with the mechanism over their time
        without it, each stage's measured block times weighted by its number of blocks (stem and
        head left out)."""
        return self._ratio("train_ms")

    @property
    def forward_ratio(self) -> float | None:
        """As :attr:`train_ratio`, forward only (inference)."""
        return self._ratio("forward_ms")


def entry(name: str, stages: Sequence[StageCost], results: Sequence[Result] | None = None) -> Entry:
    """The :class:`Entry` of mechanism ``name`` with its measured ``stages`` (the course's results
    are looked up when ``results`` is ``None``)."""
    return Entry(name, get(name).__name__, tuple(stages), needs(name), claim(name),
                 tuple(course_results(name) if results is None else results))


# --- stored measurements -----------------------------------------------------------------------

def guide_path() -> Path:
    """Where ``make results`` stores the guide's measurements."""
    return Path(str(resources.files("attncourse") / "results" / "guide.json"))


def store(path: str | Path | None = None, *, names: Sequence[str] | None = None, batch: int = 4,
          repeats: int = 5, progress: bool = True) -> Path:
    """Measure mechanisms at ResNet-50's four stages and write the JSON the chapter loads: all of
    them, or only ``names``, whose rows then replace theirs in the stored file (the others are kept,
    so a new module is added without measuring the rest again; same ``batch`` and ``repeats``)."""
    from .train import TRAIN_THREADS, pinned_threads

    path = Path(path) if path is not None else guide_path()
    doc: dict[str, Any] = {"batch": batch, "repeats": repeats, "machine": experiments.machine(),
                           "date": time.strftime("%Y-%m-%d"), "stages": [asdict(s) for s in STAGES],
                           "mechanisms": {}}
    if names is not None and path.exists():
        old = json.loads(path.read_text())
        if (old["batch"], old["repeats"], old["stages"]) != (batch, repeats, doc["stages"]):
            raise ValueError(f"attncourse.guide.store: the stored file was measured at batch {old['batch']}, "
                             f"{old['repeats']} repeats; measure all mechanisms again to change them")
        doc["mechanisms"] = old["mechanisms"]
    with pinned_threads(TRAIN_THREADS):
        for name in names or available():
            start = time.perf_counter()
            costs = [measure_stage(name, st.channels, st.size, batch=batch, repeats=repeats) for st in STAGES]
            doc["mechanisms"][name] = [asdict(c) for c in costs]
            if progress:
                print(f"{name:<10} {time.perf_counter() - start:6.1f} s  train ratios "
                      + " ".join(f"{c.train_ratio:.2f}" for c in costs), flush=True)
    doc["mechanisms"] = dict(sorted(doc["mechanisms"].items()))
    path.write_text(json.dumps(doc, indent=1) + "\n")
    return path


@dataclass(frozen=True)
class Stored:
    """The stored measurements: settings, machine, and every mechanism's four :class:`StageCost`."""

    batch: int
    repeats: int
    machine: dict[str, Any]
    date: str
    costs: dict[str, tuple[StageCost, ...]]

    def entries(self) -> dict[str, Entry]:
        """One :class:`Entry` per stored mechanism (probing what each needs: a few seconds)."""
        every = course_results()
        return {n: entry(n, c, [r for r in every if mechanism_of(r) == n]) for n, c in self.costs.items()}


def load(path: str | Path | None = None) -> Stored:
    """The stored measurements; refuses a file that misses a registered mechanism or measured
    other stages."""
    doc = json.loads(Path(path or guide_path()).read_text())
    if doc["stages"] != [asdict(s) for s in STAGES]:
        raise ValueError("attncourse.guide: the stored measurements are of other stages; run `make results`")
    missing = sorted(set(available()) - set(doc["mechanisms"]))
    if missing:
        raise ValueError(f"attncourse.guide: no stored measurements for {missing}; run `make results`")
    costs = {n: tuple(StageCost(**c) for c in cs) for n, cs in doc["mechanisms"].items() if n in available()}
    return Stored(doc["batch"], doc["repeats"], doc["machine"], doc["date"], costs)


# --- the table ---------------------------------------------------------------------------------

def _si(n: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n:.3g}" if n else "0"


def _claim_text(c: Claim) -> str:
    if c.gain is None:
        return "no gain stated"
    return f"{c.gain:+.2f} ({c.backbone[:20]})" + ("" if c.checked else ", not checked")


def _best_text(results: Sequence[Result]) -> str:
    if not results:
        return "not run"
    best = max(results, key=lambda r: r.gain)
    return f"{best.gain:+.3f} ({best.protocol}: {best.variant}, ahead {best.ahead}/{best.seeds}); helped {sum(map(helped, results))}/{len(results)}"


def stage_table(rows: dict[str, StageCost], *, results: dict[str, Sequence[Result]] | None = None,
                needs_of: dict[str, Needs] | None = None) -> str:
    """A plain-text table, one row per mechanism at one stage: parameters, FLOPs, time ratios,
    memory, what it needs, its paper's claim, the course's best result."""
    lines = [f"{'module':<10}{'params':>9}{'MFLOPs':>9}{'fwd ×':>7}{'train ×':>8}{'+memory':>10}  "
             f"{'needs':<42}{'paper claims':<42}course (best gain; helped)"]
    for name, c in rows.items():
        fr = "" if c.forward_ratio is None else f"{c.forward_ratio:.2f}"
        tr = "" if c.train_ratio is None else f"{c.train_ratio:.2f}"
        need = needs_of[name].text if needs_of else ""
        res = _best_text(results.get(name, ())) if results is not None else ""
        lines.append(f"{name:<10}{_si(c.parameters):>9}{c.flops / 1e6:>9.1f}{fr:>7}{tr:>8}{_si(c.memory) + 'B':>10}  "
                     f"{need[:41]:<42}{_claim_text(claim(name))[:41]:<42}{res}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    """The command line ``python -m attncourse.guide`` (``--help`` lists its options)."""
    parser = argparse.ArgumentParser(
        prog="python -m attncourse.guide",
        description="Every registered attention mechanism in a ResNet-50 bottleneck of your stage: what it adds "
                    "(parameters, FLOPs, time against the block without it, training memory), what it needs, what "
                    "its paper claims, what the course measured.")
    parser.add_argument("--channels", type=int, default=1024, help="the block's output channels (default 1024: layer3, the stage with 6 of the 16 blocks)")
    parser.add_argument("--size", type=int, default=14, help="the map's side (default 14: layer3 at 224)")
    parser.add_argument("--batch", type=int, default=2,
                        help="batch size for the timings and memory (default 2: modules that batch-normalise a pooled "
                             "vector cannot train on 1)")
    parser.add_argument("--repeats", type=int, default=2, help="timed repeats of each measurement (median; default 2)")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="only these mechanisms")
    parser.add_argument("--store", action="store_true",
                        help="measure ResNet-50's four stages at batch 4, median of 5, and store them for the chapter "
                             "(a maintainer's command; with --only, those modules' rows replace theirs)")
    args = parser.parse_args(argv)
    names = args.only or available()
    unknown = sorted(set(names) - set(available()))
    if unknown:
        parser.error(f"unknown mechanisms {unknown}; available: {', '.join(available())}")
    if args.store:
        print(f"stored in {store(names=args.only)}")
        return
    from .train import TRAIN_THREADS, pinned_threads

    rows, needs_of = {}, {}
    start = time.perf_counter()
    with pinned_threads(TRAIN_THREADS):
        for name in names:
            try:
                rows[name] = measure_stage(name, args.channels, args.size, batch=args.batch, repeats=args.repeats)
                needs_of[name] = needs(name)
            except ValueError as err:
                print(f"{name:<10}refused: {err}")
    results: dict[str, list[Result]] = {}
    for r in course_results():
        results.setdefault(mechanism_of(r), []).append(r)
    print(f"A ResNet-50 bottleneck with {args.channels} output channels on {args.size} x {args.size} maps, batch "
          f"{args.batch}, {TRAIN_THREADS} threads; ratios: the block with the module over the block without it "
          f"(median of {args.repeats}).")
    print(stage_table(rows, results=results, needs_of=needs_of))
    print(f"({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
