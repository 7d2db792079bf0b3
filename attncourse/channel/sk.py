"""Selective Kernel (Li et al., CVPR 2019). Chapter: ``chapters/channel/sk.md``."""

from __future__ import annotations

import torch
from einops import rearrange
from einops.layers.torch import Reduce
from torch import nn

from .._checks import check_channels, check_divisible, check_input, check_positive_int
from .._registry import register
from ..layers import Gate

__all__ = ["SelectiveKernel"]


@register("sk")
class SelectiveKernel(nn.Module):
    r"""Selective Kernel: M branches with different receptive fields, mixed per channel by a softmax.

    Paper: X. Li, W. Wang, X. Hu, J. Yang, "Selective Kernel Networks", CVPR 2019,
    arXiv:1903.06586. Official code: github.com/implus/SKNet (Caffe).

    Equations (numbered as in arXiv:1903.06586 as recorded in the course's notes, not
    re-checked against the CVPR text; written for M branches; the paper writes M = 2 with
    Ũ = U_1, Û = U_2, A = A_1, B = A_2)::

        split       U_m = δ(BN(conv3x3_{dilation m, groups G}(X))),   m = 1..M
        (1) fuse    U = Σ_m U_m
        (2)         s_c = 1/(H W) Σ_i Σ_j U_c(i, j)
        (3)         z = δ(BN(W s)),                W ∈ R^{d × C}
        (4)         d = max(C / r, L)
        (5) select  a_{m,c} = exp(A_{m,c} z) / Σ_k exp(A_{k,c} z),   A_m ∈ R^{C × d}
        (6)         V_c = Σ_m a_{m,c} · U_{m,c}

    δ is ReLU. The softmax in (5) runs over the branches, separately for every channel, so
    the weights of one channel sum to 1 over m.

    Args:
        channels: C, the number of input and output channels.
        branches: M, the number of branches; branch m is a 3×3 convolution with dilation m
            (receptive field 2m + 1). Paper: 2 (a 3×3 and a "5×5", the latter implemented as a
            dilated 3×3). At least 2 (with one branch the softmax is constant 1).
        groups: G, the groups of every branch's convolution; must divide C. Paper: 32.
        reduction: r, the reduction ratio of the compact vector z. Paper: 16.
        min_dim: L, the smallest width of z. Paper: 32. The width is ``d = max(C // r, L)``.

    Shapes:
        input ``(B, C, H, W)`` → output ``(B, C, H, W)``; any H, W ≥ 1 (padding = dilation keeps
        the size). The gate ``self.gate`` outputs the weights a of shape ``(B, M, C)``.

    Placement: in SKNet this module *replaces* the 3×3 grouped convolution (with its BN and
    ReLU) of a ResNeXt bottleneck; it is not a plug-in placed after a block's last BN like SE.
    It maps C channels to C channels, so it fits the course's plug-in slot, but there it adds
    convolutions on top of the host's own.

    Differences from the paper and the official code: none in the computation, with the
    stride fixed at 1 (SKNet's first unit of a stage uses stride 2 in both branches). As in
    the official Caffe model, the convolutions, W and A have no biases. A bias before a batch
    norm is cancelled by it (BN follows W and every convolution); a bias of A would be per
    (m, c), not shared by the branches, so it *would* change the softmax: the official model
    simply has none, and neither has this module. The
    stacked ``A`` is one ``nn.Linear(d, M·C)`` whose output is read as ``(m c)``, as the
    official model reshapes its ``2C`` outputs to ``(2, C)``. ``C // r`` is a floor.

    Batch size: the BN of (3) normalises the vector z over the batch, so in training mode a
    batch of one sample has no statistics; the module then raises ``ValueError`` (in eval mode
    any batch size works). Parameters: ``M (9 C²/G + 2C) + C d + 2d + M C d``.
    """

    def __init__(
        self,
        channels: int,
        *,
        branches: int = 2,
        groups: int = 32,
        reduction: int = 16,
        min_dim: int = 32,
    ) -> None:
        super().__init__()
        self.channels = check_channels(self, channels)
        self.branches = check_positive_int(self, "branches", branches, minimum=2)
        self.groups = check_positive_int(self, "groups", groups)
        check_divisible(self, "channels", channels, "groups", groups)
        self.reduction = check_positive_int(self, "reduction", reduction)
        self.min_dim = check_positive_int(self, "min_dim", min_dim)
        self.hidden = max(channels // reduction, min_dim)  # (4) d
        self.split = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(channels, channels, 3, padding=m, dilation=m, groups=groups, bias=False),
                nn.BatchNorm2d(channels),
                nn.ReLU(inplace=True),
            )
            for m in range(1, branches + 1)
        )
        self.pool = Reduce("b c h w -> b c", "sum")  # Σ_ij of (2); forward divides by H W
        self.fc = nn.Linear(channels, self.hidden, bias=False)  # W
        self.bn = nn.BatchNorm1d(self.hidden)  # BN of (3)
        self.act = nn.ReLU(inplace=True)  # δ of (3)
        self.select = nn.Linear(self.hidden, branches * channels, bias=False)  # A_1..A_M stacked
        self.gate = Gate(nn.Softmax(dim=1), kind="branch")  # (5): softmax over m

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(self, x, self.channels)
        if self.training and x.shape[0] < 2:
            raise ValueError(
                f"SelectiveKernel in training mode needs a batch of at least 2 samples: the BatchNorm "
                f"on the compact vector z (eq. 3) computes its statistics over the batch, got batch "
                f"size {x.shape[0]}; use a larger batch or call .eval()"
            )
        # The branches stay a list: no stacked (B, M, C, H, W) copy, and eq. (6) as M products and
        # sums instead of a batched matrix product of B·C tiny matrices (the chapter's "The module"
        # shows both forms equal the derivation; `make bench` times them).
        u = [branch(x) for branch in self.split]  # split: U_1..U_M, each (B, C, H, W)
        # (1), (2): s = GAP(Σ_m U_m) = Σ_m Σ_ij U_m / (H W); a sum / (H W), as a mean's backward
        # would divide a full-size gradient
        s = sum(self.pool(u_m) for u_m in u) / (x.shape[2] * x.shape[3])  # (B, C)
        z = self.act(self.bn(self.fc(s)))  # (3): (B, d)
        logits = rearrange(self.select(z), "b (m c) -> b m c", m=self.branches)  # A_m z
        a = self.gate(logits)  # (5): (B, M, C), sums to 1 over m
        a = rearrange(a, "b m c -> m b c 1 1")  # a_m, broadcast over H × W
        v = a[0] * u[0]
        for a_m, u_m in zip(a[1:], u[1:]):
            v = v + a_m * u_m  # (6): V = Σ_m a_m ⊙ U_m
        return v

    def extra_repr(self) -> str:
        return (
            f"channels={self.channels}, branches={self.branches}, groups={self.groups}, "
            f"reduction={self.reduction}, min_dim={self.min_dim}, hidden={self.hidden}"
        )
