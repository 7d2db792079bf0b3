"""CBAM, the Convolutional Block Attention Module (Woo et al., ECCV 2018). Chapter: ``chapters/hybrid/cbam.md``."""

from __future__ import annotations

import torch
from einops import rearrange, reduce
from einops.layers.torch import Reduce
from torch import nn

from .._checks import check_channels, check_choice, check_input, check_norm_batch, check_positive_int
from .._registry import register
from ..layers import Gate

__all__ = ["CBAM", "ChannelAttention", "SpatialAttention"]

#: How the two attention maps are combined (the paper's section 4.1 ablation).
ORDERS = ("channel-spatial", "spatial-channel", "parallel")
#: The order of the two channel-pooled maps fed to the 7×7 convolution.
POOL_ORDERS = ("avg-max", "max-avg")


def _check_hidden(module: object, channels: int, reduction: int) -> int:
    hidden = channels // reduction
    if hidden < 1:
        raise ValueError(
            f"{type(module).__name__} expected reduction <= channels so that the hidden width "
            f"channels // reduction is at least 1, got channels={channels}, reduction={reduction}"
        )
    return hidden


def _check_kernel(module: object, kernel_size: object) -> int:
    k = check_positive_int(module, "kernel_size", kernel_size)
    if k % 2 == 0:
        raise ValueError(
            f"{type(module).__name__} expected an odd kernel_size, so that padding kernel_size // 2 "
            f"keeps H x W, got {k}"
        )
    return k


class ChannelAttention(nn.Module):
    r"""CBAM's channel attention map M_c, eq. (2): which channels matter.

    ``M_c(F) = σ(W1 δ(W0 F^c_avg) + W1 δ(W0 F^c_max))``: one MLP, shared by the average- and the
    max-pooled descriptors, whose outputs are summed before the sigmoid.

    Args:
        channels: C.
        reduction: r; the hidden width is ``channels // reduction``.
        bias: whether W0 and W1 have biases (``nn.Linear`` in the official code: yes).

    Shapes: input ``(B, C, H, W)`` → the map ``(B, C)`` (the output of ``self.gate``).
    """

    def __init__(self, channels: int, *, reduction: int = 16, bias: bool = True) -> None:
        super().__init__()
        self.channels = check_channels(self, channels)
        self.reduction = check_positive_int(self, "reduction", reduction)
        check_choice(self, "bias", bias, (True, False))
        self.hidden = _check_hidden(self, channels, reduction)
        self.avg_pool = Reduce("b c h w -> b c", "sum")  # Σ over H × W; forward divides by H W: F^c_avg
        self.fc0 = nn.Linear(channels, self.hidden, bias=bool(bias))  # W0 ∈ R^{C/r × C}
        self.act = nn.ReLU()  # δ
        self.fc1 = nn.Linear(self.hidden, channels, bias=bool(bias))  # W1 ∈ R^{C × C/r}
        self.gate = Gate(nn.Sigmoid(), kind="channel")  # σ

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(self, x, self.channels)
        # F^c_max: max with indices (as the official code's max_pool2d), whose backward is
        # cheaper than einops' "max" (amax), and gives the gradient to one position.
        f_max = rearrange(x, "b c h w -> b c (h w)").max(dim=-1).values
        # F^c_avg as a sum / (H W): the same mean, and a backward pass without a full-size division.
        f_avg = self.avg_pool(x) / (x.shape[2] * x.shape[3])
        d = torch.stack([f_avg, f_max])  # [F^c_avg; F^c_max]: (2, B, C)
        mlp = self.fc1(self.act(self.fc0(d)))  # the shared MLP on both descriptors: (2, B, C)
        return self.gate(reduce(mlp, "pool b c -> b c", "sum"))  # (2): σ(MLP(avg) + MLP(max))

    def extra_repr(self) -> str:
        return f"channels={self.channels}, reduction={self.reduction}, hidden={self.hidden}"


