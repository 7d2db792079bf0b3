"""Pictures of attention: capture the gates' outputs with hooks, then plot them.

matplotlib is imported only when a plotting function is called.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Sequence

import torch
from torch import nn

from .layers import Gate

__all__ = [
    "capture_gates", "capture_input", "recording", "plot_channel_weights", "plot_spatial_maps", "plot_histories",
    "plot_comparison", "plot_results", "FONT", "add_colorbar", "mark_query", "outline_region",
]

#: The smallest font size (points) of the book's figures, so that labels stay readable when a figure of
#: at most 7.5 inches is shown at the book's page width. Chapters pass it to titles, axis labels,
#: tick labels and colour bars.
FONT = 9


@contextmanager
def recording(model: nn.Module) -> Iterator[dict[str, torch.Tensor]]:
    """Context manager: inside it, every :class:`~attncourse.layers.Gate` of ``model`` records its
    output into the yielded dict, keyed by the gate's qualified name."""
    out: dict[str, torch.Tensor] = {}
    handles = []
    for name, mod in model.named_modules():
        if isinstance(mod, Gate):
            handles.append(mod.register_forward_hook(lambda m, i, o, name=name: out.__setitem__(name or "gate", o.detach())))
    try:
        yield out
    finally:
        for h in handles:
            h.remove()


