"""A seeded, deterministic training loop sized for a 2-core CPU, and multi-seed comparisons."""

from __future__ import annotations

import contextlib
import math
import random
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from .data import Split

__all__ = ["TRAIN_THREADS", "seed_everything", "pinned_threads", "cpu_capability", "numerics_fingerprint", "History", "fit", "evaluate",
           "compare", "Comparison"]

#: The number of torch threads every training run uses, whatever the caller's setting; the number
#: the stored results (``attncourse/results``) were made with. A CPU kernel splits its sums over
#: the threads it has, so the same seed rounds differently at 1, 2 or 4 threads, and on a task
#: that is learned or not from one unlucky start, a rounding difference can decide the run (Part
#: III's Non-local, seed 0: 0.725 at 2 threads, 0.516 at 1, 0.501 at 4 before runs were pinned).
#: Pinning makes a reader's run repeat the stored one on any core count (same CPU instruction set).
TRAIN_THREADS = 2


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch, so a run is repeatable (same CPU instruction set, same threads)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def cpu_capability() -> str:
    """The instruction set torch's CPU kernels use here (``"AVX512"``, ``"AVX2"``, ``"DEFAULT"``...):
    with the thread count, what decides how a kernel rounds. ``ATEN_CPU_CAPABILITY`` can lower it."""
    return str(torch.backends.cpu.get_cpu_capability())


