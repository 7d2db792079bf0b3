"""Put a registered mechanism into a network, where its chapter says it goes.

``attncourse.insert(model, "cbam")`` returns a copy of ``model`` with a CBAM in every block it
finds; ``model`` itself is left as it was. The places it looks for, in every submodule:

===============================================  ===============================================
block                                            where the mechanism goes
===============================================  ===============================================
``attncourse.nets.BasicBlock`` / ``Bottleneck``  the ``attn`` slot: after ``bn2`` / ``bn3``,
                                                 before the shortcut is added (timm's
                                                 ``attn_layer``; SE-ResNet's place)
a residual block with torchvision's or timm's    the same place: the branch's last batch norm
structure (children ``conv1``, ``bn1``,          (``bn3`` if there is a ``conv3``, else ``bn2``)
``conv2``, ``bn2``, optionally ``conv3``,        becomes ``nn.Sequential(bn, mechanism)``, so its
``bn3``, and a ``downsample`` attribute)         parameters are renamed ``bn3.0.*``
``attncourse.nets.ConvBlock`` (``TinyNet``)      the ``attn`` slot: after the BN, before the ReLU
``attncourse.blocks.vit.TransformerBlock``       the ``plugin`` slot (``plugin_at="attention"``):
(``TinyViT``'s ViT blocks)                       on the attention's output, tokens reshaped to
                                                 ``(B, D, H, W)``, before it is added back
===============================================  ===============================================

The inner transformers of MobileViT are not places: their tokens are unfolded patches, not a map.

Stages: the places, in module order, split where the container that holds them (the nearest
``nn.Sequential`` or ``nn.ModuleList``: ResNet's ``layer1`` …) or their width changes. ResNet-50
has four (``layer1`` … ``layer4``), ResNet-20 three, ``TinyNet(widths=(16, 32))`` two, a
``TinyViT`` one. :func:`find_places` lists them.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from torch import nn

from ._registry import create, get

__all__ = ["insert", "find_places", "Place"]

_LOOKED_FOR = (
    "residual blocks with torchvision's or timm's structure (children conv1, bn1, conv2, bn2 "
    "[, conv3, bn3] and a downsample attribute; the mechanism goes after the last batch norm), "
    "attncourse.nets' BasicBlock, Bottleneck and ConvBlock (their attn slot), and "
    "attncourse.blocks.vit.TransformerBlock (its plugin slot, after the attention)"
)


@dataclass(frozen=True)
class Place:
    """One place for a mechanism: the block's qualified ``name`` in the model (``"layer1.0"``),
    its ``kind`` (``"Bottleneck"``, ``"BasicBlock"``, ``"ConvBlock"``, ``"TransformerBlock"``, or
    ``"residual block (after bn3)"`` for a torchvision/timm block), the ``channels`` the mechanism
    sees, its ``stage`` (0-based), its ``index`` in the stage and whether it is the stage's ``last``."""

    name: str
    kind: str
    channels: int
    stage: int
    index: int
    last: bool


def _is_bn(m: object) -> bool:
    return isinstance(m, nn.modules.batchnorm._BatchNorm)


def _foreign_last_bn(m: nn.Module) -> str | None:
    """The name of the last batch norm of a torchvision/timm-style residual block, else ``None``."""
    children = dict(m.named_children())
    if not hasattr(m, "downsample") or not all(k in children for k in ("conv1", "bn1", "conv2")):
        return None
    if "conv3" in children:
        return "bn3" if _is_bn(children.get("bn3")) else None
    return "bn2" if _is_bn(children.get("bn2")) else None


def _recognise(m: nn.Module) -> tuple[str, int] | None:
    """``(kind, channels)`` if ``m`` is a place, else ``None``."""
    from .blocks.vit import TransformerBlock
    from .nets import BasicBlock, Bottleneck, ConvBlock

    if isinstance(m, Bottleneck):
        return "Bottleneck", m.bn3.num_features
    if isinstance(m, BasicBlock):
        return "BasicBlock", m.bn2.num_features
    if isinstance(m, ConvBlock):
        return "ConvBlock", m.bn.num_features
    if isinstance(m, TransformerBlock):
        return "TransformerBlock", m.dim
    bn = _foreign_last_bn(m)
    if bn is not None:
        return f"residual block (after {bn})", getattr(m, bn).num_features
    return None


def _container(name: str, modules: dict[str, nn.Module]) -> str | None:
    parts = name.split(".") if name else []
    for k in range(len(parts) - 1, -1, -1):
        prefix = ".".join(parts[:k])
        if isinstance(modules.get(prefix), (nn.Sequential, nn.ModuleList)):
            return prefix
    return None


def find_places(model: nn.Module) -> list[Place]:
    """Every place :func:`insert` would use in ``model``, in module order, with its stage."""
    from .blocks.mobilevit import MobileViTBlock

    if not isinstance(model, nn.Module):
        raise ValueError(f"attncourse.insert expected an nn.Module, got {type(model).__name__}")
    modules = dict(model.named_modules())
    found: list[tuple[str, str, int]] = []
    skip: list[str] = []
    for name, m in modules.items():
        if any(name.startswith(s) for s in skip):
            continue
        if isinstance(m, MobileViTBlock):  # its transformers see unfolded patches, not a map
            skip.append(f"{name}." if name else "")
            continue
        hit = _recognise(m)
        if hit is not None:
            found.append((name, *hit))
            skip.append(f"{name}." if name else "")  # nothing inside a place is another place
    places: list[Place] = []
    stage, index, key = -1, 0, object()
    for name, kind, channels in found:
        k = (_container(name, modules), channels)
        if k != key:
            stage, index, key = stage + 1, 0, k
        places.append(Place(name, kind, channels, stage, index, False))
        index += 1
    return [
        Place(p.name, p.kind, p.channels, p.stage, p.index, i + 1 == len(places) or places[i + 1].stage != p.stage)
        for i, p in enumerate(places)
    ]