@torch.no_grad()
def capture_gates(model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Run ``model`` on ``x`` in eval mode and return every gate's output by name."""
    was_training = model.training
    model.eval()
    try:
        with recording(model) as out:
            model(x)
    finally:
        model.train(was_training)
    return out


@torch.no_grad()
def capture_input(model: nn.Module, module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Run ``model`` on ``x`` in eval mode and return the (first) input that ``module``, one of its
    submodules, received: the feature map an attention module attends over, for its
    ``attention(...)`` method."""
    seen: dict[str, torch.Tensor] = {}
    handle = module.register_forward_pre_hook(lambda mod, args: seen.setdefault("x", args[0]))
    was_training = model.training
    model.eval()
    try:
        model(x)
    finally:
        handle.remove()
        model.train(was_training)
    if "x" not in seen:
        raise ValueError(f"capture_input expected {type(module).__name__} to run inside {type(model).__name__}, "
                         "but it never received an input")
    return seen["x"]


def _plt():
    import matplotlib.pyplot as plt

    return plt


def add_colorbar(im, axes, *, label: str, fontsize: int = FONT):
    """A colour bar for the image ``im`` (from ``imshow``), beside ``axes`` (one axis or a list of
    axes sharing its colour scale), labelled with what the colour measures (e.g. "attention
    weight"). Every map in the book gets one: without it a reader cannot tell a weight of 0.9 from
    one of 0.1."""
    fig = im.axes.figure
    cbar = fig.colorbar(im, ax=axes, shrink=0.85, pad=0.02)
    cbar.set_label(label, fontsize=fontsize)
    cbar.ax.tick_params(labelsize=fontsize)
    return cbar


def mark_query(ax, row: float, col: float, *, label: str | None = None, size: float = 9):
    """Mark the query position (``row``, ``col``, in pixel coordinates of the map) with a white
    ``+`` on a black outline, visible on any colour map; ``label`` adds it to the axis' legend."""
    import matplotlib.patheffects as pe

    (line,) = ax.plot(col, row, marker="P", ms=size, color="white", mec="black", mew=1.2, ls="none", label=label,
                      path_effects=[pe.withStroke(linewidth=2.5, foreground="black")])
    return line


def outline_region(ax, row: float, col: float, height: float, width: float, *, color: str = "red", lw: float = 1.5,
                   label: str | None = None):
    """Outline a ``height`` × ``width`` block whose top-left pixel is (``row``, ``col``), e.g. the
    query's own shape or the cue, on an image or a map."""
    import matplotlib.patches as patches

    rect = patches.Rectangle((col - 0.5, row - 0.5), width, height, fill=False, ec=color, lw=lw, label=label)
    ax.add_patch(rect)
    return rect


def plot_channel_weights(weights: torch.Tensor, groups: torch.Tensor | None = None, *, labels: Sequence[str] | None = None,
                         title: str = "", ax=None):
    """Plot channel weights (N, C) as one line per group mean (or per row), channels on x.

    ``groups`` (N,) assigns each row to a group (e.g. its class); each group's mean is drawn
    with a band of ± one standard deviation.
    """
    plt = _plt()
    w = weights.detach().float().cpu()
    if w.dim() != 2:
        raise ValueError(f"plot_channel_weights expected weights of shape (N, C), got {tuple(w.shape)}")
    ax = ax or plt.subplots(figsize=(7, 3))[1]
    c = torch.arange(w.shape[1])
    if groups is None:
        for row in w:
            ax.plot(c, row, lw=0.8)
    else:
        for k, g in enumerate(torch.unique(groups)):
            sel = w[groups == g]
            m, s = sel.mean(0), sel.std(0) if len(sel) > 1 else torch.zeros_like(sel[0])
            lab = labels[k] if labels is not None else f"group {int(g)}"
            ax.plot(c, m, marker="o", ms=3, label=lab)
            ax.fill_between(c, m - s, m + s, alpha=0.2)
        ax.legend(fontsize=FONT)
    ax.set_xlabel("channel")
    ax.set_ylabel("gate value")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(title)
    return ax


def plot_spatial_maps(images: torch.Tensor, maps: torch.Tensor, *, titles: Sequence[str] | None = None,
                      cmap: str = "viridis", suptitle: str = ""):
    """Show each image (N, H, W) above its attention map (N, h, w); maps are resized to the image."""
    plt = _plt()
    images = images.detach().float().cpu()
    maps = maps.detach().float().cpu()
    if maps.dim() == 4:
        maps = maps[:, 0]
    if images.dim() == 4:
        images = images[:, 0] if images.shape[1] == 1 else images.permute(0, 2, 3, 1)
    n = len(maps)
    fig, axes = plt.subplots(2, n, figsize=(1.8 * n, 3.8), squeeze=False)
    for i in range(n):
        axes[0, i].imshow(images[i], cmap="gray" if images[i].dim() == 2 else None)
        im = axes[1, i].imshow(maps[i], cmap=cmap, vmin=0, vmax=1)
        if titles is not None:
            axes[0, i].set_title(titles[i], fontsize=FONT)
        for a in axes[:, i]:
            a.set_xticks([]), a.set_yticks([])
    axes[0, 0].set_ylabel("input", fontsize=FONT)
    axes[1, 0].set_ylabel("attention", fontsize=FONT)
    add_colorbar(im, axes[1, :].tolist(), label="gate value")
    if suptitle:
        fig.suptitle(suptitle)
    return fig


def _colour(k: int, n: int):
    """The k-th of n variants' colour: matplotlib's ten-colour cycle, or tab20 beyond ten variants
    (so no two variants share a colour)."""
    if n <= 10:
        return f"C{k}"
    plt = _plt()
    return plt.get_cmap("tab20")(k % 20)


def plot_histories(comparison, *, ax=None, title: str = "test accuracy per epoch"):
    """Test accuracy per epoch for every variant of a :class:`~attncourse.train.Comparison`,
    one thin line per seed and a thick line for the mean."""
    plt = _plt()
    import numpy as np

    ax = ax or plt.subplots(figsize=(6, 3.5))[1]
    n = len(comparison.histories)
    for k, (name, hists) in enumerate(comparison.histories.items()):
        color = _colour(k, n)
        accs = np.array([h.test_acc for h in hists])
        epochs = np.arange(1, accs.shape[1] + 1)
        for a in accs:
            ax.plot(epochs, a, color=color, alpha=0.3, lw=0.8)
        ax.plot(epochs, accs.mean(0), color=color, lw=2, label=f"{name} ({comparison.mean(name):.3f} ± {comparison.std(name):.3f})")
    ax.set_xlabel("epoch")
    ax.set_ylabel("test accuracy")
    ax.set_title(title)
    ax.legend(fontsize=FONT)
    ax.grid(alpha=0.3)
    return ax


def plot_comparison(comparison, *, ax=None, title: str = "final test accuracy over seeds"):
    """Final accuracy of every variant: one dot per seed, a bar for the mean."""
    plt = _plt()
    ax = ax or plt.subplots(figsize=(1.2 + 1.1 * len(comparison.histories), 3.5))[1]
    names = list(comparison.histories)
    for k, name in enumerate(names):
        accs = comparison.accuracies(name)
        ax.bar(k, accs.mean(), color=_colour(k, len(names)), alpha=0.4)
        ax.scatter([k] * len(accs), accs, color=_colour(k, len(names)), zorder=3)
    ax.set_xticks(range(len(names)), names, rotation=20)
    ax.set_ylabel("test accuracy")
    ax.set_title(title)
    ax.grid(alpha=0.3, axis="y")
    return ax


def plot_results(comparison, *, histories_title: str, comparison_title: str = "final test accuracy (dots: seeds)",
                 chance: float | None = 0.5):
    """A comparison's two standard pictures at the book's width (7.5 inches): test accuracy per
    epoch on top (:func:`plot_histories`, its legend beside it), final accuracy per seed below
    (:func:`plot_comparison`), with a dotted line at ``chance``; fonts of at least :data:`FONT`.
    Returns ``(fig, axes)``."""
    plt = _plt()
    n = len(comparison.histories)
    fig, axes = plt.subplots(2, 1, figsize=(7.5, 6.2 + 0.12 * max(0, n - 6)), gridspec_kw={"height_ratios": [1, 1]})
    plot_histories(comparison, ax=axes[0], title=histories_title)
    plot_comparison(comparison, ax=axes[1], title=comparison_title)
    axes[0].legend(fontsize=FONT - 1 if n > 8 else FONT, loc="upper left", bbox_to_anchor=(1.01, 1.02), frameon=False)
    plt.setp(axes[1].get_xticklabels(), rotation=35 if n > 5 else 0, ha="right" if n > 5 else "center")
    if chance is not None:
        axes[1].axhline(chance, color="gray", ls=":", lw=1)
    for ax in axes:
        ax.title.set_fontsize(FONT + 1)
        ax.tick_params(labelsize=FONT)
        ax.xaxis.label.set_fontsize(FONT)
        ax.yaxis.label.set_fontsize(FONT)
    fig.tight_layout()
    return fig, axes
