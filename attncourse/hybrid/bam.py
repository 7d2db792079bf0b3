"""BAM, the Bottleneck Attention Module (Park et al., BMVC 2018). Chapter: ``chapters/hybrid/bam.md``."""

from __future__ import annotations

from collections import OrderedDict

import torch
from einops import reduce
from einops.layers.torch import Rearrange
from torch import nn

from .._checks import check_channels, check_choice, check_input, check_positive_int
from .._registry import register
from ..layers import Gate

__all__ = ["BAM"]


class _AvgPool(nn.Module):
    """AvgPool over H × W written as a sum / (H W): the mean's values, and a backward pass that does
    not divide a full-size gradient (faster; `make bench` times it)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return reduce(x, "b c h w -> b c", "sum") / (x.shape[2] * x.shape[3])


@register("bam")
class BAM(nn.Module):
    r"""BAM: a channel branch and a dilated-conv spatial branch, added, gated, applied residually.

    Paper: J. Park, S. Woo, J.-Y. Lee, I. S. Kweon, "BAM: Bottleneck Attention Module",
    BMVC 2018, arXiv:1807.06514.

    Equations (numbered as in the BMVC 2018 paper, arXiv:1807.06514; the numbers were not
    re-checked against its text)::

        (1) F' = F + F ⊗ M(F)
        (2) M(F) = σ(M_c(F) + M_s(F))                      M_c: (C,1,1) + M_s: (1,H,W) -> (C,H,W)
        (3) M_c(F) = BN(MLP(AvgPool(F))) = BN(W1 δ(W0 AvgPool(F) + b0) + b1)
        (4) M_s(F) = BN(f3^{1×1}(δ f2^{3×3}(δ f1^{3×3}(δ f0^{1×1}(F)))))

    W0 ∈ R^{C/r × C}, W1 ∈ R^{C × C/r}; f0 maps C → C/r channels, f1 and f2 are 3×3
    convolutions with dilation d on C/r channels, f3 maps C/r → 1. δ is the ReLU (the paper's
    equations leave it implicit; the text calls the channel branch an "MLP with one hidden
    layer", and the official code has a ReLU after every hidden layer). σ is the sigmoid.

    Args:
        channels: C, input (and output) channels.
        reduction: r, the reduction ratio of both branches; hidden width ``channels // reduction``.
            Paper and official code: 16.
        dilation: d, the dilation of f1 and f2. Paper and official code: 4. The convolutions are
            padded by d, so the spatial map keeps the input's H × W for every size, even H, W < d.
        combine: how eq. (2) merges the branches. ``"sum"`` (default): σ(M_c + M_s), the paper.
            ``"product"``: σ(M_c · M_s), what the official code computes.
        bn: where the batch norms sit. ``"output"`` (default): one BN at the end of each branch,
            eqs. (3) and (4) as printed. ``"hidden"``: the official code's layout, a BN after every
            hidden layer (FC/conv → BN → ReLU) and none at the branch outputs.

    Shapes:
        input ``(B, C, H, W)`` → output ``(B, C, H, W)``; any H, W ≥ 1. In training mode B must be
        at least 2 (the channel branch's BN needs batch statistics of a (B, C) vector).

    Differences from the official code (Jongchan/attention-module ``MODELS/bam.py``), and why:

    - The code multiplies the branches, ``att = 1 + σ(M_c · M_s)``; the paper's eq. (2) and its
      ablation use the sum. Default ``combine="sum"``; ``"product"`` reproduces the code.
      (``1 + σ(·)`` times F is eq. (1) rewritten, so that part agrees.)
    - The code puts BN after the hidden layers and none at the outputs; the paper puts BN at
      the outputs "for scale adjustment". Default ``bn="output"``; ``"hidden"`` reproduces the code.
    - The code pools the channel branch with a square window of the input's height, which is
      only right for H = W; we average over the whole H × W map.
    - The code's ``ChannelGate`` refers to an undefined name ``gate_activation``; not reproduced.

    With ``combine="product", bn="hidden"`` the parameters match the official code one for one:
    ``3Ch + 18h² + 13h + C + 1`` with h = C // r. The default has ``3Ch + 18h² + 5h + 3C + 3``.

    Submodules: ``channel_branch`` (F → M_c, shape (B, C, 1, 1)), ``spatial_branch``
    (F → M_s, shape (B, 1, H, W)), and ``gate`` whose output is M(F), shape (B, C, H, W).
    ``branches(x)`` returns (M_c, M_s) for pictures.
    """

    def __init__(
        self,
        channels: int,
        *,
        reduction: int = 16,
        dilation: int = 4,
        combine: str = "sum",
        bn: str = "output",
    ) -> None:
        super().__init__()
        self.channels = check_channels(self, channels)
        self.reduction = check_positive_int(self, "reduction", reduction)
        self.dilation = check_positive_int(self, "dilation", dilation)
        check_choice(self, "combine", combine, ("sum", "product"))
        check_choice(self, "bn", bn, ("output", "hidden"))
        self.combine, self.bn = combine, bn
        self.hidden = h = channels // reduction
        if h < 1:
            raise ValueError(
                f"BAM expected reduction <= channels so that the hidden width channels // reduction "
                f"is at least 1, got channels={channels}, reduction={reduction}"
            )
        hid = bn == "hidden"  # official layout: BN after each hidden layer
        out = bn == "output"  # paper layout: BN at the end of each branch

        def layers(*named: tuple[str, nn.Module | None]) -> nn.Sequential:
            return nn.Sequential(OrderedDict((k, m) for k, m in named if m is not None))

        d = dilation
        self.channel_branch = layers(  # eq. (3)
            ("pool", _AvgPool()),  # AvgPool(F): (B, C), as Σ_ij F / (H W)
            ("fc0", nn.Linear(channels, h)),  # W0 · + b0: (B, C/r)
            ("bn0", nn.BatchNorm1d(h) if hid else None),
            ("relu0", nn.ReLU()),  # δ
            ("fc1", nn.Linear(h, channels)),  # W1 · + b1: (B, C)
            ("bn", nn.BatchNorm1d(channels) if out else None),  # BN(MLP(·))
            ("expand", Rearrange("b c -> b c 1 1")),  # M_c: (B, C, 1, 1)
        )
        self.spatial_branch = layers(  # eq. (4)
            ("f0", nn.Conv2d(channels, h, 1)),  # f0^{1×1}: (B, C/r, H, W)
            ("bn0", nn.BatchNorm2d(h) if hid else None),
            ("relu0", nn.ReLU()),
            ("f1", nn.Conv2d(h, h, 3, padding=d, dilation=d)),  # f1^{3×3}, dilated; padding d keeps H × W
            ("bn1", nn.BatchNorm2d(h) if hid else None),
            ("relu1", nn.ReLU()),
            ("f2", nn.Conv2d(h, h, 3, padding=d, dilation=d)),  # f2^{3×3}, dilated
            ("bn2", nn.BatchNorm2d(h) if hid else None),
            ("relu2", nn.ReLU()),
            ("f3", nn.Conv2d(h, 1, 1)),  # f3^{1×1}: (B, 1, H, W)
            ("bn", nn.BatchNorm2d(1) if out else None),  # BN(·) = M_s
        )
        self.gate = Gate(nn.Sigmoid(), kind="spatial-channel")  # σ of eq. (2)

    def _check(self, x: torch.Tensor) -> None:
        check_input(self, x, self.channels)
        if self.training and x.shape[0] == 1:
            raise ValueError(
                "BAM cannot train on a batch of 1: its channel branch batch-normalises a (B, C) "
                "vector over the batch, and with batch size 1 there are no batch statistics. "
                "Use a batch of at least 2, or call .eval()"
            )

    def branches(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The two branch outputs before they are combined: M_c (B, C, 1, 1) and M_s (B, 1, H, W)."""
        self._check(x)
        return self.channel_branch(x), self.spatial_branch(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mc, ms = self.branches(x)  # (3), (4)
        logits = mc + ms if self.combine == "sum" else mc * ms  # broadcast to (B, C, H, W)
        m = self.gate(logits)  # (2): M(F) = σ(·)
        # (1) with F factored out, as the official code writes it: the same values, and one
        # full-size operation fewer in the backward pass than F + F ⊗ M(F)
        return x * (1 + m)  # (1): F' = F + F ⊗ M(F) = F ⊗ (1 + M(F))

    def extra_repr(self) -> str:
        return (
            f"channels={self.channels}, reduction={self.reduction}, hidden={self.hidden}, "
            f"dilation={self.dilation}, combine={self.combine!r}, bn={self.bn!r}"
        )
