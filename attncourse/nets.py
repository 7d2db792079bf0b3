"""Networks with a slot for any registered attention mechanism.

``TinyNet`` and ``TinyViT`` are used by the chapters' controlled experiments: the same network,
seeds and budget, with and without the mechanism, so that a difference in accuracy is the
mechanism's. ``resnet20`` (CIFAR) and ``resnet50`` (ImageNet, torchvision's module names) put the
mechanisms into real backbones, where timm's ``attn_layer`` puts them.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence, Union

import torch
import torch.nn.functional as F
from einops import rearrange
from einops.layers.torch import Reduce
from torch import nn

from ._checks import check_choice, check_input, check_positive_int
from ._registry import create, get
from .selfattn.mhsa import sine_position_2d

__all__ = ["ConvBlock", "TinyNet", "TinyViT", "Attn", "BasicBlock", "Bottleneck", "ShortcutA", "ResNet", "resnet20", "resnet50"]

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


class TinyViT(nn.Module):
    """A tiny Vision Transformer: patch embedding, a position code, ``depth`` blocks on the token map,
    LayerNorm, mean pooling and one linear layer (Dosovitskiy et al., ICLR 2021, arXiv:2010.11929).

    The blocks are registered modules on the ``(B, D, H/P, W/P)`` token map, so the ViT block
    (``"vit"``) and Part VI's other blocks (``"fan"``, ``"muse"``, ...) take the same slot, and a
    plug-in of Parts I-V can follow each block (``attn``), as in :class:`TinyNet`. A block class
    whose ``spans_blocks`` attribute is true (ReViT's stack, which passes attention logits from one
    layer to the next) is built once with ``depth=depth`` instead of ``depth`` times.

    Args:
        in_channels: input channels.
        num_classes: output classes.
        size: the input's ``(H, W)``; both divisible by ``patch``.
        patch: P, the patch side (ViT's patch embedding: a P × P convolution with stride P, eq. (1)'s E).
        dim: D, the tokens' width.
        depth: the number of blocks.
        block: a registered block name (default ``"vit"``) or a factory ``dim -> module``.
        block_kwargs: keyword arguments for the block; ``None`` (default): ``{"heads": 4, "mlp_ratio": 2}``,
            the part's setting (four heads of width ``dim / 4``, MLPs of width ``2 · dim``).
        position: ``"learned"`` (default; ViT's E_pos, one D-vector per patch, truncated normal with
            std 0.02 at the start, as timm), ``"sine"`` (DETR's fixed 2-D code,
            :func:`attncourse.selfattn.sine_position_2d`) or ``None`` (no code: the blocks see a set
            of patches).
        attn: an optional plug-in after every block (a registered name or a factory), ``None``: none.
        attn_kwargs: its keyword arguments.

    Pooling: the mean of the final tokens (ViT's ``classifier='gap'`` option) rather than a class
    token, so that every block keeps the ``(B, D, H, W)`` map interface; then a LayerNorm and the
    head. The LayerNorm acts on the mean, as timm's ``fc_norm`` does; the official code's ``'gap'``
    normalises every token and then takes the mean. Shapes: ``(B, C, H, W)`` →
    ``(B, num_classes)``.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        *,
        size: Sequence[int],
        patch: int = 2,
        dim: int = 32,
        depth: int = 2,
        block: Attn = "vit",
        block_kwargs: dict[str, Any] | None = None,
        position: str | None = "learned",
        attn: Attn = None,
        attn_kwargs: dict[str, Any] | None = None,
    ):
        super().__init__()
        self.in_channels = check_positive_int(self, "in_channels", in_channels)
        check_positive_int(self, "num_classes", num_classes)
        self.patch = check_positive_int(self, "patch", patch)
        self.dim = check_positive_int(self, "dim", dim)
        depth = check_positive_int(self, "depth", depth)
        check_choice(self, "position", position, ("learned", "sine", None))
        if not isinstance(size, (tuple, list)) or len(size) != 2:
            raise ValueError(f"TinyViT expected size to be a pair (H, W), got {size!r}")
        self.size = (check_positive_int(self, "size[0] (H)", size[0]), check_positive_int(self, "size[1] (W)", size[1]))
        if self.size[0] % patch or self.size[1] % patch:
            raise ValueError(f"TinyViT expected size divisible by patch={patch}, got size={self.size}")
        self.grid = (self.size[0] // patch, self.size[1] // patch)
        self.position = position
        self.embed = nn.Conv2d(in_channels, dim, patch, stride=patch)  # eq. (1)'s E on every P x P patch
        if position == "learned":
            self.position_embedding = nn.Parameter(torch.empty(1, dim, *self.grid))
            nn.init.trunc_normal_(self.position_embedding, std=0.02)
        elif position == "sine":
            code = rearrange(sine_position_2d(*self.grid, dim), "(h w) c -> 1 c h w", h=self.grid[0])
            self.register_buffer("position_embedding", code, persistent=False)
        if block_kwargs is None:
            block_kwargs = {"heads": 4, "mlp_ratio": 2}
        layers: list[nn.Module] = []
        cls = get(block) if isinstance(block, str) else None
        if cls is not None and getattr(cls, "spans_blocks", False):
            layers.append(cls(dim, depth=depth, **(block_kwargs or {})))
            if attn is not None:
                layers.append(_make_attn(attn, dim, attn_kwargs))
        else:
            for _ in range(depth):
                layers.append(_make_attn(block, dim, block_kwargs))
                if attn is not None:
                    layers.append(_make_attn(attn, dim, attn_kwargs))
        self.blocks = nn.Sequential(*layers)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(self, x, self.in_channels)
        if tuple(x.shape[2:]) != self.size:
            raise ValueError(f"TinyViT was built for inputs of size (H, W) = {self.size}, got {tuple(x.shape[2:])}")
        z = self.embed(x)
        if self.position is not None:
            z = z + self.position_embedding.to(z.dtype)
        z = self.blocks(z)
        return self.head(self.norm(z.mean(dim=(2, 3))))


# ---------------------------------------------------------------------------------------------
# ResNets (He, Zhang, Ren, Sun, "Deep Residual Learning for Image Recognition", CVPR 2016,
# arXiv:1512.03385) with an attention slot. Module names follow torchvision's
# ``torchvision/models/resnet.py`` (conv1, bn1, layer1.0.conv1, ..., layer1.0.downsample.0, fc), so
# that a state dict of torchvision's ResNet-50 loads into ``resnet50()``; torchvision itself is not
# a dependency (it has no CPU build to pin).
# ---------------------------------------------------------------------------------------------


def _slot(attn: Attn, channels: int, kwargs: dict[str, Any] | None) -> nn.Module | None:
    # ``None`` rather than ``nn.Identity()``: without attention the block has exactly torchvision's
    # module names and state-dict keys.
    return None if attn is None else _make_attn(attn, channels, kwargs)


class ShortcutA(nn.Module):
    """He et al.'s option A shortcut (section 3.3, used for CIFAR in section 4.2): the identity,
    subsampled by ``stride`` and padded with zero channels up to ``c_out``. No parameters.

    The new channels are appended after the input's (the paper says only "extra zero entries
    padded"; some CIFAR re-implementations pad half before, half after: the same network up to a
    permutation of the zero channels)."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        if c_out < c_in:
            raise ValueError(f"ShortcutA expected c_out >= c_in, got c_in={c_in}, c_out={c_out}")
        self.c_in, self.c_out, self.stride = c_in, c_out, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, 0, self.c_out - self.c_in))

    def extra_repr(self) -> str:
        return f"{self.c_in}, {self.c_out}, stride={self.stride}"


class BasicBlock(nn.Module):
    """ResNet's basic block: 3×3 conv → BN → ReLU → 3×3 conv → BN → [attention] → + shortcut → ReLU.

    torchvision's ``BasicBlock`` with an attention slot ``attn`` after ``bn2``, before the add
    (where timm's ``attn_layer`` puts it); ``attn`` is ``None`` when empty, so that the module
    names are torchvision's. ``downsample`` maps the input to the branch's shape (``None``: the
    identity)."""

    expansion = 1

    def __init__(self, c_in: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 attn: Attn = None, attn_kwargs: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.attn = _slot(attn, planes, attn_kwargs)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.attn is not None:
            out = self.attn(out)  # after the last BN of the branch, before the add
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.relu(out + shortcut)


class Bottleneck(nn.Module):
    """ResNet's bottleneck block: 1×1 → 3×3 (stride here, "ResNet v1.5" as torchvision) → 1×1 (×4
    channels), each with BN, then [attention] → + shortcut → ReLU.

    torchvision's ``Bottleneck`` with an attention slot ``attn`` after ``bn3``, before the add, on
    the block's ``4 · planes`` output channels (where SE-ResNet and timm's ``attn_layer`` put it);
    ``attn`` is ``None`` when empty."""

    expansion = 4

    def __init__(self, c_in: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 attn: Attn = None, attn_kwargs: dict[str, Any] | None = None) -> None:
        super().__init__()
        c_out = planes * self.expansion
        self.conv1 = nn.Conv2d(c_in, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, c_out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(c_out)
        self.attn = _slot(attn, c_out, attn_kwargs)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.attn is not None:
            out = self.attn(out)  # after the last BN of the branch, before the add
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.relu(out + shortcut)


class ResNet(nn.Module):
    """A ResNet with torchvision's module names: ``conv1``, ``bn1``, ``relu``, [``maxpool``],
    ``layer1`` … ``layerN`` (each an ``nn.Sequential`` of blocks), ``avgpool``, ``fc``.

    Args:
        block: :class:`BasicBlock` or :class:`Bottleneck`.
        layers: blocks per stage, e.g. ``(3, 4, 6, 3)`` for ResNet-50.
        planes: the blocks' inner width per stage (the output width is ``planes · block.expansion``);
            every stage after the first starts with stride 2.
        num_classes: outputs of ``fc``.
        stem: ``"imagenet"`` (7×7/2 conv to 64 channels, BN, ReLU, 3×3/2 max-pool) or ``"cifar"``
            (3×3 conv to ``planes[0]`` channels, BN, ReLU; He et al. section 4.2).
        shortcut: where the shape changes, ``"B"`` (1×1 conv with stride + BN, torchvision's
            ``downsample``) or ``"A"`` (:class:`ShortcutA`, zero padding, no parameters).
        attn, attn_kwargs: a mechanism for every block (a registered name or a factory
            ``channels -> module``), placed after the branch's last BN; ``None``: none.

    Initialisation as torchvision's: Kaiming-normal convolutions (fan-out, ReLU gain), batch norms
    at 1 and 0, PyTorch's default for ``fc``. (The attention modules keep their own starts.)
    Shapes: ``(B, 3, H, W)`` → ``(B, num_classes)``.
    """

    def __init__(self, block: type[BasicBlock] | type[Bottleneck], layers: Sequence[int], planes: Sequence[int], *,
                 num_classes: int, stem: str = "imagenet", shortcut: str = "B",
                 attn: Attn = None, attn_kwargs: dict[str, Any] | None = None) -> None:
        super().__init__()
        check_positive_int(self, "num_classes", num_classes)
        check_choice(self, "stem", stem, ("imagenet", "cifar"))
        check_choice(self, "shortcut", shortcut, ("A", "B"))
        if len(layers) != len(planes) or not layers:
            raise ValueError(f"ResNet expected as many stages in layers as in planes, got {layers!r} and {planes!r}")
        self.in_channels = 3
        if stem == "imagenet":
            c = 64
            self.conv1 = nn.Conv2d(3, c, 7, stride=2, padding=3, bias=False)
        else:
            c = planes[0]
            self.conv1 = nn.Conv2d(3, c, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1) if stem == "imagenet" else None
        for i, (n, p) in enumerate(zip(layers, planes)):
            stride = 1 if i == 0 else 2
            c_out = p * block.expansion
            downsample = None
            if stride != 1 or c != c_out:
                if shortcut == "A":
                    downsample = ShortcutA(c, c_out, stride)
                else:
                    downsample = nn.Sequential(nn.Conv2d(c, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out))
            stage = [block(c, p, stride, downsample, attn, attn_kwargs)]
            stage += [block(c_out, p, 1, None, attn, attn_kwargs) for _ in range(1, n)]
            setattr(self, f"layer{i + 1}", nn.Sequential(*stage))
            c = c_out
        self.num_stages = len(layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c, num_classes)
        for name, m in self.named_modules():
            if ".attn" in f".{name}":
                continue  # an attention module keeps the start its chapter gives it
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(self, x, self.in_channels)
        x = self.relu(self.bn1(self.conv1(x)))
        if self.maxpool is not None:
            x = self.maxpool(x)
        for i in range(self.num_stages):
            x = getattr(self, f"layer{i + 1}")(x)
        return self.fc(torch.flatten(self.avgpool(x), 1))


def resnet20(num_classes: int = 10, attn: Attn = None, attn_kwargs: dict[str, Any] | None = None) -> ResNet:
    """ResNet-20 for 32 × 32 CIFAR images (He et al. 2016, section 4.2, n = 3): a 3×3 conv to 16
    channels, three stages of three :class:`BasicBlock` s at 16, 32 and 64 channels (maps 32, 16
    and 8 pixels wide), global average pooling, ``fc``. Shortcuts: option A (identity, zero-padded
    where the width doubles, :class:`ShortcutA`), as the paper uses on CIFAR, so 269,722 parameters
    at 10 classes (the paper's table: 0.27 M). ``attn`` goes after every block's ``bn2``."""
    return ResNet(BasicBlock, (3, 3, 3), (16, 32, 64), num_classes=num_classes, stem="cifar", shortcut="A",
                  attn=attn, attn_kwargs=attn_kwargs)


def resnet50(num_classes: int = 1000, attn: Attn = None, attn_kwargs: dict[str, Any] | None = None) -> ResNet:
    """ResNet-50 for ImageNet (He et al. 2016, table 1) as torchvision builds it ("v1.5": the stride
    in the 3×3 conv; option B projection shortcuts): the same module names and 25,557,032
    parameters at 1,000 classes. Stages ``layer1`` … ``layer4``: 3, 4, 6, 3 :class:`Bottleneck` s
    with 256, 512, 1024, 2048 output channels at 56, 28, 14, 7 pixels for a 224 input.

    ``attn`` goes after every block's ``bn3``, before the add, as timm's ``attn_layer``:
    ``resnet50(attn="se")`` is SE-ResNet-50 (28,088,024 parameters; Hu et al.: 28.09 M)."""
    return ResNet(Bottleneck, (3, 4, 6, 3), (64, 128, 256, 512), num_classes=num_classes, stem="imagenet",
                  shortcut="B", attn=attn, attn_kwargs=attn_kwargs)
