"""Concurrent spatial and channel squeeze & excitation, scSE (Roy et al., MICCAI 2018).

Chapter: ``chapters/hybrid/scse.md``.
"""

from __future__ import annotations

import torch
from einops import rearrange, reduce
from torch import nn

from .._checks import check_channels, check_choice, check_input, check_positive_int
from .._registry import register
from ..channel.se import SqueezeExcite
from ..layers import Gate

__all__ = ["ChannelSE", "SpatialSE", "SCSE", "AGGREGATIONS"]

#: The ways to combine the two recalibrated maps: the MICCAI paper's sum, and the journal's
#: max-out and multiplication (concatenation is left out: it doubles the channel count).
AGGREGATIONS = ("sum", "max", "mul")


def _check_reduction(module: object, channels: int, reduction: object) -> int:
    """r must be a positive integer that leaves a hidden width C // r of at least 1."""
    r = check_positive_int(module, "reduction", reduction)
    if channels // r < 1:
        raise ValueError(
            f"{type(module).__name__} expected reduction <= channels so that the hidden width "
            f"channels // reduction is at least 1, got channels={channels}, reduction={r}"
        )
    return r


class ChannelSE(SqueezeExcite):
    r"""cSE, "spatial squeeze and channel excitation": SE with the reduction r = 2.

    Paper: A. G. Roy, N. Navab, C. Wachinger, "Concurrent Spatial and Channel 'Squeeze &
    Excitation' in Fully Convolutional Networks", MICCAI 2018, arXiv:1803.02579. cSE *is* the
    SE block of Hu et al. (``attncourse.channel.se.SqueezeExcite``); only the default r differs::

        z = GAP(U) ∈ R^C,   ẑ = W2 δ(W1 z),   Û_cSE = [σ(ẑ_1) u_1, …, σ(ẑ_C) u_C]

    with W1 ∈ R^{C/r × C} and W2 ∈ R^{C × C/r}, both with biases (as in the official code,
    ai-med/squeeze_and_excitation ``ChannelSELayer``).

    Args:
        channels: C.
        reduction: r; the hidden width is ``channels // reduction``. Paper and official code: 2.
        bias: biases on W1 and W2 (official code: yes).

    Shapes:
        ``(B, C, H, W)`` → ``(B, C, H, W)``. The gate ``self.gate`` (kind ``"channel"``) outputs
        σ(ẑ) of shape ``(B, C)``.

    Parameters: ``2 C (C // r) + C // r + C``, i.e. ``C² + 1.5 C`` at r = 2 (C even).
    """

    def __init__(self, channels: int, *, reduction: int = 2, bias: bool = True) -> None:
        # validate here first, so that errors name ChannelSE (and not SqueezeExcite)
        _check_reduction(self, check_channels(self, channels), reduction)
        super().__init__(channels, reduction=reduction, bias=bias)


