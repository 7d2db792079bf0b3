"""The parts' side-by-side comparisons: one protocol per part, and their stored results.

A part's closing section compares every module of the part on the same task, seeds and budget.
Five seeds of a dozen variants take minutes on a 2-core CPU, more than a chapter may take, so
the comparison is run once by this module's command line and its results are stored in the
package (``attncourse/results/<part>.json``); the chapters load them, and check that the stored
protocol and parameter counts are still those of the code, so results that no longer match the
code fail the tests instead of being shown. The module chapters train a few of the same variants
live, on the same data and budget: with the same seeds on the same machine and code they reproduce the
stored runs.

Re-run a part (about 2 to 6 minutes each on 2 cores)::

    python -m attncourse.experiments channel --seeds 0 1 2 3 4 --keep-models
    python -m attncourse.experiments hybrid --seeds 0 1 2 3 4 --keep-models
    python -m attncourse.experiments hybrid2 --seeds 0 1 2 3 4 --keep-models
    python -m attncourse.experiments selfattn --seeds 0 1 2 3 4 --keep-models
    python -m attncourse.experiments selfattn_far --seeds 0 1 2 3 4
    python -m attncourse.experiments linear --seeds 0 1 2 3 4 --keep-models
    python -m attncourse.experiments local --seeds 0 1 2 3 4 --keep-models
    python -m attncourse.experiments local_where --seeds 0 1 2 3 4 --keep-models
    python -m attncourse.experiments blocks --seeds 0 1 2 3 4 --keep-models
    python -m attncourse.experiments blocks_where --seeds 0 1 2 3 4 --keep-models
    python -m attncourse.experiments blocks_phase --seeds 0 1 2 3 4
    python -m attncourse.experiments networks --seeds 0 1 2 --keep-models

Add a variant to a part without re-running the others (its runs are merged into the stored file;
the other variants' runs stay as stored, which is what a full re-run would give them too, since
each run depends only on its own variant, seed and the pinned thread count)::

    python -m attncourse.experiments linear --variants "FLatten (no DWC)" --merge

Every run trains with :data:`attncourse.train.TRAIN_THREADS` threads whatever the machine has,
and the stored file records that count and the CPU's instruction set (``cpu_capability``).
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import nn

from .data import Split, cluttered_scenes, context_bars, corrupt, cued_bars, digits, same_shapes, side_by_side
from .channel.se_variants import SEVariant
from .hybrid.scse import ChannelSE, SpatialSE
from .insert import insert
from .nets import TinyNet, TinyViT, resnet20
from .train import TRAIN_THREADS, Comparison, History, compare, cpu_capability, evaluate, numerics_fingerprint

__all__ = ["Protocol", "PROTOCOLS", "Stored", "protocol", "run", "save", "load", "load_model", "results_path", "models_path"]

# Modules that are not registered under a name of their own, by the name the protocols use.
_CLASSES: dict[str, Callable[..., nn.Module]] = {"cse": ChannelSE, "sse": SpatialSE, "se-variant": SEVariant}


@dataclass(frozen=True)
class Protocol:
    """A controlled comparison: one task, one network, one budget, several attention variants.

    ``variants`` maps a display name to ``(attn, kwargs)``: ``attn`` is ``None`` (no attention),
    a registered mechanism name, or one of the module names ``"cse"``, ``"sse"``, ``"se-variant"``
    (a :class:`~attncourse.nets.TinyNet` with that module in its slot), or ``"tinyvit"``
    (a :class:`~attncourse.nets.TinyViT` built with the protocol's ``vit_kwargs`` and the
    variant's ``kwargs``, e.g. ``{"block": "fan"}``).
    """

    name: str
    task: str
    task_kwargs: dict[str, Any]
    variants: dict[str, tuple[str | None, dict[str, Any]]]
    widths: tuple[int, ...] = (16, 32)
    epochs: int = 10
    lr: float = 1e-2
    batch_size: int = 64
    network_kwargs: dict[str, Any] = field(default_factory=dict)
    in_channels: int = 2
    #: The variants whose seed-0 networks :func:`save` and ``merge`` store when the run kept
    #: them (``None``: every variant): the ones the chapters load, so that the stored file does
    #: not carry networks nobody reads. Not part of :meth:`describe`: it changes no result.
    networks: tuple[str, ...] | None = None
    num_classes: int = 2
    #: the settings every ``"tinyvit"`` variant shares (size, patch, dim, depth, ...)
    vit_kwargs: dict[str, Any] = field(default_factory=dict)
    #: corrupted test sets every run is also evaluated on after training, by name:
    #: ``(kind, severity)`` of :func:`attncourse.data.corrupt` (stored as ``History.corrupted``)
    corruptions: dict[str, tuple[str, float]] = field(default_factory=dict)
    #: The network of the variants that are not TinyViTs, ``"tinynet"`` (a
    #: :class:`~attncourse.nets.TinyNet` of ``widths`` and ``network_kwargs``) or ``"resnet20"``
    #: (:func:`~attncourse.nets.resnet20` with the mechanism in every residual block; ``widths`` and
    #: ``network_kwargs`` unused).
    net: str = "tinynet"
    #: The 0-based stages in which :func:`attncourse.insert` puts the mechanism of a ResNet variant
    #: that has it only there (in every block of those stages), by variant name.
    stages: dict[str, tuple[int, ...]] = field(default_factory=dict)

    def data(self) -> Split:
        """The task's data (procedural, seeded)."""
        tasks = {"context_bars": context_bars, "cued_bars": cued_bars, "same_shapes": same_shapes,
                 "side_by_side": side_by_side, "digits": digits, "cluttered_scenes": cluttered_scenes}
        return tasks[self.task](**self.task_kwargs)

    def network(self, variant: str) -> Callable[[], nn.Module]:
        """A factory for the TinyNet of ``variant``, as ``fit`` and ``compare`` take it."""
        if variant not in self.variants:
            raise ValueError(f"Protocol {self.name!r} expected a variant in {sorted(self.variants)}, got {variant!r}")
        attn, kwargs = self.variants[variant]
        in_channels, classes = self.in_channels, self.num_classes
        if attn == "tinyvit":
            return lambda: TinyViT(in_channels, classes, **{**self.vit_kwargs, **kwargs})
        if self.net == "resnet20":
            if variant in self.stages:
                return lambda: insert(resnet20(classes), attn, stages=self.stages[variant], **kwargs)
            return lambda: resnet20(classes, attn=attn, attn_kwargs=kwargs)
        return lambda: TinyNet(in_channels, classes, widths=self.widths, attn=_CLASSES.get(attn, attn),
                               attn_kwargs=kwargs, **self.network_kwargs)

    def fit_kwargs(self) -> dict[str, Any]:
        return {"epochs": self.epochs, "lr": self.lr, "batch_size": self.batch_size}

    def describe(self) -> dict[str, Any]:
        """Everything that determines the results (stored with them, compared when loading)."""
        return {
            "name": self.name, "task": self.task, "task_kwargs": self.task_kwargs,
            "variants": {k: [a, kw] for k, (a, kw) in self.variants.items()},
            "widths": list(self.widths), **self.fit_kwargs(),
            **({"network_kwargs": self.network_kwargs} if self.network_kwargs else {}),
            **({"in_channels": self.in_channels} if self.in_channels != 2 else {}),
            **({"num_classes": self.num_classes} if self.num_classes != 2 else {}),
            **({"vit_kwargs": self.vit_kwargs} if self.vit_kwargs else {}),
            **({"corruptions": {k: list(v) for k, v in self.corruptions.items()}} if self.corruptions else {}),
            **({"net": self.net} if self.net != "tinynet" else {}),
            **({"stages": {k: list(v) for k, v in self.stages.items()}} if self.stages else {}),
        }

    def corrupted_tests(self, data: Split) -> dict[str, Any]:
        """The corrupted copies of ``data``'s test images, by corruption name (seed 0, so every
        network is tested on the same images; circular blur on a torus task)."""
        pad = self.network_kwargs.get("padding_mode", "zeros")
        return {name: corrupt(data.x_test, kind, severity, seed=0, padding_mode=pad)
                for name, (kind, severity) in self.corruptions.items()}


# Part VI's TinyViT variants, the same in its protocols: one per block (the protocol's vit_kwargs
# give the sizes). ReViT runs against the ViT from the same initial weights (PyTorch's start for
# both; ReViT's official start is a normal(0.02), the ViT's Xavier), so that the residual (and its
# one parameter, alpha) is the only difference between the two.
_TINYVIT_VARIANTS: dict[str, tuple[str | None, dict[str, Any]]] = {
    "ViT": ("tinyvit", {"block": "vit"}),
    "ViT (no positions)": ("tinyvit", {"block": "vit", "position": None}),
    "FAN": ("tinyvit", {"block": "fan"}),
    "ViT (PyTorch start)": ("tinyvit", {"block": "vit", "block_kwargs": {"heads": 4, "mlp_ratio": 2, "init": "pytorch"}}),
    "ReViT": ("tinyvit", {"block": "revit", "block_kwargs": {"heads": 4, "mlp_ratio": 2, "init": "pytorch"}}),
    "MUSE": ("tinyvit", {"block": "muse"}),
}

PROTOCOLS: dict[str, Protocol] = {
    "channel": Protocol(
        name="channel",
        task="context_bars",
        task_kwargs={"n_train": 1500, "n_test": 1000, "seed": 0},
        variants={
            "baseline": (None, {}),
            "SE (r=4)": ("se", {"reduction": 4}),
            "ECA": ("eca", {}),
            "SK (G=8)": ("sk", {"groups": 8}),
            "SimAM": ("simam", {}),
            # the controls of ECA's ablation (its Table 1), see chapters/channel/eca.md
            "SE-Var1": ("se-variant", {"variant": "var1"}),
            "SE-Var2": ("se-variant", {"variant": "var2"}),
            "SE-Var3": ("se-variant", {"variant": "var3"}),
            "SE-GC (G=4)": ("se-variant", {"variant": "gc", "groups": 4}),
        },
    ),
    "hybrid": Protocol(
        name="hybrid",
        task="cued_bars",
        task_kwargs={"n_train": 1500, "n_test": 1000, "seed": 0},
        variants={
            "baseline": (None, {}),
            "SE (r=4)": ("se", {"reduction": 4}),
            "CBAM (r=4)": ("cbam", {"reduction": 4}),
            "CBAM spatial→channel": ("cbam", {"reduction": 4, "order": "spatial-channel"}),
            "CBAM parallel": ("cbam", {"reduction": 4, "order": "parallel"}),
            "CBAM official": ("cbam", {"reduction": 4, "spatial_norm": True, "pool_order": "max-avg"}),
            "BAM (r=4)": ("bam", {"reduction": 4}),
            "BAM product": ("bam", {"reduction": 4, "combine": "product"}),
            "cSE (r=2)": ("cse", {"reduction": 2}),
            "sSE": ("sse", {}),
            "scSE": ("scse", {}),
            "scSE max": ("scse", {"aggregation": "max"}),
            "Coordinate": ("coord", {}),
        },
    ),
    # Part II's second half: the same task, data, network, budget and seeds as "hybrid", run as a
    # protocol of its own so that the first half's stored runs stay as they are; the baseline and
    # CBAM are run again in both, as the check that the two are comparable
    "hybrid2": Protocol(
        name="hybrid2",
        task="cued_bars",
        task_kwargs={"n_train": 1500, "n_test": 1000, "seed": 0},
        variants={
            "baseline": (None, {}),
            "CBAM (r=4)": ("cbam", {"reduction": 4}),
            "Triplet": ("triplet", {}),
            "GAM (r=4)": ("gam", {"reduction": 4}),
            # G = 64 needs C divisible by 128; the network's blocks have 16 and 32 channels
            "SA (G=4)": ("sa", {"groups": 4}),
            # G = 32 leaves less than one channel per group at C = 16
            "EMA (G=8)": ("ema", {"factor": 8}),
        },
    ),
    # Part III: attention over all positions, in the middle block at full resolution (12 x 12,
    # 144 tokens), followed by a pool and one more block; see data.same_shapes.
    "selfattn": Protocol(
        name="selfattn",
        task="same_shapes",
        task_kwargs={"n_train": 1500, "n_test": 1000, "seed": 0},
        variants={
            "baseline": (None, {}),
            "SE (r=4)": ("se", {"reduction": 4}),
            "CBAM (r=4)": ("cbam", {"reduction": 4}),
            # CBAM's 7x7 spatial gate widens the receptive field by 6 pixels; with a 3x3 gate it
            # widens it by 2: the control that says whether CBAM's result is its reach
            "CBAM (r=4, k=3)": ("cbam", {"reduction": 4, "kernel_size": 3}),
            "scSE": ("scse", {}),
            # 2 heads of d = 16: as accurate as the default 8 heads of d = 4 here (0.96 and 0.97, seed 0)
            # in a third of the time (a softmax per head: 8 heads exponentiate 8 N^2 scores)
            "MHSA": ("mhsa", {"heads": 2}),
            # controls: is it the heads, or the 1/sqrt(d) scaling, that the single-head modules lack?
            "MHSA (h=1)": ("mhsa", {"heads": 1}),
            "Non-local": ("nonlocal", {}),
            "Non-local (scaled)": ("nonlocal", {"scale": True}),
            # θ, φ, g started as nn.MultiheadAttention's instead of the official normal(std 0.01)
            "Non-local (Xavier)": ("nonlocal", {"init": "xavier"}),
            # the paper's own start (§4.1: He et al.'s initialisation of the block's weight layers)
            "Non-local (He)": ("nonlocal", {"init": "he"}),
            "GC": ("gc", {}),
            # r = 4 as SE and CBAM here: at the default r = 16 the bottleneck of 32 channels has 2
            # units, and a LayerNorm over 2 values outputs about ±1 whatever comes in
            "GC (r=4)": ("gc", {"reduction": 4}),
            "DANet": ("danet", {}),
            "CCNet": ("ccnet", {}),
        },
        widths=(16, 32, 32),
        network_kwargs={"pool_every": 2, "attn_blocks": [1]},
        networks=("MHSA", "Non-local", "GC", "GC (r=4)", "DANet", "CCNet"),  # what Part III's chapters load
    ),
    # Part III again, with the shapes farther apart (16 x 16, corners >= 12 pixels apart: they span
    # 15 pixels or more), beyond the receptive field that CBAM's 3 x 3 gate gives (12) and at the
    # edge of its 7 x 7 gate's (16): does the short task's result come from reach?
    "selfattn_far": Protocol(
        name="selfattn_far",
        task="same_shapes",
        task_kwargs={"n_train": 1500, "n_test": 1000, "seed": 0, "size": 16, "min_distance": 12},
        variants={
            "baseline": (None, {}),
            "CBAM (r=4)": ("cbam", {"reduction": 4}),
            "CBAM (r=4, k=3)": ("cbam", {"reduction": 4, "kernel_size": 3}),
            "MHSA": ("mhsa", {"heads": 2}),
            "Non-local (Xavier)": ("nonlocal", {"init": "xavier"}),
            "GC (r=4)": ("gc", {"reduction": 4}),
        },
        widths=(16, 32, 32),
        network_kwargs={"pool_every": 2, "attn_blocks": [1]},
    ),
    # Part IV: Part III's task and network, softmax attention against the linear-time forms
    "linear": Protocol(
        name="linear",
        task="same_shapes",
        task_kwargs={"n_train": 1500, "n_test": 1000, "seed": 0},
        variants={
            "baseline": (None, {}),
            "CBAM (r=4)": ("cbam", {"reduction": 4}),
            "MHSA": ("mhsa", {"heads": 2}),
            "Linear": ("linear", {"heads": 2}),
            "External": ("external", {}),
            "FLatten": ("flatten", {"heads": 2}),
            # the rank-restoring depthwise convolution removed: focusing alone
            "FLatten (no DWC)": ("flatten", {"heads": 2, "kernel_size": None}),
            # and the focusing removed too (f_1 is the identity): the ReLU kernel alone, which differs
            # from "Linear" only in the feature map (ReLU for elu + 1; same projections and initial weights)
            "FLatten (p = 1, no DWC)": ("flatten", {"heads": 2, "focusing_factor": 1, "kernel_size": None}),
        },
        widths=(16, 32, 32),
        network_kwargs={"pool_every": 2, "attn_blocks": [1]},
    ),
    # Part III's "where" chapter (chapters/selfattn/where.md): a question about relative position
    # (data.side_by_side: two copies of a plus, 9 apart on an 18 x 18 torus, side by side or one
    # above the other). Part III's widths with circular padding (no border to locate a shape by)
    # and no pooling: three 3 x 3 convolutions see 7 x 7, and a window that holds a pixel of each
    # copy spans 8 or more. Attention after the second block, at full resolution (324 tokens).
    # Global statistics and attention without positions should stay at chance; attention with a
    # position term in its logits need not. MHSA has 4 heads here: the course's relative bias
    # learned the task with 4 heads in both seeds tried (0 and 1), a scratch torus-offset bias
    # with 2 heads in 1 of 2 (chapters/selfattn/where.md, "What did not work").
    "where": Protocol(
        name="where",
        task="side_by_side",
        task_kwargs={"n_train": 1500, "n_test": 1000, "seed": 0, "size": 18, "distance": 9},
        variants={
            "baseline": (None, {}),
            "SE (r=4)": ("se", {"reduction": 4}),
            "CBAM (r=4)": ("cbam", {"reduction": 4}),
            "Coordinate": ("coord", {}),
            "GC (r=4)": ("gc", {"reduction": 4}),
            "Non-local (Xavier)": ("nonlocal", {"init": "xavier"}),
            "DANet": ("danet", {}),
            "CCNet": ("ccnet", {}),
            "MHSA": ("mhsa", {"heads": 4}),
            "MHSA (sine)": ("mhsa", {"heads": 4, "position": "sine"}),
            "MHSA (relative)": ("mhsa", {"heads": 4, "position": "relative", "size": [18, 18]}),
            "MHSA (learned)": ("mhsa", {"heads": 4, "position": "learned", "size": [18, 18]}),
            # the controls: W^O started as nn.Linear starts it instead of at zero (the course's identity
            # start), so that W^Q, W^K and the bias get a gradient from the first step
            "MHSA (sine, W^O random)": ("mhsa", {"heads": 4, "position": "sine", "identity_init": False}),
            "MHSA (relative, W^O random)": ("mhsa", {"heads": 4, "position": "relative", "size": [18, 18],
                                                     "identity_init": False}),
            "MHSA (learned, W^O random)": ("mhsa", {"heads": 4, "position": "learned", "size": [18, 18],
                                                    "identity_init": False}),
            "External": ("external", {}),
            "Linear": ("linear", {"heads": 2}),
            "Linear (sine)": ("linear", {"heads": 2, "position": "sine"}),
            "FLatten": ("flatten", {"heads": 2}),
            "FLatten (key position)": ("flatten", {"heads": 2, "key_position": [18, 18]}),
            # the controls: FLatten's 5 x 5 depthwise convolution widens a unit's window from 5 to 9
            # pixels, past the 8 that hold both copies; without it, is FLatten blind again?
            "FLatten (no DWC)": ("flatten", {"heads": 2, "kernel_size": None}),
            "FLatten (key position, no DWC)": ("flatten", {"heads": 2, "key_position": [18, 18], "kernel_size": None}),
        },
        widths=(16, 32, 32),
        network_kwargs={"pool_every": 0, "attn_blocks": [1], "padding_mode": "circular"},
        in_channels=1,
        networks=("MHSA (relative)",),  # the chapter's pictures and exercise 3
    ),
    # Part V, local attention, on a task where locality matters: Part II's cued_bars (the orientation
    # of the cued bar among five distractors, 16 x 16), Part III's network shape with one attention
    # module after the second block's BN (32 channels at full resolution, 256 tokens). Windows of
    # M = 6 (padded to 18 x 18: 9 windows), two heads of width 16 for the modules that have heads.
    "local": Protocol(
        name="local",
        task="cued_bars",
        task_kwargs={"n_train": 1500, "n_test": 1000, "seed": 0},
        variants={
            "baseline": (None, {}),
            "CBAM (r=4)": ("cbam", {"reduction": 4}),
            "MHSA": ("mhsa", {"heads": 2}),
            "Window (M=6)": ("window", {"window_size": 6, "heads": 2}),
            "Outlook": ("outlook", {"heads": 2}),
            "CoT": ("cot", {}),
            "HAB (M=6)": ("hab", {"window_size": 6, "heads": 2}),
            "OCAB (M=6)": ("ocab", {"window_size": 6, "heads": 2}),
            "MaSA": ("masa", {"heads": 2}),
            "MaSA (decomposed)": ("masa", {"heads": 2, "decomposed": True}),
        },
        widths=(16, 32),
        network_kwargs={"attn_blocks": [1]},
        networks=("Window (M=6)", "Outlook", "CoT", "HAB (M=6)", "OCAB (M=6)", "MaSA"),  # the chapters' pictures
    ),
    # Part V on the relational question of Part III's "where" chapter (same task, network and budget
    # as the protocol "where"): can a module that looks locally still tell side by side from one
    # above the other, 9 pixels apart on an 18 x 18 torus? Windows of M = 6 (3 x 3 windows) and, as
    # the control, M = 18 (one window: the whole map, MHSA with Swin's relative bias); four heads as
    # Part III's MHSA (relative), which is here again as the reference (its runs and the baseline's
    # are those of the protocol "where": the same task, network, budget and seeds).
    "local_where": Protocol(
        name="local_where",
        task="side_by_side",
        task_kwargs={"n_train": 1500, "n_test": 1000, "seed": 0, "size": 18, "distance": 9},
        variants={
            "baseline": (None, {}),
            "MHSA (relative)": ("mhsa", {"heads": 4, "position": "relative", "size": [18, 18]}),
            "Window (M=6)": ("window", {"window_size": 6, "heads": 4}),
            "Window (M=18)": ("window", {"window_size": 18, "heads": 4}),
            "Outlook": ("outlook", {"heads": 4}),
            "CoT": ("cot", {}),
            "HAB (M=6)": ("hab", {"window_size": 6, "heads": 4}),
            "OCAB (M=6)": ("ocab", {"window_size": 6, "heads": 4}),
            "MaSA": ("masa", {"heads": 4}),
            "MaSA (decomposed)": ("masa", {"heads": 4, "decomposed": True}),
        },
        widths=(16, 32, 32),
        network_kwargs={"pool_every": 0, "attn_blocks": [1], "padding_mode": "circular"},
        in_channels=1,
        networks=("Window (M=6)", "Window (M=18)", "Outlook", "CoT", "HAB (M=6)", "OCAB (M=6)", "MaSA",
                  "MaSA (decomposed)"),  # the side-by-side chapter's pictures
    ),
    # Part VI, attention inside transformer blocks, on a task a tiny ViT learns within a CPU budget:
    # scikit-learn's 8 x 8 digits (10 classes, 1,258 training images). TinyViT: 2 x 2 patches (16
    # tokens of width 32), two blocks of 4 heads with MLPs of width 64, learned positions, mean
    # pooling; every Part VI block takes the same slot. TinyNet (16, 32) with the best modules of
    # Parts I-V after its second block, MobileViT's block there too. Twenty epochs at lr 3e-3 for
    # every variant (ViTs learn slowly: 10 epochs left the ViT at 0.80, seed 0). Every network is
    # also tested on noisy and blurred copies of the test set: FAN's claim is robustness.
    "blocks": Protocol(
        name="blocks",
        task="digits",
        task_kwargs={"seed": 0},
        variants={
            "TinyNet": (None, {}),
            "TinyNet + CBAM": ("cbam", {"reduction": 4}),
            "TinyNet + CoT": ("cot", {}),
            "TinyNet + MaSA": ("masa", {"heads": 2}),
            "TinyNet + MobileViT": ("mobilevit", {"heads": 4, "mlp_ratio": 2}),
            **_TINYVIT_VARIANTS,
        },
        widths=(16, 32),
        epochs=20,
        lr=3e-3,
        network_kwargs={"attn_blocks": [1]},
        in_channels=1,
        num_classes=10,
        vit_kwargs={"size": [8, 8], "patch": 2, "dim": 32, "depth": 2, "block_kwargs": {"heads": 4, "mlp_ratio": 2}},
        corruptions={"noise 0.25": ("noise", 0.25), "noise 0.5": ("noise", 0.5), "blur 1": ("blur", 1.0)},
        networks=("ViT", "FAN", "ViT (PyTorch start)", "ReViT", "MUSE", "TinyNet + MobileViT"),
    ),
    # Part VI on Part III's relational question (side_by_side, 9 apart on an 18 x 18 torus): TinyViT
    # with 3 x 3 patches (36 tokens; with 2 x 2 patches, 81 tokens, the ViT stayed at chance in 20
    # epochs, seed 0), Part III's circular TinyNet with Part V's best module there (Window, M = 6,
    # 5 seeds of 5 in local_where) as the reference. The same budget for all: 20 epochs at lr 3e-3.
    "blocks_where": Protocol(
        name="blocks_where",
        task="side_by_side",
        task_kwargs={"n_train": 1500, "n_test": 1000, "seed": 0, "size": 18, "distance": 9},
        variants={
            "TinyNet": (None, {}),
            "TinyNet + Window (M=6)": ("window", {"window_size": 6, "heads": 4}),
            "TinyNet + MobileViT": ("mobilevit", {"heads": 4, "mlp_ratio": 2}),
            **_TINYVIT_VARIANTS,
        },
        widths=(16, 32, 32),
        epochs=20,
        lr=3e-3,
        network_kwargs={"pool_every": 0, "attn_blocks": [1], "padding_mode": "circular"},
        in_channels=1,
        vit_kwargs={"size": [18, 18], "patch": 3, "dim": 32, "depth": 2, "block_kwargs": {"heads": 4, "mlp_ratio": 2}},
        networks=("ViT", "FAN", "ViT (PyTorch start)", "ReViT", "MUSE", "TinyNet + Window (M=6)", "TinyNet + MobileViT"),
    ),
    # The control for blocks_where's "ViT (no positions)": the copies 8 apart instead of 9. At 9, a
    # multiple of the 3 x 3 patches, both copies are cut by the patch grid at the same phase along
    # the axis that gives the label (and at phases up to 2 apart along the other, the jitter), so
    # the set of patches can carry the answer without any position; at 8 the phases differ along
    # both axes. Same network and budget as blocks_where.
    "blocks_phase": Protocol(
        name="blocks_phase",
        task="side_by_side",
        task_kwargs={"n_train": 1500, "n_test": 1000, "seed": 0, "size": 18, "distance": 8},
        variants={v: _TINYVIT_VARIANTS[v] for v in ("ViT", "ViT (no positions)")},
        epochs=20,
        lr=3e-3,
        in_channels=1,
        vit_kwargs={"size": [18, 18], "patch": 3, "dim": 32, "depth": 2, "block_kwargs": {"heads": 4, "mlp_ratio": 2}},
    ),
    # The closing part's experiment at network scale: the CIFAR ResNet-20 (0.27 M parameters) on
    # 32 x 32 colour scenes (which glyph is the red one, and in which half: 8 classes, four
    # distractor glyphs, clutter strokes, noise 0.4), ten frequently used modules in every residual
    # block with their papers' defaults (EMA with 8 groups: its default 32 needs 32 channels, the
    # first stage has 16; Non-local in the last stage only, as its paper adds it to late stages),
    # three seeds. 8 epochs at lr 3e-3 (the baseline reached 0.78 at seed 0 in a trial run, 0.93
    # at noise 0.3: room for a module to help, and about 60 s per run).
    "networks": Protocol(
        name="networks",
        task="cluttered_scenes",
        task_kwargs={"n_train": 3000, "n_test": 1000, "noise": 0.4, "seed": 0},
        variants={
            "ResNet-20": (None, {}),
            "SE": ("se", {}),
            "ECA": ("eca", {}),
            "CBAM": ("cbam", {}),
            "Coordinate": ("coord", {}),
            "SimAM": ("simam", {}),
            "Triplet": ("triplet", {}),
            "EMA (G=8)": ("ema", {"factor": 8}),
            "GC": ("gc", {}),
            "Non-local (stage 3)": ("nonlocal", {}),
            "External": ("external", {}),
        },
        widths=(),
        epochs=8,
        lr=3e-3,
        in_channels=3,
        num_classes=8,
        net="resnet20",
        stages={"Non-local (stage 3)": (2,)},
        networks=("CBAM",),  # the network the chapter reads (its spatial gate)
    ),
}


def _history_doc(h: History) -> dict[str, Any]:
    doc: dict[str, Any] = {"train_loss": h.train_loss, "test_acc": h.test_acc, "seconds": h.seconds}
    if h.corrupted:
        doc["corrupted"] = h.corrupted
    return doc


def _seed0_weights(result: Comparison, name: str) -> dict[str, dict[str, torch.Tensor]]:
    """The first seed's weights of the kept networks that protocol ``name`` stores (its ``networks``)."""
    keep = protocol(name).networks
    return {v: {k: t.detach().clone() for k, t in ms[0].state_dict().items()}
            for v, ms in result.models.items() if keep is None or v in keep}


def protocol(name: str) -> Protocol:
    """The protocol of a part: ``"channel"`` (Part I), ``"hybrid"`` and ``"hybrid2"`` (Part II), ``"selfattn"`` and
    ``"selfattn_far"`` and ``"where"`` (Part III), ``"linear"`` (Part IV), ``"local"`` and ``"local_where"`` (Part V),
    ``"blocks"``, ``"blocks_where"`` and ``"blocks_phase"`` (Part VI), ``"networks"`` (Part VII)."""
    if name not in PROTOCOLS:
        raise ValueError(f"experiments expected a protocol in {sorted(PROTOCOLS)}, got {name!r}")
    return PROTOCOLS[name]


def run(name: str, seeds: Sequence[int] = (0, 1, 2, 3, 4), variants: Sequence[str] | None = None,
        progress: bool = True, keep_models: bool = False) -> Comparison:
    """Train the protocol's variants (all, or those named) with every seed (``keep_models``: keep
    the trained networks in ``Comparison.models``, for :func:`save` to store the first seed's)."""
    p = protocol(name)
    chosen = list(p.variants) if variants is None else list(variants)
    data = p.data()
    result = compare({v: p.network(v) for v in chosen}, data, seeds=seeds, progress=progress,
                     keep_models=keep_models or bool(p.corruptions), **p.fit_kwargs())
    if p.corruptions:  # every trained network on every corrupted test set (History.corrupted)
        tests = p.corrupted_tests(data)
        for v in chosen:
            for model, h in zip(result.models[v], result.histories[v]):
                h.corrupted = {c: evaluate(model, x, data.y_test) for c, x in tests.items()}
        if not keep_models:
            result.models.clear()
    return result


def results_path(name: str) -> Path:
    """Where the package stores the results of protocol ``name``."""
    return Path(str(resources.files("attncourse") / "results" / f"{name}.json"))


def models_path(name: str) -> Path:
    """Where the package stores the trained networks (first seed) of protocol ``name``."""
    return results_path(name).with_suffix(".models.pt")


def save(result: Comparison, name: str, path: str | Path | None = None) -> Path:
    """Write ``result`` of protocol ``name`` as JSON, with the protocol and the machine it ran on.

    If ``result`` kept its models (``run(..., keep_models=True)``), the first seed's trained
    weights (of the protocol's ``networks``, or all) are written beside it (``<name>.models.pt``),
    for :func:`load_model`: pictures of what the networks learned, without training them again in
    a chapter.
    """
    path = Path(path) if path is not None else results_path(name)
    weights = _seed0_weights(result, name) if result.models else {}
    if weights:
        torch.save({"seed": result.seeds[0], "weights": weights}, path.with_suffix(".models.pt"))
    doc = {
        "protocol": protocol(name).describe(),
        "seeds": result.seeds,
        "parameters": result.parameters,
        "histories": {k: [_history_doc(h) for h in hs]
                      for k, hs in result.histories.items()},
        "machine": machine(),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def machine() -> dict[str, Any]:
    """What a stored run records of the machine: torch, the training threads, the CPU's instruction set."""
    return {"torch": torch.__version__, "threads": TRAIN_THREADS, "cpu_capability": cpu_capability(),
            "numerics": numerics_fingerprint(),
            "processor": platform.processor() or platform.machine(), "python": platform.python_version(),
            "date": datetime.date.today().isoformat()}


def merge(result: Comparison, name: str, path: str | Path | None = None) -> Path:
    """Add (or replace) the variants of ``result`` in the stored results of protocol ``name``.

    The stored file must hold the same seeds and, for every variant it keeps, the current
    protocol's settings; the new variants must be in the current protocol. Their seed-0 networks
    join ``<name>.models.pt`` if ``result`` kept them. The file then describes the current protocol,
    and records under ``machine["merged"]`` which variants were added on which machine.
    """
    path = Path(path) if path is not None else results_path(name)
    doc = json.loads(path.read_text(encoding="utf-8"))
    p = protocol(name)
    if list(doc["seeds"]) != list(result.seeds):
        raise ValueError(f"experiments.merge expected the stored seeds {doc['seeds']}, got {result.seeds}")
    now = json.loads(json.dumps(p.describe()))
    kept = [v for v in doc["histories"] if v not in result.histories]
    for v in kept:
        if v not in now["variants"] or doc["protocol"]["variants"].get(v) != now["variants"][v]:
            raise ValueError(f"experiments.merge: the stored variant {v!r} is not the current protocol's: "
                             f"re-run the whole protocol `python -m attncourse.experiments {name}`")
    same = {k: v for k, v in now.items() if k != "variants"} == {k: v for k, v in doc["protocol"].items() if k != "variants"}
    if not same:
        raise ValueError(f"experiments.merge: the stored {name!r} protocol differs from the current one beyond its variants: "
                         f"re-run the whole protocol `python -m attncourse.experiments {name}`")
    missing = set(now["variants"]) - set(kept) - set(result.histories)
    if missing:
        raise ValueError(f"experiments.merge: variants {sorted(missing)} would have no runs; name them too")
    order = list(now["variants"])
    hist = {v: doc["histories"][v] for v in kept}
    hist.update({k: [_history_doc(h) for h in hs]
                 for k, hs in result.histories.items()})
    params = {**{v: doc["parameters"][v] for v in kept}, **result.parameters}
    doc["protocol"] = now
    doc["histories"] = {v: hist[v] for v in order}
    doc["parameters"] = {v: params[v] for v in order}
    doc.setdefault("machine", {}).setdefault("merged", []).append({"variants": list(result.histories), **machine()})
    if result.models:
        mpath = path.with_suffix(".models.pt")
        stored = torch.load(mpath, map_location="cpu", weights_only=True) if mpath.exists() else {"seed": result.seeds[0], "weights": {}}
        stored["weights"].update(_seed0_weights(result, name))
        keep = p.networks
        stored["weights"] = {v: stored["weights"][v] for v in order if v in stored["weights"] and (keep is None or v in keep)}
        torch.save(stored, mpath)
    path.write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


@dataclass
class Stored:
    """Results loaded from disk: the comparison, the protocol it was run with, and the machine."""

    result: Comparison
    protocol: dict[str, Any]
    machine: dict[str, Any] = field(default_factory=dict)

    def machine_of(self, variant: str) -> dict[str, Any]:
        """The machine that ran ``variant``'s runs: the file's, or the one that merged them in."""
        for entry in reversed(self.machine.get("merged", [])):
            if variant in entry["variants"]:
                return entry
        return self.machine

    def repeats_here(self, variant: str) -> bool:
        """Whether a live run of ``variant`` should repeat its stored runs bit for bit here: the
        machine that stored them rounded a training step as this one does
        (:func:`attncourse.train.numerics_fingerprint`) with the same torch. Training pins the
        thread count, so the caller's thread count does not matter."""
        m = self.machine_of(variant)
        return m.get("torch") == torch.__version__ and m.get("numerics") == numerics_fingerprint()


def load(name: str, path: str | Path | None = None, *, check: bool = True) -> Stored:
    """Load the stored results of protocol ``name``.

    With ``check`` (the default), raise ``ValueError`` if the stored protocol is not the current
    one or a stored parameter count differs from the current code's: such results are stale.
    """
    path = Path(path) if path is not None else results_path(name)
    doc = json.loads(path.read_text(encoding="utf-8"))
    histories = {k: [History(h["train_loss"], h["test_acc"], h["seconds"], h.get("corrupted", {})) for h in hs]
                 for k, hs in doc["histories"].items()}
    result = Comparison(doc["seeds"], histories, doc["parameters"])
    if check:
        p = protocol(name)
        if doc["protocol"] != json.loads(json.dumps(p.describe())):
            raise ValueError(f"experiments.load expected results of the current {name!r} protocol, got stale ones in {path}: "
                             f"re-run `python -m attncourse.experiments {name}`")
        for variant, count in doc["parameters"].items():
            now = sum(q.numel() for q in p.network(variant)().parameters())
            if now != count:
                raise ValueError(f"experiments.load expected {variant!r} to have {now:,} parameters as the code does, "
                                 f"got {count:,} in {path}: re-run `python -m attncourse.experiments {name}`")
    return Stored(result, doc["protocol"], doc.get("machine", {}))


def load_model(name: str, variant: str, path: str | Path | None = None) -> nn.Module:
    """The stored network of ``variant`` in protocol ``name``, trained with the first seed, in eval mode.

    Raises ``ValueError`` if nothing is stored for it, or if the stored weights no longer fit the
    current code (then re-run the protocol).
    """
    path = Path(path) if path is not None else models_path(name)
    if not path.exists():
        raise ValueError(f"experiments.load_model expected stored networks in {path}: "
                         f"run `python -m attncourse.experiments {name}`")
    doc = torch.load(path, map_location="cpu", weights_only=True)
    if variant not in doc["weights"]:
        raise ValueError(f"experiments.load_model expected a variant in {sorted(doc['weights'])}, got {variant!r}")
    model = protocol(name).network(variant)()
    try:
        model.load_state_dict(doc["weights"][variant])
    except RuntimeError as err:
        raise ValueError(f"experiments.load_model: the stored {variant!r} network does not fit the current code "
                         f"({str(err).splitlines()[0]}): re-run `python -m attncourse.experiments {name}`") from err
    return model.eval()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m attncourse.experiments", description=__doc__.split("\n")[0])
    parser.add_argument("name", choices=sorted(PROTOCOLS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--out", type=Path, default=None, help="default: the package's results folder")
    parser.add_argument("--keep-models", action="store_true",
                        help="also store the first seed's trained networks (<name>.models.pt), for load_model")
    parser.add_argument("--variants", nargs="+", default=None, help="train only these variants (default: all)")
    parser.add_argument("--merge", action="store_true",
                        help="merge the runs of --variants into the stored results instead of replacing them "
                             "(their seed-0 networks too, if the part stores networks)")
    args = parser.parse_args(argv)
    if args.merge and not args.variants:
        parser.error("--merge needs --variants")
    if args.variants and not args.merge:
        parser.error("without --merge, --variants would store an incomplete protocol: add --merge")
    keep = args.keep_models or (args.merge and models_path(args.name).exists() and args.out is None)
    result = run(args.name, args.seeds, variants=args.variants, keep_models=keep)
    print(result.table())
    if args.merge:
        print("merged into", merge(result, args.name, args.out))
    else:
        print("written to", save(result, args.name, args.out))


if __name__ == "__main__":
    main()
