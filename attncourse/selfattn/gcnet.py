"""The global context (GC) block of GCNet (Cao et al., ICCV Workshops 2019). Chapter: ``chapters/selfattn/gcnet.md``."""

from __future__ import annotations

import torch
from einops import rearrange, reduce
from torch import nn

from .._checks import check_channels, check_choice, check_input, check_positive_int
from .._registry import register
from ..layers import Gate

__all__ = ["GlobalContextBlock"]

#: How the context is pooled over the positions: attention pooling (the GC block) or SE's mean.
POOLINGS = ("att", "avg")
#: How the transformed context is merged into every position (the official ``fusion_types``).
FUSIONS = ("add", "mul", "mul+add")


def _transform(channels: int, hidden: int) -> nn.Sequential:
    """The bottleneck transform W_v2 · ReLU(LN(W_v1 · )): indices 0..3 as the official code."""
    return nn.Sequential(
        nn.Conv2d(channels, hidden, kernel_size=1),  # W_v1: C -> C/r, with bias
        nn.LayerNorm([hidden, 1, 1]),  # LN over the C/r values of each image (affine)
        nn.ReLU(),
        nn.Conv2d(hidden, channels, kernel_size=1),  # W_v2: C/r -> C, with bias, starts at 0
    )


@register("gc")
class GlobalContextBlock(nn.Module):
    r"""Global context block: one attention-pooled context vector per image, transformed and added to every position.

    Paper: Y. Cao, J. Xu, S. Lin, F. Wei, H. Hu, "GCNet: Non-local Networks Meet
    Squeeze-Excitation Networks and Beyond", ICCV Workshops 2019, arXiv:1904.11492 (extended in
    TPAMI 2020 as "Global Context Networks"). Official code: github.com/xvjiarui/GCNet
    (``mmdet/ops/gcb/context_block.py``, class ``ContextBlock``).

    Equations (numbered as we read arXiv:1904.11492 v1; the numbers were not re-checked against a
    copy of the text), x_i ∈ R^C the feature at position i of N_p = H W positions::

        simplified non-local (3): z_i = x_i + W_v Σ_j α_j x_j,      α_j = exp(W_k x_j) / Σ_m exp(W_k x_m)
        GC block (5):             z_i = x_i + W_v2 ReLU(LN(W_v1 Σ_j α_j x_j))

    The three steps of the paper's framework: context modelling (W_k, a 1×1 conv to one channel,
    a softmax over the N_p positions, the α-weighted sum of x), transform (the bottleneck
    W_v1 → LN → ReLU → W_v2, ratio 1/r) and fusion (broadcast addition to every position). The
    weights α_j do not depend on the query position i: the block's attention map is one row,
    shared by all queries.

    Args:
        channels: C.
        reduction: r, the paper's bottleneck ratio (the hidden width is ``channels // reduction``,
            at least 1); 16. The official code's ``ratio`` is 1/r (``ratio=1./16``, hidden
            ``int(C * ratio)``, which equals ``C // r`` for the integer r used).
        pooling: ``"att"`` (attention pooling, the GC block) or ``"avg"`` (the mean over positions,
            SE's squeeze; the paper's ablation); the official ``pooling_type``.
        fusion: ``"add"`` (z = x + T_add(context), the paper's best and default), ``"mul"``
            (z = x ⊙ σ(T_mul(context)), SE-like rescaling), or ``"mul+add"`` (both, with separate
            transforms, multiplication first, as the official code with
            ``fusion_types=('channel_add', 'channel_mul')``).

    Shapes: input ``(B, C, H, W)`` → output ``(B, C, H, W)``, any H, W ≥ 1. ``self.gate`` (a
    ``Gate(nn.Softmax(dim=-1), kind="attention")``, only with ``pooling="att"``) outputs the
    weights α as ``(B, 1, H W)``; ``attention(x)`` returns them as ``(B, 1, H W, H W)``, the same
    row for every query. With ``"mul"`` fusion, ``mul_gate`` outputs σ(·) as ``(B, C, 1, 1)``.

    Parameters (``pooling="att"``, ``fusion="add"``): ``2C·(C//r) + 2C + 3·(C//r) + 1``:
    W_k ``C + 1``, W_v1 ``C·C/r + C/r``, LN ``2C/r``, W_v2 ``C/r·C + C``; 653 at C = 64, r = 16.
    W_k's bias is a parameter the output cannot depend on (the softmax is shift-invariant: its
    gradient is 0); it is kept, as in the official code, so that official weights load.

    Initialisation (the official ``reset_parameters``): W_k Kaiming normal (fan-in, ReLU gain),
    bias 0; W_v2's weight and bias 0, so that with ``"add"`` fusion the block is exactly the
    identity at initialisation (with ``"mul"`` it starts as x ⊙ σ(0) = x / 2). W_v1 keeps PyTorch's
    default (the official code leaves it to the surrounding network, which loads ImageNet weights
    without touching the block).

    Differences from the official code: ``reduction=r`` instead of ``ratio=1/r`` (the paper's symbol,
    and the name SE and CBAM use in this package); ``fusion`` is one string instead of a tuple; the
    ReLU is not in-place. The submodules are named as the official ones (``conv_mask``,
    ``channel_add_conv``, ``channel_mul_conv``), so an official state dict loads. The context is
    the α-weighted sum computed as one batched matrix product (as the official code); the mean of
    ``"avg"`` pooling is a sum divided by H W. timm's ``GlobalContext`` defaults to the
    multiplicative form (``fuse_add=False, fuse_scale=True``) with ratio 1/8; this module defaults
    to the paper's best, addition.
    """

    def __init__(self, channels: int, *, reduction: int = 16, pooling: str = "att", fusion: str = "add") -> None:
        super().__init__()
        self.channels = check_channels(self, channels)
        self.reduction = check_positive_int(self, "reduction", reduction)
        self.hidden = self.channels // self.reduction
        if self.hidden < 1:
            raise ValueError(
                f"{type(self).__name__} expected reduction <= channels so that the hidden width "
                f"channels // reduction is at least 1, got channels={channels}, reduction={reduction}"
            )
        check_choice(self, "pooling", pooling, POOLINGS)
        check_choice(self, "fusion", fusion, FUSIONS)
        self.pooling = pooling
        self.fusion = fusion
        if pooling == "att":
            self.conv_mask = nn.Conv2d(channels, 1, kernel_size=1)  # W_k: C -> 1 logit per position
            self.gate = Gate(nn.Softmax(dim=-1), kind="attention")  # α = softmax over the N_p positions
            nn.init.kaiming_normal_(self.conv_mask.weight, mode="fan_in", nonlinearity="relu")
            nn.init.zeros_(self.conv_mask.bias)
        self.channel_mul_conv = _transform(channels, self.hidden) if "mul" in fusion else None
        self.channel_add_conv = _transform(channels, self.hidden) if "add" in fusion else None
        if self.channel_mul_conv is not None:
            self.mul_gate = Gate(nn.Sigmoid(), kind="channel")  # σ of the multiplicative fusion
        for transform in (self.channel_mul_conv, self.channel_add_conv):
            if transform is not None:  # W_v2 = 0 (weight and bias): the term starts at exactly 0
                nn.init.zeros_(transform[-1].weight)
                nn.init.zeros_(transform[-1].bias)

    def _weights(self, x: torch.Tensor) -> torch.Tensor:
        """α: (B, 1, H W), the softmax over positions of W_k x_j (uniform 1 / (H W) for "avg")."""
        if self.pooling == "att":
            return self.gate(rearrange(self.conv_mask(x), "b 1 h w -> b 1 (h w)"))  # α_j
        b, _, h, w = x.shape
        return x.new_full((b, 1, h * w), 1.0 / (h * w))

    def _context(self, x: torch.Tensor) -> torch.Tensor:
        """Context modelling: Σ_j α_j x_j, shape (B, C, 1, 1)."""
        if self.pooling == "avg":
            return reduce(x, "b c h w -> b c 1 1", "sum") / (x.shape[2] * x.shape[3])  # mean over positions
        alpha = self._weights(x)  # (B, 1, N)
        flat = rearrange(x, "b c h w -> b c (h w)")
        context = torch.matmul(flat, rearrange(alpha, "b 1 n -> b n 1"))  # Σ_j α_j x_j: (B, C, 1)
        return rearrange(context, "b c 1 -> b c 1 1")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(self, x, self.channels)
        context = self._context(x)  # (B, C, 1, 1)
        out = x
        if self.channel_mul_conv is not None:
            out = out * self.mul_gate(self.channel_mul_conv(context))  # x ⊙ σ(T_mul(context))
        if self.channel_add_conv is not None:
            out = out + self.channel_add_conv(context)  # (5): x_i + W_v2 ReLU(LN(W_v1 context))
        return out

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        """The weights α that forward applies, as a (B, 1, H W, H W) map: row i (query i, in
        ``(h w)`` order) is the same for every i, each row sums to 1."""
        check_input(self, x, self.channels)
        alpha = self._weights(x)  # (B, 1, N)
        n = alpha.shape[-1]
        return alpha.unsqueeze(2).expand(-1, -1, n, -1)  # the same row for every query

    def extra_repr(self) -> str:
        return (
            f"channels={self.channels}, reduction={self.reduction}, hidden={self.hidden}, "
            f"pooling={self.pooling!r}, fusion={self.fusion!r}"
        )