class SpatialAttention(nn.Module):
    r"""CBAM's spatial attention map M_s, eq. (3): where to look.

    ``M_s(F) = σ(f^{k×k}([F^s_avg; F^s_max]))``: the mean and the max over channels at every
    position, stacked as two maps and convolved (padding k // 2, so H × W is kept).

    Args:
        kernel_size: k of the convolution f (7 in the paper).
        norm: batch norm between the convolution and the sigmoid, as in the official code
            (which then has no conv bias; without it the conv has a bias, the course's choice,
            since eq. (3) writes none); its weight starts at 0, as the official ResNet's
            initialisation sets it, so the map starts at σ(0) = 0.5 everywhere.
        pool_order: ``"avg-max"`` (the paper's [avg; max]) or ``"max-avg"`` (the official code).

    Shapes: input ``(B, C, H, W)``, any C → the map ``(B, 1, H, W)`` (the output of ``self.gate``).
    """

    def __init__(self, *, kernel_size: int = 7, norm: bool = False, pool_order: str = "avg-max") -> None:
        super().__init__()
        self.kernel_size = _check_kernel(self, kernel_size)
        check_choice(self, "norm", norm, (True, False))
        check_choice(self, "pool_order", pool_order, POOL_ORDERS)
        self.pool_order = pool_order
        self.use_norm = bool(norm)
        k = self.kernel_size
        self.conv = nn.Conv2d(2, 1, k, padding=k // 2, bias=not norm)  # f^{k×k}: 2 maps -> 1
        self.norm = nn.BatchNorm2d(1, eps=1e-5, momentum=0.01) if norm else nn.Identity()
        if norm:
            nn.init.zeros_(self.norm.weight)  # the official ResNet init: BN weight 0 in SpatialGate
        self.gate = Gate(nn.Sigmoid(), kind="spatial")  # σ

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(self, x)
        if self.use_norm and self.training:
            check_norm_batch(self, x, "the spatial batch norm (spatial_norm=True)")
        avg = reduce(x, "b c h w -> b 1 h w", "sum") / x.shape[1]  # F^s_avg = AvgPool over channels (sum / C, as above)
        mx = x.max(dim=1, keepdim=True).values  # F^s_max = MaxPool over channels (with indices, as above)
        pooled = torch.cat([avg, mx] if self.pool_order == "avg-max" else [mx, avg], dim=1)  # [·; ·]: (B, 2, H, W)
        return self.gate(self.norm(self.conv(pooled)))  # (3): σ(f(·)): (B, 1, H, W)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, norm={self.use_norm}, pool_order={self.pool_order!r}"


@register("cbam")
class CBAM(nn.Module):
    r"""CBAM: a channel attention map, then a spatial attention map, each multiplied in.

    Paper: S. Woo, J. Park, J.-Y. Lee, I. S. Kweon, "CBAM: Convolutional Block Attention Module",
    ECCV 2018, arXiv:1807.06521. Official code: github.com/Jongchan/attention-module
    (``MODELS/cbam.py``).

    Equations (numbered as in the ECCV 2018 paper, arXiv:1807.06521; the equations were compared
    with the text, their numbers not re-checked), F ∈ R^{C×H×W}::

        (1) F'  = M_c(F) ⊗ F,        F'' = M_s(F') ⊗ F'
        (2) M_c(F) = σ(MLP(AvgPool(F)) + MLP(MaxPool(F))) = σ(W1 δ(W0 F^c_avg) + W1 δ(W0 F^c_max))
        (3) M_s(F) = σ(f^{7×7}([AvgPool(F); MaxPool(F)])) = σ(f^{7×7}([F^s_avg; F^s_max]))

    In (2) the pools run over H × W and the MLP (W0 ∈ R^{C/r × C}, ReLU δ, W1 ∈ R^{C × C/r}) is
    shared by both descriptors; in (3) the pools run over C and f^{7×7} is a convolution from 2
    maps to 1 (padding 3: H × W is kept). ⊗ broadcasts M_c over H × W and M_s over C.

    Args:
        channels: C.
        reduction: r, the MLP's reduction ratio (hidden width ``channels // reduction``); 16.
        kernel_size: the size k of f (7; the paper's ablation found 7 better than 3).
        order: ``"channel-spatial"`` (eq. (1), the paper's CBAM), ``"spatial-channel"``
            (F' = M_s(F) ⊗ F, F'' = M_c(F') ⊗ F'), or ``"parallel"`` (F'' = M_c(F) ⊗ M_s(F) ⊗ F,
            both maps computed from F). These are the three arrangements of the paper's
            section 4.1; the paper gives no equation for "parallel", this is the product of the
            two maps as eq. (1) uses them.
        spatial_norm: batch norm (eps 1e-5, momentum 0.01) between f and σ in (3), conv without
            bias, BN weight initialised to 0, as the official code and its ResNet initialisation
            do. Default ``False``: the paper's eq. (3), with a bias on f (the course's choice).
        pool_order: ``"avg-max"`` (the paper's [avg; max]) or ``"max-avg"`` (the official
            ``ChannelPool``). Only the order of f's two input channels changes: a model in one
            order equals the other with f's input channels swapped, so this matters only for
            loading official weights.
        bias: biases in W0 and W1 (the official ``nn.Linear`` layers have them; timm's default
            does not). Default ``True``.

    Shapes:
        input ``(B, C, H, W)`` → output ``(B, C, H, W)``, any H, W ≥ 1. The gates
        ``channel_attention.gate`` and ``spatial_attention.gate`` output M_c ``(B, C)`` and
        M_s ``(B, 1, H, W)``.

    Parameters: ``2C·(C//r) + C//r + C`` (the MLP with the official code's biases; 580 at C = 64)
    plus ``2k² + 1`` (f with a bias, the course's choice: eq. (3) writes none; 99 at k = 7), or
    ``2k² + 2`` with ``spatial_norm=True`` (f without bias, BN weight and bias; 100).

    Differences from the official code, and why the defaults are the paper's: the official
    spatial gate is conv (no bias) → BN → σ, with [max; mean] pooling. The paper describes
    conv → σ with [avg; max] and writes no bias; we follow the paper by default (with a bias on f,
    our choice: PyTorch's default for a conv with no BN after it, in the place of the official
    BN's shift β) because the chapter derives the
    paper's equations, and because the batch norm makes the spatial map depend on the batch
    in training mode (it then fails on a single 1 × 1 position). ``spatial_norm=True,
    pool_order="max-avg"`` reproduces the official module (its BN weight starts at 0 as the
    official ResNet's init sets it; that init also zeroes the MLP biases and draws f's weight
    with Kaiming fan-out, which we leave to the network). The hidden width is ``C // r`` (floor);
    a width below 1 is refused. The max pools are ``torch.max`` with indices, as the official
    code's: where several positions tie for the maximum, one of them gets the gradient.
    """

    def __init__(
        self,
        channels: int,
        *,
        reduction: int = 16,
        kernel_size: int = 7,
        order: str = "channel-spatial",
        spatial_norm: bool = False,
        pool_order: str = "avg-max",
        bias: bool = True,
    ) -> None:
        super().__init__()
        # Validate everything here first, so that errors name CBAM, not a submodule.
        self.channels = check_channels(self, channels)
        self.reduction = check_positive_int(self, "reduction", reduction)
        self.hidden = _check_hidden(self, channels, reduction)
        self.kernel_size = _check_kernel(self, kernel_size)
        check_choice(self, "order", order, ORDERS)
        check_choice(self, "spatial_norm", spatial_norm, (True, False))
        check_choice(self, "pool_order", pool_order, POOL_ORDERS)
        check_choice(self, "bias", bias, (True, False))
        self.order = order
        self.spatial_norm = bool(spatial_norm)
        self.pool_order = pool_order
        self.bias = bool(bias)
        self.channel_attention = ChannelAttention(channels, reduction=reduction, bias=bias)  # M_c, eq. (2)
        self.spatial_attention = SpatialAttention(
            kernel_size=kernel_size, norm=spatial_norm, pool_order=pool_order
        )  # M_s, eq. (3)

    def _channel(self, f: torch.Tensor) -> torch.Tensor:
        return rearrange(self.channel_attention(f), "b c -> b c 1 1")  # M_c(f), broadcast over H × W

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(self, x, self.channels)
        if self.spatial_norm and self.training:
            check_norm_batch(self, x, "the spatial batch norm (spatial_norm=True)")
        if self.order == "channel-spatial":
            f1 = self._channel(x) * x  # (1) F' = M_c(F) ⊗ F
            return self.spatial_attention(f1) * f1  # (1) F'' = M_s(F') ⊗ F'
        if self.order == "spatial-channel":
            f1 = self.spatial_attention(x) * x  # F' = M_s(F) ⊗ F
            return self._channel(f1) * f1  # F'' = M_c(F') ⊗ F'
        return self._channel(x) * self.spatial_attention(x) * x  # parallel: F'' = M_c(F) ⊗ M_s(F) ⊗ F

    def extra_repr(self) -> str:
        return (
            f"channels={self.channels}, reduction={self.reduction}, hidden={self.hidden}, "
            f"kernel_size={self.kernel_size}, order={self.order!r}, spatial_norm={self.spatial_norm}, "
            f"pool_order={self.pool_order!r}, bias={self.bias}"
        )