class SpatialSE(nn.Module):
    r"""sSE, "channel squeeze and spatial excitation": rescale each position by a gate from its C values.

    Paper: A. G. Roy, N. Navab, C. Wachinger, "Concurrent Spatial and Channel 'Squeeze &
    Excitation' in Fully Convolutional Networks", MICCAI 2018, arXiv:1803.02579.

    Equations (U = [u^{1,1}, …, u^{H,W}], u^{i,j} ∈ R^C the vector at position (i, j))::

        squeeze     q = W_sq ⋆ U,   W_sq ∈ R^{1×1×C×1}      i.e.  q_{i,j} = w · u^{i,j} + b
        excitation  Û_sSE = [σ(q_{1,1}) u^{1,1}, …, σ(q_{H,W}) u^{H,W}]

    The squeeze is a 1×1 convolution from C channels to 1, with a bias (official code:
    ``nn.Conv2d(num_channels, 1, 1)``, whose bias is on by default).

    Args:
        channels: C.

    Shapes:
        ``(B, C, H, W)`` → ``(B, C, H, W)``; any H, W ≥ 1. The gate ``self.gate`` (kind
        ``"spatial"``) outputs σ(q) of shape ``(B, 1, H, W)``: one weight per position, shared
        by all channels.

    Parameters: ``C + 1``. Differences from the paper and the official code: none.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = check_channels(self, channels)
        self.squeeze = nn.Conv2d(channels, 1, kernel_size=1, bias=True)  # W_sq (and its bias)
        self.gate = Gate(nn.Sigmoid(), kind="spatial")  # σ

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(self, x, self.channels)
        q = self.squeeze(x)  # q = W_sq ⋆ U: (B, 1, H, W)
        return x * self.gate(q)  # Û_sSE = σ(q_{i,j}) u^{i,j}, broadcast over the C channels

    def extra_repr(self) -> str:
        return f"channels={self.channels}"


@register("scse")
class SCSE(nn.Module):
    r"""scSE: recalibrate U along channels (cSE) and along positions (sSE) in parallel, then combine.

    Papers: A. G. Roy, N. Navab, C. Wachinger, "Concurrent Spatial and Channel 'Squeeze &
    Excitation' in Fully Convolutional Networks", MICCAI 2018, arXiv:1803.02579; journal version
    "Recalibrating Fully Convolutional Networks with Spatial and Channel 'Squeeze and
    Excitation' Blocks", IEEE TMI 38(2), 2019, arXiv:1808.08127.

    Equations::

        cSE   Û_cSE = σ(W2 δ(W1 GAP(U))) ⊗ U            (a weight per channel, W1: C/r × C)
        sSE   Û_sSE = σ(W_sq ⋆ U) ⊗ U                    (a weight per position, 1×1 conv C → 1)
        scSE  Û_scSE = Û_cSE + Û_sSE                     (MICCAI: element-wise sum)
              Û_scSE = max(Û_cSE, Û_sSE)                 (journal: max-out, element-wise)
              Û_scSE = Û_cSE ⊙ Û_sSE                     (journal: multiplication)

    δ is ReLU and σ the sigmoid. The max and the product act on the *recalibrated features*,
    not on the gates: where u < 0, max-out keeps the smaller gate, and the product is
    σ(ẑ_c) σ(q_{i,j}) u², which is never negative.

    Args:
        channels: C.
        reduction: r of the cSE branch; the hidden width is ``channels // reduction``.
            Paper and official code: 2.
        aggregation: how the two branches are combined: ``"sum"`` (the MICCAI paper, the
            default), ``"max"`` (max-out, the journal's best and the **official code's only**
            choice: ``ChannelSpatialSELayer`` returns ``torch.max(cSE(x), sSE(x))``), or
            ``"mul"`` (the journal's multiplication, read here as the element-wise product of
            the two recalibrated maps, as for the other options). The journal's fourth option,
            concatenation, is not offered: it returns 2C channels, so the block would no
            longer map ``(B, C, H, W)`` to itself without an extra projection that neither
            paper specifies.

    Shapes:
        ``(B, C, H, W)`` → ``(B, C, H, W)``; any H, W ≥ 1. Two gates: ``self.cse.gate``
        (kind ``"channel"``, ``(B, C)``) and ``self.sse.gate`` (kind ``"spatial"``,
        ``(B, 1, H, W)``).

    Parameters: ``2 C (C // r) + C // r + C`` (cSE) ``+ C + 1`` (sSE); at r = 2 and even C
    that is ``C² + 2.5 C + 1``, 4,257 at C = 64.

    Differences from the official code: the default aggregation is the MICCAI sum, not the
    code's max (pass ``aggregation="max"`` to match the code). Otherwise none: cSE is
    :class:`ChannelSE` (SE with biases, r = 2), sSE is :class:`SpatialSE` (1×1 conv with bias).
    """

    def __init__(self, channels: int, *, reduction: int = 2, aggregation: str = "sum") -> None:
        super().__init__()
        self.channels = check_channels(self, channels)
        self.reduction = _check_reduction(self, channels, reduction)
        check_choice(self, "aggregation", aggregation, AGGREGATIONS)
        self.aggregation = aggregation
        self.cse = ChannelSE(channels, reduction=reduction)  # Û_cSE, gate σ(ẑ): (B, C)
        self.sse = SpatialSE(channels)  # Û_sSE, gate σ(q): (B, 1, H, W)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(self, x, self.channels)
        if self.aggregation == "sum":
            # MICCAI: Û_cSE + Û_sSE = σ(ẑ_c) u_c(i, j) + σ(q_{i,j}) u_c(i, j) = (σ(ẑ_c) + σ(q_{i,j})) u_c(i, j).
            # Both gates first (cSE's and sSE's own layers and gates), then one product: the same
            # values, with two full-size products and a sum fewer, forward and backward.
            cse, sse = self.cse, self.sse
            z = reduce(x, "b c h w -> b c", "sum") / (x.shape[2] * x.shape[3])  # GAP(U), as in SqueezeExcite
            s_c = cse.gate(cse.fc2(cse.act(cse.fc1(z))))  # σ(ẑ): (B, C)
            s_s = sse.gate(sse.squeeze(x))  # σ(q): (B, 1, H, W)
            return x * (rearrange(s_c, "b c -> b c 1 1") + s_s)  # Û_cSE + Û_sSE
        u_c = self.cse(x)  # Û_cSE = σ(ẑ_c) u_c
        u_s = self.sse(x)  # Û_sSE = σ(q_{i,j}) u^{i,j}
        if self.aggregation == "max":
            # journal / official code: max(Û_cSE, Û_sSE), written as b + relu(a - b): the same
            # values, but about 3x faster than torch.maximum's backward on CPU
            return u_s + torch.relu(u_c - u_s)
        return u_c * u_s  # journal: Û_cSE ⊙ Û_sSE

    def extra_repr(self) -> str:
        return f"channels={self.channels}, reduction={self.reduction}, aggregation={self.aggregation!r}"
