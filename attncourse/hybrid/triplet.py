"""Triplet Attention (Misra et al., WACV 2021). Chapter: ``chapters/hybrid/triplet.md``."""

from __future__ import annotations

import torch
from einops import rearrange
from torch import nn

from .._checks import check_channels, check_choice, check_input
from .._registry import register
from ..layers import Gate
from .cbam import _check_kernel

__all__ = ["TripletAttention", "TripletBranch"]


class TripletBranch(nn.Module):
    r"""One branch's map from its Z-pooled input: ``σ(BN(conv_k(Z)))``, shape ``(B, 1, P, Q)``.

    ``Z`` is ``(B, 2, P, Q)``: ``[max; mean]`` along the branch's leading axis (the Z-pool). The
    convolution is k × k, 2 → 1, without bias, padding k // 2 (P × Q is kept); the batch norm has
    the official code's eps 1e-5 and momentum 0.01 and learns γ and β; no ReLU; then a sigmoid.

    Args:
        kernel_size: k.
        kind: the two axes the map covers (``"hc"``, ``"cw"`` or ``"hw"``), shown by the gate.
    """

    def __init__(self, *, kernel_size: int = 7, kind: str = "hw") -> None:
        super().__init__()
        self.kernel_size = _check_kernel(self, kernel_size)
        k = self.kernel_size
        self.conv = nn.Conv2d(2, 1, k, padding=k // 2, bias=False)  # conv_k: 2 maps -> 1, 2k² weights
        self.bn = nn.BatchNorm2d(1, eps=1e-5, momentum=0.01)  # γ, β: 2 parameters
        self.gate = Gate(nn.Sigmoid(), kind=kind)  # σ

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.gate(self.bn(self.conv(z)))

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}"


def _zpool(x: torch.Tensor, dim: int) -> list[torch.Tensor]:
    """The Z-pool's two maps along ``dim``: [max; mean] (max with indices, as ``torch.max(x, 1)[0]``)."""
    return [x.max(dim=dim).values, x.mean(dim=dim)]


