"""A small convolutional network with a slot for any registered attention mechanism.

Used by the chapters' controlled experiments: the same network, seeds and budget, with and
without the mechanism, so that a difference in accuracy is the mechanism's.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence, Union

import torch
from einops.layers.torch import Reduce
from torch import nn

from ._checks import check_choice, check_input, check_positive_int
from ._registry import create

__all__ = ["ConvBlock", "TinyNet", "Attn"]

#: An attention slot: a registered name, a factory ``channels -> module``, or ``None``.
Attn = Union[str, Callable[[int], nn.Module], None]


def _make_attn(attn: Attn, channels: int, kwargs: dict[str, Any] | None) -> nn.Module:
    if attn is None:
        return nn.Identity()
    if isinstance(attn, str):
        return create(attn, channels, **(kwargs or {}))
    return attn(channels, **(kwargs or {}))


class ConvBlock(nn.Module):
    """3×3 conv → BN → [attention] → ReLU.

    The attention sits after the last batch norm, where SE, ECA and CBAM sit in a ResNet
    bottleneck (after ``bn3``, before the residual add).
    """

    def __init__(self, c_in: int, c_out: int, attn: Attn = None, attn_kwargs: dict[str, Any] | None = None,
                 padding_mode: str = "zeros"):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, 3, padding=1, bias=False, padding_mode=padding_mode)
        self.bn = nn.BatchNorm2d(c_out)
        self.attn = _make_attn(attn, c_out, attn_kwargs)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.attn(self.bn(self.conv(x))))


class TinyNet(nn.Module):
    """Conv blocks with optional attention, then global average pooling and one linear layer.

    The head is linear on purpose: whatever the task needs beyond a linear read-out of pooled
    features must be computed by the blocks (and their attention).

    Args:
        in_channels: input channels.
        num_classes: output classes.
        widths: channels of each block.
        attn: a registered mechanism name (``"se"``, ...), a factory ``channels -> module``
            (for variants built in a chapter), or ``None`` for the baseline.
        attn_kwargs: keyword arguments for the mechanism (e.g. ``{"reduction": 4}``).
        pool_every: insert a 2×2 max-pool after every this many blocks (0: never).
        padding_mode: the convolutions' padding, ``"zeros"`` (default) or ``"circular"``. Zero
            padding lets a convolution tell how far a pixel is from the border, so a network
            that should see only *relative* positions (``data.side_by_side``) uses
            ``"circular"``: the image is then a torus with no border, and the blocks are exactly
            equivariant to circular shifts. (Attention modules keep their own padding.)
        attn_blocks: the indices of the blocks that get the attention module (``None``: every
            block). Attention over all positions costs N² per image, so Parts III and IV put it
            in one block only: ``widths=(16, 32, 32), pool_every=2, attn_blocks=[1]``, the second
            block, at the input's full resolution, before the first pooling (the protocols in
            :mod:`attncourse.experiments`). The papers put non-local blocks in later stages of
            much larger networks; here the one block must see the whole map the task is posed on.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        *,
        widths: Sequence[int] = (16, 32),
        attn: Attn = None,
        attn_kwargs: dict[str, Any] | None = None,
        pool_every: int = 0,
        attn_blocks: Sequence[int] | None = None,
        padding_mode: str = "zeros",
    ):
        super().__init__()
        self.in_channels = check_positive_int(self, "in_channels", in_channels)
        check_positive_int(self, "num_classes", num_classes)
        check_choice(self, "padding_mode", padding_mode, ("zeros", "circular"))
        if attn_blocks is not None and not all(isinstance(i, int) and -len(widths) <= i < len(widths) for i in attn_blocks):
            raise ValueError(f"TinyNet expected attn_blocks to index its {len(widths)} blocks, got {attn_blocks!r}")
        chosen = None if attn_blocks is None else {i % len(widths) for i in attn_blocks}
        layers: list[nn.Module] = []
        c = in_channels
        for i, w in enumerate(widths):
            here = chosen is None or i in chosen
            layers.append(ConvBlock(c, w, attn if here else None, attn_kwargs if here else None, padding_mode))
            if pool_every and (i + 1) % pool_every == 0 and i + 1 < len(widths):
                layers.append(nn.MaxPool2d(2))
            c = w
        self.features = nn.Sequential(*layers)
        self.pool = Reduce("b c h w -> b c", "mean")
        self.head = nn.Linear(c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(self, x, self.in_channels)
        return self.head(self.pool(self.features(x)))
