"""The SE variants of ECA's ablation (Wang et al., CVPR 2020, Table 1). Chapter: ``chapters/channel/eca.md``.

Not attention modules of their own, but the controls of ECA's argument against SE's
dimensionality reduction. They live here, beside ECA, so that the chapter's experiment and
Part I's stored comparison (:mod:`attncourse.experiments`) build the same networks.
"""

from __future__ import annotations

import torch
from einops import einsum, rearrange
from einops.layers.torch import Reduce
from torch import nn

from .._checks import check_channels, check_choice, check_divisible, check_input, check_positive_int
from ..layers import Gate

__all__ = ["SEVariant", "SE_VARIANTS"]

SE_VARIANTS = ("var1", "var2", "var3", "gc")


class SEVariant(nn.Module):
    r"""ω = σ(map(GAP(χ))), output ω ⊙ χ, with one of the channel maps of ECA's Table 1.

    Paper: Q. Wang, B. Wu, P. Zhu, P. Li, W. Zuo, Q. Hu, "ECA-Net: Efficient Channel Attention
    for Deep Convolutional Neural Networks", CVPR 2020, arXiv:1910.03151 (Section 3.2, Table 1).

    With y = GAP(χ) ∈ R^C, the variants differ only in the map from y to the gate's logits:

    =========  ===========================================  ==============  =================
    variant    map                                          parameters      paper's name
    =========  ===========================================  ==============  =================
    ``var1``   y (no parameters)                            0               SE-Var1
    ``var2``   diag(w) y, one weight per channel            C               SE-Var2
    ``var3``   W y, one full layer without reduction        C²              SE-Var3
    ``gc``     block-diagonal W_G y, G groups               C²/G            SE-GC
    =========  ===========================================  ==============  =================

    None has a bias, as in the paper's table. ``var2`` starts from w = 1 (that is, from
    ``var1``); ``var3`` uses ``nn.Linear``'s default initialisation, and ``gc`` the same
    bound per group, U(-1/√(C/G), 1/√(C/G)).

    Args:
        channels: C.
        variant: one of ``"var1"``, ``"var2"``, ``"var3"``, ``"gc"``.
        groups: G for ``"gc"`` (must divide C); ignored otherwise.

    Shape:
        ``(B, C, H, W) -> (B, C, H, W)``. The gate's output ``gate`` is ``(B, C)``.
    """

    def __init__(self, channels: int, *, variant: str = "var3", groups: int = 4) -> None:
        super().__init__()
        self.channels = check_channels(self, channels)
        check_choice(self, "variant", variant, SE_VARIANTS)
        self.variant = variant
        self.groups = check_positive_int(self, "groups", groups)
        self.squeeze = Reduce("b c h w -> b c", "mean")  # y = GAP(χ)
        if variant == "var2":
            self.weight = nn.Parameter(torch.ones(channels))  # diag(w), w = 1 at the start
        elif variant == "var3":
            self.fc = nn.Linear(channels, channels, bias=False)  # W ∈ R^{C×C}
        elif variant == "gc":
            check_divisible(self, "channels", channels, "groups", groups)
            n = channels // groups
            self.weight = nn.Parameter(torch.empty(groups, n, n).uniform_(-(n**-0.5), n**-0.5))  # W_G
        self.gate = Gate(nn.Sigmoid(), kind="channel")  # σ

    def _map(self, y: torch.Tensor) -> torch.Tensor:
        if self.variant == "var1":
            return y
        if self.variant == "var2":
            return y * self.weight
        if self.variant == "var3":
            return self.fc(y)
        y = rearrange(y, "b (g i) -> b g i", g=self.groups)  # channels interact only inside a group
        return rearrange(einsum(self.weight, y, "g o i, b g i -> b g o"), "b g o -> b (g o)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(self, x, self.channels)
        omega = self.gate(self._map(self.squeeze(x)))  # ω = σ(map(y)): (B, C)
        return x * rearrange(omega, "b c -> b c 1 1")  # ω ⊙ χ

    def extra_repr(self) -> str:
        groups = f", groups={self.groups}" if self.variant == "gc" else ""
        return f"channels={self.channels}, variant={self.variant!r}{groups}"
