"""Squeeze-and-Excitation (Hu et al., CVPR 2018). Chapter: ``chapters/channel/se.md``."""

from __future__ import annotations

import torch
from einops import rearrange
from einops.layers.torch import Reduce
from torch import nn

from .._checks import check_channels, check_input, check_positive_int
from .._registry import register
from ..layers import Gate

__all__ = ["SqueezeExcite"]


@register("se")
class SqueezeExcite(nn.Module):
    r"""Squeeze-and-Excitation: rescale each channel by a gate computed from global context.

    Paper: J. Hu, L. Shen, G. Sun, "Squeeze-and-Excitation Networks", CVPR 2018
    (extended with S. Albanie and E. Wu in TPAMI 2020), arXiv:1709.01507.

    Equations (numbered as in the TPAMI 2020 version = arXiv:1709.01507 v4)::

        (2) squeeze     z_c = 1/(H W) Σ_i Σ_j u_c(i, j)
        (3) excitation  s = σ(W2 δ(W1 z)),   W1 ∈ R^{C/r × C},  W2 ∈ R^{C × C/r}
        (4) scale       x̃_c = s_c · u_c

    δ is ReLU and σ the sigmoid.

    Args:
        channels: C, the number of input (and output) channels.
        reduction: r, the reduction ratio of the bottleneck; the hidden width is
            ``channels // reduction``. Paper and released models: 16.
        bias: whether W1 and W2 have biases. The released SE-ResNet Caffe models have them
            (``2C²/r + C/r + C`` parameters); the TPAMI text says removing them helps on
            ResNets (``2C²/r``). Default ``True``, as released.

    Shapes:
        input ``(B, C, H, W)`` → output ``(B, C, H, W)``; any H, W ≥ 1.

    Differences from the paper: none in the computation. W1 and W2 are ``nn.Linear`` layers,
    which compute the same as the 1×1 convolutions of the Caffe release. The hidden width is
    ``C // r`` (floor) when r does not divide C; a width below 1 is refused.

    The gate ``self.gate`` outputs s of shape ``(B, C)``; hook it to see the channel weights.
    """

    def __init__(self, channels: int, *, reduction: int = 16, bias: bool = True) -> None:
        super().__init__()
        self.channels = check_channels(self, channels)
        self.reduction = check_positive_int(self, "reduction", reduction)
        self.hidden = channels // reduction
        if self.hidden < 1:
            raise ValueError(
                f"SqueezeExcite expected reduction <= channels so that the hidden width "
                f"channels // reduction is at least 1, got channels={channels}, reduction={reduction}"
            )
        self.bias = bool(bias)
        self.squeeze = Reduce("b c h w -> b c", "sum")  # (2): Σ_i Σ_j, divided by H W in forward
        self.fc1 = nn.Linear(channels, self.hidden, bias=bias)  # W1
        self.act = nn.ReLU(inplace=True)  # δ
        self.fc2 = nn.Linear(self.hidden, channels, bias=bias)  # W2
        self.gate = Gate(nn.Sigmoid(), kind="channel")  # σ

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(self, x, self.channels)
        # (2) as a sum / (H W): the same mean, and a backward pass that does not divide a
        # full-size gradient (faster; `make bench` times it against a plain-PyTorch reference)
        z = self.squeeze(x) / (x.shape[2] * x.shape[3])  # (2): (B, C)
        s = self.gate(self.fc2(self.act(self.fc1(z))))  # (3): (B, C)
        return x * rearrange(s, "b c -> b c 1 1")  # (4)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, reduction={self.reduction}, hidden={self.hidden}, bias={self.bias}"