def numerics_fingerprint(threads: int | None = None) -> str:
    """A short hash of how this machine rounds a training step: three Adam steps of a small
    network with convolutions, batch norm, a linear layer and softmax attention (the kernels the
    parts' protocols use), at ``threads`` threads (default :data:`TRAIN_THREADS`).

    Two machines with the same fingerprint ran those kernels bit for bit alike, so a stored run
    most likely repeats on them exactly; a different fingerprint says that this CPU (its
    instruction set, or its cache sizes, which oneDNN's and MKL's kernels tile their sums by)
    rounds differently, and a seed's run can end elsewhere. Takes about 0.1 s.
    """
    import hashlib

    from .nets import TinyNet

    with pinned_threads(TRAIN_THREADS if threads is None else threads), torch.random.fork_rng():
        torch.manual_seed(0)
        net = TinyNet(2, 2, widths=(16, 32, 32), attn="mhsa", attn_kwargs={"heads": 2}, pool_every=2, attn_blocks=[1])
        with torch.no_grad():  # start the attention branch away from its zero init, so it is exercised
            for p in net.parameters():
                if p.abs().sum() == 0 and p.dim() > 1:
                    p.normal_(std=0.1)
        opt = torch.optim.Adam(net.parameters(), lr=1e-2)
        x, y = torch.randn(64, 2, 12, 12), torch.randint(0, 2, (64,))
        for _ in range(3):
            loss = nn.functional.cross_entropy(net(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        flat = torch.cat([p.detach().reshape(-1) for p in net.parameters()] + [loss.detach().reshape(1)])
    return hashlib.sha256(flat.numpy().tobytes()).hexdigest()[:16]


@contextlib.contextmanager
def pinned_threads(threads: int | None) -> Iterator[None]:
    """Run the block with ``torch.set_num_threads(threads)``, then restore the caller's count
    (``None``: leave the count alone)."""
    if threads is None:
        yield
        return
    if not isinstance(threads, int) or isinstance(threads, bool) or threads < 1:
        raise ValueError(f"pinned_threads expected a positive int or None, got {threads!r}")
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@dataclass
class History:
    """Per-epoch training loss and test accuracy of one run."""

    train_loss: list[float] = field(default_factory=list)
    test_acc: list[float] = field(default_factory=list)
    seconds: float = 0.0
    #: accuracy on corrupted copies of the test set after training, by corruption name (protocols
    #: with ``corruptions``; see :func:`attncourse.experiments.run`)
    corrupted: dict[str, float] = field(default_factory=dict)

    @property
    def final_acc(self) -> float:
        return self.test_acc[-1] if self.test_acc else math.nan


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, batch_size: int = 512) -> float:
    """Accuracy of ``model`` on ``(x, y)``, in eval mode."""
    was_training = model.training
    model.eval()
    correct = 0
    for i in range(0, len(y), batch_size):
        correct += (model(x[i : i + batch_size]).argmax(1) == y[i : i + batch_size]).sum().item()
    model.train(was_training)
    return correct / len(y)


class _Progress:
    """One line per run. In a terminal it is rewritten in place (``\\r``); in Jupyter it is a
    display that is updated, so a notebook keeps only the run's final line in its output."""

    def __init__(self, label: str, epochs: int) -> None:
        self.label, self.epochs, self.handle = label, epochs, None
        try:
            from IPython import get_ipython
            from IPython.display import Pretty, display
        except ImportError:  # pragma: no cover - IPython ships with Jupyter
            return
        shell = get_ipython()
        if shell is not None and "IPKernelApp" in shell.config:
            self.handle = display(Pretty(self._text(0, math.nan, math.nan)), display_id=True)

    def _text(self, epoch: int, loss: float, acc: float) -> str:
        bar = "#" * epoch + "." * (self.epochs - epoch)
        return f"{self.label:<24} [{bar}] epoch {epoch}/{self.epochs}  loss {loss:.3f}  test acc {acc:.3f}"

    def update(self, epoch: int, loss: float, acc: float) -> None:
        if self.handle is not None:
            from IPython.display import Pretty

            self.handle.update(Pretty(self._text(epoch, loss, acc)))
        else:
            sys.stdout.write(self._text(epoch, loss, acc) + ("\n" if epoch == self.epochs else "\r"))
            sys.stdout.flush()


def fit(
    model_fn: Callable[[], nn.Module],
    data: Split,
    *,
    seed: int = 0,
    epochs: int = 8,
    batch_size: int = 64,
    lr: float = 3e-3,
    weight_decay: float = 0.0,
    progress: bool | str = True,
    track: bool = True,
    threads: int | None = TRAIN_THREADS,
    stop_after: int | None = None,
) -> tuple[nn.Module, History]:
    """Build a model with ``model_fn`` under ``seed`` and train it with Adam.

    The seed fixes the initial weights and the order of the batches, and the run uses
    ``threads`` torch threads (default :data:`TRAIN_THREADS`, the count the stored results were
    made with; the caller's count is restored afterwards), so two runs with the same seed give the
    same numbers on any machine with the same CPU instruction set (:func:`cpu_capability`),
    whatever its number of cores. The learning rate follows a cosine decay.

    Args:
        model_fn: builds a fresh model (called after seeding).
        data: the task.
        progress: ``False`` for silence, ``True`` or a label string for a one-line progress
            display that is overwritten each epoch.
        track: evaluate on the test set after every epoch (``History.test_acc`` has one value
            per epoch). ``False`` evaluates only after the last epoch, which saves about a sixth
            of the time; the trained model is the same, since evaluation changes nothing.
        threads: torch threads for the run (``None``: the caller's setting, unpinned).
        stop_after: train only the first ``stop_after`` epochs of the ``epochs``-epoch schedule
            (the learning rate follows the whole schedule), which repeat those epochs of the full
            run exactly: a cheap check that a stored run still reproduces (``None``: all epochs).

    Returns:
        The trained model (in eval mode) and its :class:`History`.
    """
    if stop_after is not None and (isinstance(stop_after, bool) or not isinstance(stop_after, int)
                                   or not 1 <= stop_after <= epochs):
        raise ValueError(f"fit expected stop_after to be None or an int in [1, epochs={epochs}], got {stop_after!r}")
    with pinned_threads(threads):
        return _fit(model_fn, data, seed=seed, epochs=epochs, batch_size=batch_size, lr=lr,
                    weight_decay=weight_decay, progress=progress, track=track,
                    last=epochs if stop_after is None else stop_after)


def _fit(model_fn, data, *, seed, epochs, batch_size, lr, weight_decay, progress, track, last):
    seed_everything(seed)
    model = model_fn()
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    n = len(data.y_train)
    steps = epochs * math.ceil(n / batch_size)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * s / steps)))
    gen = torch.Generator().manual_seed(seed)
    loss_fn = nn.CrossEntropyLoss()
    hist = History()
    label = progress if isinstance(progress, str) else f"seed {seed}"
    bar = _Progress(label, epochs) if progress else None
    start = time.perf_counter()
    for epoch in range(1, last + 1):
        model.train()
        perm = torch.randperm(n, generator=gen)
        total = 0.0
        for i in range(0, n, batch_size):
            idx = perm[i : i + batch_size]
            loss = loss_fn(model(data.x_train[idx]), data.y_train[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
        hist.train_loss.append(total / n)
        if track or epoch == last:
            hist.test_acc.append(evaluate(model, data.x_test, data.y_test))
        if bar is not None:
            bar.update(epoch, hist.train_loss[-1], hist.test_acc[-1] if hist.test_acc else math.nan)
    hist.seconds = time.perf_counter() - start
    model.eval()
    return model, hist


@dataclass
class Comparison:
    """Final test accuracies of several variants over the same seeds."""

    seeds: list[int]
    histories: dict[str, list[History]]
    parameters: dict[str, int]
    models: dict[str, list[nn.Module]] = field(default_factory=dict)

    def accuracies(self, name: str) -> np.ndarray:
        return np.array([h.final_acc for h in self.histories[name]])

    def mean(self, name: str) -> float:
        return float(self.accuracies(name).mean())

    def std(self, name: str) -> float:
        return float(self.accuracies(name).std(ddof=1)) if len(self.seeds) > 1 else 0.0

    def pick(self, names: Sequence[str] | Mapping[str, str], seeds: Sequence[int] | None = None) -> Comparison:
        """These variants, for these seeds (default: all), with their kept models if any. ``names``
        may map a new name to a variant's name, to label where the runs came from, e.g.
        ``stored.pick({"baseline (stored)": "baseline"}, seeds=(0, 1))``."""
        rename = dict(names) if isinstance(names, Mapping) else {n: n for n in names}
        seeds = list(self.seeds if seeds is None else seeds)
        for name in rename.values():
            if name not in self.histories:
                raise ValueError(f"Comparison.pick expected variants in {list(self.histories)}, got {name!r}")
        if not set(seeds) <= set(self.seeds):
            raise ValueError(f"Comparison.pick expected seeds among {self.seeds}, got {seeds}")
        at = [self.seeds.index(s) for s in seeds]
        return Comparison(
            seeds,
            {new: [self.histories[old][i] for i in at] for new, old in rename.items()},
            {new: self.parameters[old] for new, old in rename.items()},
            {new: [self.models[old][i] for i in at] for new, old in rename.items() if old in self.models},
        )

    def __or__(self, other: Comparison) -> Comparison:
        """The variants of both, ``self``'s first, over the same seeds (as ``dict | dict``)."""
        if list(self.seeds) != list(other.seeds):
            raise ValueError(f"Comparison | Comparison expected the same seeds, got {self.seeds} and {other.seeds}")
        return Comparison(list(self.seeds), {**self.histories, **other.histories},
                          {**self.parameters, **other.parameters}, {**self.models, **other.models})

    def table(self) -> str:
        """A Markdown table: variant, parameters, accuracy per seed, mean ± standard deviation."""
        head = "| variant | parameters | " + " | ".join(f"seed {s}" for s in self.seeds) + " | mean ± sd |"
        rule = "|" + "---|" * (len(self.seeds) + 3)
        rows = [head, rule]
        for name in self.histories:
            accs = " | ".join(f"{a:.3f}" for a in self.accuracies(name))
            rows.append(f"| {name} | {self.parameters[name]:,} | {accs} | {self.mean(name):.3f} ± {self.std(name):.3f} |")
        return "\n".join(rows)

    def _repr_markdown_(self) -> str:
        return self.table()

    def __repr__(self) -> str:
        return self.table()


def compare(
    variants: Mapping[str, Callable[[], nn.Module]],
    data: Split,
    *,
    seeds: Sequence[int] = (0, 1, 2),
    progress: bool = True,
    keep_models: bool = False,
    **fit_kwargs,
) -> Comparison:
    """Train every variant with every seed (same data, same budget) and collect the results.

    With ``keep_models=True`` the trained models are kept in ``Comparison.models[name]`` (one per
    seed, in eval mode), for pictures of what they learned without training them again.
    """
    histories: dict[str, list[History]] = {}
    params: dict[str, int] = {}
    models: dict[str, list[nn.Module]] = {}
    for name, fn in variants.items():
        params[name] = sum(p.numel() for p in fn().parameters())
        runs = [fit(fn, data, seed=s, progress=f"{name} seed {s}" if progress else False, **fit_kwargs) for s in seeds]
        histories[name] = [h for _, h in runs]
        if keep_models:
            models[name] = [m for m, _ in runs]
    return Comparison(list(seeds), histories, params, models)