@register("triplet")
class TripletAttention(nn.Module):
    r"""Triplet Attention: three Z-pool → conv → BN → σ gates, each over two of the axes (C, H, W), averaged.

    Paper: D. Misra, T. Nalamada, A. U. Arasanipalai, Q. Hou, "Rotate to Attend: Convolutional
    Triplet Attention Module", WACV 2021, arXiv:2010.03045. Official code:
    github.com/landskape-ai/triplet-attention (``triplet_attention.py``; the same module with older
    names in ``MODELS/triplet_attention.py``).

    Equations (the paper's notation, χ ∈ R^{C×H×W}; numbers not given, the equations checked
    against the official code, not their numbering)::

        Z-pool(χ) = [MaxPool_0d(χ); AvgPool_0d(χ)]          (max and mean along the leading axis)
        branch 1: χ̂1 = χ rotated C↔W (W × H × C),  y1 = χ̂1 ⊙ σ(ψ1(Z-pool(χ̂1))),  ȳ1 = y1 rotated back
        branch 2: χ̂2 = χ rotated C↔H (H × C × W),  y2 = χ̂2 ⊙ σ(ψ2(Z-pool(χ̂2))),  ȳ2 = y2 rotated back
        branch 3: y3 = χ ⊙ σ(ψ3(Z-pool(χ)))                  (CBAM's spatial gate, with BN)
        y = 1/3 (ȳ1 + ȳ2 + y3)

    ψ_i is a k × k convolution from 2 maps to 1 (no bias) followed by batch norm. In einops, the
    rotations are ``b c h w -> b w h c`` (branch 1) and ``b c h w -> b h c w`` (branch 2), each its
    own inverse. Branch 1's map covers (H, C) and is shared along W, branch 2's covers (C, W),
    shared along H, branch 3's covers (H, W), shared along C. The submodules are named after the
    two axes their map covers, as in the official code: ``hc`` (branch 1), ``cw`` (branch 2),
    ``hw`` (branch 3).

    Args:
        channels: C.
        kernel_size: k, odd (7; the released models use 7 and 3).
        no_spatial: drop branch 3 and average the other two, ``y = 1/2 (ȳ1 + ȳ2)`` (the official
            code's option; not in the paper's equations). Default ``False``.

    Shapes:
        input ``(B, C, H, W)`` → output ``(B, C, H, W)``, any H, W ≥ 1. The gates ``hc.gate``,
        ``cw.gate`` and ``hw.gate`` output ``(B, 1, H, C)``, ``(B, 1, C, W)`` and ``(B, 1, H, W)``.

    Parameters: ``3·(2k² + 2)`` (each conv 2k², each BN's γ and β; 300 at k = 7, independent of
    C), ``2·(2k² + 2)`` with ``no_spatial=True``. The BNs' running statistics are buffers.

    Differences from the official code: none in what is computed (Z-pool = [max; mean] in the
    paper's and the code's order; BN eps 1e-5, momentum 0.01; the ``reduction_ratio`` and
    ``pool_types`` arguments of the older ``MODELS`` version are unused there and absent here).
    How: the official code permutes χ, gates it and permutes back (four full-size copies); here each
    branch pools χ directly along the axis the rotation would bring to the front, and the three
    maps, broadcast, are averaged before one product with χ: the same function (asserted in the
    tests and the chapter), fewer full-size tensors. Initialisation: branch 3's BN weight γ starts
    at 0, as the official ResNet's initialisation sets it (the keys containing ``SpatialGate``);
    the other two BNs start at γ = 1, β = 0. So branch 3's map starts at σ(0) = 0.5 everywhere.
    Not followed: the official ResNet also re-initialises every weight whose key contains
    ``conv``, the gates' k × k kernels included, with ``kaiming_normal_(mode="fan_out")``, std
    √(2/k²) ≈ 0.20 at k = 7; here the kernels keep PyTorch's ``Conv2d`` default, uniform on
    ±1/√(2k²), std 1/√(3·2k²) ≈ 0.058 at k = 7 (tested). To start as the official ResNet, apply
    that call to ``hc.conv.weight``, ``cw.conv.weight`` and ``hw.conv.weight``.
    The batch norms make the maps depend on the batch in training mode; a branch whose BN would
    see a single value (e.g. batch 1 on a 1 × 1 map) is refused with a ``ValueError``.
    """

    def __init__(self, channels: int, *, kernel_size: int = 7, no_spatial: bool = False) -> None:
        super().__init__()
        self.channels = check_channels(self, channels)
        self.kernel_size = _check_kernel(self, kernel_size)
        check_choice(self, "no_spatial", no_spatial, (True, False))
        self.no_spatial = bool(no_spatial)
        k = self.kernel_size
        self.hc = TripletBranch(kernel_size=k, kind="hc")  # branch 1: ψ1, its map over (H, C)
        self.cw = TripletBranch(kernel_size=k, kind="cw")  # branch 2: ψ2, its map over (C, W)
        if not self.no_spatial:
            self.hw = TripletBranch(kernel_size=k, kind="hw")  # branch 3: ψ3, its map over (H, W)
            nn.init.zeros_(self.hw.bn.weight)  # the official ResNet init: γ = 0 in the SpatialGate branch

    def _check_batch(self, x: torch.Tensor) -> None:
        b, c, h, w = x.shape
        sizes = {"batch x H x C": b * h * c, "batch x C x W": b * c * w}
        if not self.no_spatial:
            sizes["batch x H x W"] = b * h * w
        if min(sizes.values()) == 1:
            raise ValueError(
                f"TripletAttention in training mode needs more than one value for each branch's batch "
                f"norm ({', '.join(sizes)} must each be > 1), got input of shape {tuple(x.shape)} "
                f"(use a larger batch, or eval mode)"
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(self, x, self.channels)
        if self.training:
            self._check_batch(x)
        # Branch 1: χ̂1 = rearrange(χ, "b c h w -> b w h c") would lead with W; Z-pool along W, in χ̂1's (h, c) layout.
        a1 = self.hc(rearrange(_zpool(x, 3), "z b c h -> b z h c"))  # σ(ψ1(Z-pool(χ̂1))): (B, 1, H, C)
        # Branch 2: χ̂2 = rearrange(χ, "b c h w -> b h c w") would lead with H; Z-pool along H.
        a2 = self.cw(rearrange(_zpool(x, 2), "z b c w -> b z c w"))  # σ(ψ2(Z-pool(χ̂2))): (B, 1, C, W)
        # Rotating back: ȳ_i = rotate(χ̂_i ⊙ a_i) = χ ⊙ rotate(a_i), so y = χ ⊙ (the maps rotated back, averaged);
        # the 1/3 (or 1/2) is applied to the small maps, before they broadcast to (B, C, H, W).
        n = 2 if self.no_spatial else 3
        s = rearrange(a1 / n, "b 1 h c -> b c h 1") + rearrange(a2 / n, "b 1 c w -> b c 1 w")  # (B, C, H, W)
        if self.no_spatial:
            return x * s  # y = 1/2 (ȳ1 + ȳ2)
        a3 = self.hw(rearrange(_zpool(x, 1), "z b h w -> b z h w"))  # branch 3: σ(ψ3(Z-pool(χ))): (B, 1, H, W)
        return x * (s + a3 / n)  # y = 1/3 (ȳ1 + ȳ2 + y3) = χ ⊙ (a1 + a2 + a3) / 3

    def extra_repr(self) -> str:
        return f"channels={self.channels}, kernel_size={self.kernel_size}, no_spatial={self.no_spatial}"