def _describe_stages(places: list[Place]) -> str:
    out = []
    for s in sorted({p.stage for p in places}):
        ps = [p for p in places if p.stage == s]
        out.append(f"{s} = {ps[0].name} … {ps[-1].name} ({len(ps)} blocks, {ps[0].channels} channels)")
    return "; ".join(out)


def _occupant(block: nn.Module, kind: str) -> nn.Module | None:
    if kind == "TransformerBlock":
        return block.plugin
    if kind == "ConvBlock":
        return None if isinstance(block.attn, nn.Identity) else block.attn
    if kind in ("BasicBlock", "Bottleneck"):
        return block.attn
    return None  # a foreign block: its batch norm is wrapped, whatever else it holds


def _place(block: nn.Module, kind: str, module: nn.Module) -> None:
    if kind == "TransformerBlock":
        block.plugin = module
        block.plugin_at = "attention"
    elif kind in ("ConvBlock", "BasicBlock", "Bottleneck"):
        block.attn = module
    else:
        bn_name = _foreign_last_bn(block)
        setattr(block, bn_name, nn.Sequential(getattr(block, bn_name), module))


def insert(
    model: nn.Module,
    name: str | Callable[..., nn.Module],
    *,
    stages: Sequence[int] | None = None,
    blocks: str = "every",
    **kwargs: Any,
) -> nn.Module:
    """A deep copy of ``model`` with the mechanism ``name`` placed where its chapter says it goes.

    Args:
        model: any ``nn.Module`` holding the blocks listed in :mod:`attncourse.insert` (ResNets of
            :mod:`attncourse.nets`, torchvision or timm; ``TinyNet``; ``TinyViT``). It is not changed.
        name: a registered name (``"se"``, ``"cbam"``, …) or a factory ``channels -> module``.
        stages: 0-based indices of the stages to use (ResNet-50: 0 = ``layer1`` … 3 = ``layer4``);
            ``None`` (default): every stage.
        blocks: ``"every"`` (default) block of the chosen stages, or ``"last"``, the last block of
            each (where, e.g., Non-local and GC blocks are often placed in fewer copies).
        **kwargs: the mechanism's own hyperparameters (``reduction=8``), the same at every block.

    Each mechanism is built for its block's width, moved to the block's device and dtype, and set
    to the block's train/eval mode.

    Raises ``ValueError`` where no place is found (saying what it looked for), where a block's
    slot is already taken, for stages the model does not have, and where the mechanism refuses a
    block's width (a divisibility, e.g. heads; the message names the block and its channels).

    >>> import attncourse
    >>> from attncourse.nets import resnet50
    >>> se_resnet = attncourse.insert(resnet50(), "se", reduction=16)
    >>> attncourse.count_parameters(se_resnet)
    28088024
    """
    if not isinstance(name, str) and not callable(name):
        raise ValueError(f"attncourse.insert expected a registered name or a factory channels -> module, got {name!r}")
    label = name if isinstance(name, str) else getattr(name, "__name__", repr(name))
    if isinstance(name, str):
        get(name)  # an unknown name fails here, listing the available ones
    if blocks not in ("every", "last"):
        raise ValueError(f"attncourse.insert expected blocks to be 'every' or 'last', got {blocks!r}")
    places = find_places(model)
    if not places:
        raise ValueError(f"attncourse.insert found no place for {label!r} in {type(model).__name__}: it looks for {_LOOKED_FOR}")
    n_stages = places[-1].stage + 1
    if stages is not None:
        stages = list(stages)
        bad = [s for s in stages if isinstance(s, bool) or not isinstance(s, int) or not 0 <= s < n_stages]
        if bad or not stages:
            raise ValueError(
                f"attncourse.insert expected stages to be indices of {type(model).__name__}'s {n_stages} stages "
                f"({_describe_stages(places)}), got {stages!r}"
            )
    chosen = [p for p in places if (stages is None or p.stage in stages) and (blocks == "every" or p.last)]

    new = copy.deepcopy(model)
    for p in chosen:
        block = new.get_submodule(p.name)
        held = _occupant(block, p.kind)
        if held is not None:
            raise ValueError(
                f"attncourse.insert: block {p.name!r} ({p.kind}) already holds {type(held).__name__}; "
                f"insert places one mechanism per block: start from the network without attention"
            )
        try:
            module = create(name, p.channels, **kwargs) if isinstance(name, str) else name(p.channels, **kwargs)
        except ValueError as err:
            raise ValueError(
                f"attncourse.insert: {label!r} cannot go into block {p.name!r} ({p.kind}) with {p.channels} "
                f"channels: {err}"
            ) from err
        ref = next((t for t in block.parameters() if t.is_floating_point()), None)
        if ref is not None:
            module.to(device=ref.device, dtype=ref.dtype)
        module.train(block.training)
        _place(block, p.kind, module)
    return new
