"""DANet's position and channel attention modules (Fu et al., CVPR 2019). Chapter: ``chapters/selfattn/danet.md``."""

from __future__ import annotations

import torch
from einops import rearrange
from torch import nn

from .._checks import check_channels, check_choice, check_input, check_positive_int
from .._registry import register
from ..layers import Gate

__all__ = ["PositionAttention", "ChannelAttention", "DualAttention", "CHANNEL_AFFINITIES"]

#: The channel module's affinity: the paper's softmax(E) or the official code's softmax(max(E) - E).
CHANNEL_AFFINITIES = ("paper", "official")


def _check_width(module: object, channels: int, reduction: int) -> int:
    width = channels // reduction
    if width < 1:
        raise ValueError(
            f"{type(module).__name__} expected channels // reduction >= 1, the width of the query and key "
            f"convolutions (C/8 in the official code), got channels={channels}, reduction={reduction}"
        )
    return width


@register("pam")
class PositionAttention(nn.Module):
    r"""DANet's position attention module (PAM): every position is a weighted sum of all positions.

    Paper: J. Fu, J. Liu, H. Tian, Y. Li, Y. Bao, Z. Fang, H. Lu, "Dual Attention Network for Scene
    Segmentation", CVPR 2019, arXiv:1809.02983. Official code: github.com/junfu1115/DANet
    (``encoding/nn/da_att.py``, ``PAM_Module``).

    Equations (numbered in their order in the paper; the numbers were not re-checked against the
    PDF), A ∈ R^{C×H×W} reshaped to C × N, N = H W::

        (1) s_ji = exp(B_i · C_j) / Σ_i exp(B_i · C_j)          S ∈ R^{N×N}, rows j sum to 1
        (2) E_j  = α Σ_i s_ji D_i + A_j,  i.e.  E = α D Sᵀ + A

    B, C and D are 1×1 convolutions of A (with biases), B and C to C/8 channels, D to C. In the
    vocabulary of later papers, C_j is the *query* of the output position j, B_i the *key* and D_i
    the *value* of the attended position i; the official ``query_conv`` is the paper's C and
    ``key_conv`` its B (the official ``energy[j, i] = query_j · key_i``, softmax over i).

    Args:
        channels: C.
        reduction: the query/key width is ``channels // reduction`` (8 in the official code, which
            hard-codes ``in_dim // 8``). As this course's review read the paper, it gives B and C
            A's width ({B, C} ∈ R^{C×H×W}; we could not re-check that sentence against the PDF):
            C/8 is then the official code's, a difference from the paper; ``reduction=1`` gives
            the paper's width C.
            A width below 1 is refused.

    Shapes: ``(B, C, H, W)`` → ``(B, C, H, W)``, any H, W ≥ 1. The gate ``self.gate`` outputs S as
    ``(B, N, N)``; :meth:`attention` returns it as ``(B, 1, H*W, H*W)``, queries (rows j) and keys
    (columns i) in ``(h w)`` order.

    Parameters: ``2(C d + d) + C² + C + 1`` with d = C // reduction; ``1.25 C² + 1.25 C + 1`` when
    8 divides C (C = 512: 328,321).

    Identity at initialisation: α is a parameter initialised to 0 (paper and code), so E = A.

    A bias the softmax cancels: the key convolution's bias b_B adds C_j · b_B to every logit of
    row j, the same amount for every position i, and a softmax row does not change when all its
    logits are shifted by one amount. So b_B (d of the parameters counted above) changes no
    output and its gradient is zero (exactly in exact arithmetic; rounding noise in floating
    point, which Adam can still turn into steps: b_B then drifts without changing anything). It
    is kept because the official ``key_conv`` has it. The query's bias is not cancelled.

    Differences from the paper: it says B and C come from a convolution *with batch norm and ReLU*;
    the official code uses plain 1×1 convolutions and the author answered that the paper will be
    corrected (CASIA-IVA-Lab/DANet issue #45). We follow the code, also in the width C/8 of B
    and C (see ``reduction``). The forward pass materialises
    S (N × N per image), as the official code does, rather than calling
    ``F.scaled_dot_product_attention(q, k, v, scale=1)``, which computes the same E without
    storing S: the gate then sees the weights forward applies, and ``count_flops`` counts them
    (the flop counter has no formula for SDPA's CPU kernel). The chapter compares the two.
    """

    def __init__(self, channels: int, *, reduction: int = 8) -> None:
        super().__init__()
        self.channels = check_channels(self, channels)
        self.reduction = check_positive_int(self, "reduction", reduction)
        self.width = _check_width(self, self.channels, self.reduction)
        # Registered in the official order (query_conv, key_conv, value_conv, gamma).
        self.query = nn.Conv2d(self.channels, self.width, 1)  # the paper's C (query at position j)
        self.key = nn.Conv2d(self.channels, self.width, 1)  # the paper's B (key at position i)
        self.value = nn.Conv2d(self.channels, self.channels, 1)  # the paper's D
        self.alpha = nn.Parameter(torch.zeros(1))  # α, initialised to 0: the module starts as the identity
        self.gate = Gate(nn.Softmax(dim=-1), kind="attention")  # the softmax of (1), over i

    def _weights(self, x: torch.Tensor) -> torch.Tensor:
        q = rearrange(self.query(x), "b d h w -> b (h w) d")  # C_j: (B, N, d)
        k = rearrange(self.key(x), "b d h w -> b d (h w)")  # B_i: (B, d, N)
        return self.gate(q @ k)  # (1) s_ji = softmax_i(B_i · C_j): (B, N, N)

    def _context(self, x: torch.Tensor) -> torch.Tensor:
        """Σ_i s_ji D_i of (2), before α: (B, C, H, W)."""
        s = self._weights(x)
        d = rearrange(self.value(x), "b c h w -> b c (h w)")  # D: (B, C, N)
        # (2) D Sᵀ: column j is Σ_i s_ji D_i, laid out (B, C, N) like the input, so the residual
        # add and its backward stay contiguous
        return rearrange(d @ s.transpose(1, 2), "b c (h w) -> b c h w", h=x.shape[2])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(self, x, self.channels)
        return self.alpha * self._context(x) + x  # (2) E = α D Sᵀ + A

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        """S of eq. (1), the weights forward applies: ``(B, 1, H*W, H*W)``, row j sums to 1 over i."""
        check_input(self, x, self.channels)
        return self._weights(x).unsqueeze(1)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, reduction={self.reduction}, width={self.width}"


@register("cam")
class ChannelAttention(nn.Module):
    r"""DANet's channel attention module (CAM): every channel is a weighted sum of all channels.

    Paper: Fu et al., "Dual Attention Network for Scene Segmentation", CVPR 2019, arXiv:1809.02983
    (see :class:`PositionAttention`); official code ``CAM_Module``. Equations (numbered in
    their order in the paper, not re-checked against the PDF), A ∈ R^{C×H×W} reshaped to C × N::

        (3) x_ji = exp(A_i · A_j) / Σ_i exp(A_i · A_j)          X ∈ R^{C×C}, rows j sum to 1
        (4) E_j  = β Σ_i x_ji A_i + A_j,  i.e.  E = β X A + A

    The affinity comes from A itself: no convolution, no parameter besides β.

    Args:
        channels: C.
        channel_affinity: ``"paper"`` (default), the softmax of eq. (3), in which a channel attends
            most to the channels most *similar* to it; or ``"official"``, the official code's
            ``softmax(max_i(E) - E)`` with E = A Aᵀ, which equals ``softmax(-E)`` (a softmax does not
            change when a row is shifted by a constant), so a channel attends most to the channels
            most *dissimilar* to it. The author: the operation "is adopted for improving convergence
            during training, which is not mentioned in the paper" (CASIA-IVA-Lab/DANet issue #45).

    Shapes: ``(B, C, H, W)`` → ``(B, C, H, W)``, any H, W ≥ 1. The gate ``self.gate`` outputs X,
    ``(B, C, C)``, also returned by :meth:`channel_attention`. :meth:`attention` returns the weights
    over positions that CAM applies, the identity ``(B, 1, H*W, H*W)``: it mixes channels at each
    position and never positions.

    Parameters: 1 (β). Identity at initialisation: β is initialised to 0 (paper and code).

    Numerics: A_i · A_j sums over N positions, so the logits grow with H W and with the features'
    scale, and the rows of X become nearly one-hot on large or strong feature maps (in both forms).
    """

    def __init__(self, channels: int, *, channel_affinity: str = "paper") -> None:
        super().__init__()
        self.channels = check_channels(self, channels)
        check_choice(self, "channel_affinity", channel_affinity, CHANNEL_AFFINITIES)
        self.channel_affinity = channel_affinity
        self.beta = nn.Parameter(torch.zeros(1))  # β, initialised to 0: the module starts as the identity
        self.gate = Gate(nn.Softmax(dim=-1), kind="channel")  # the softmax of (3), over i

    def _weights(self, a: torch.Tensor) -> torch.Tensor:
        # bmm, not @: matmul's 3-D autograd path adds an out-of-place gradient sum (about 4 % of a
        # step at (8, 256, 28, 28)); same kernel, same values
        energy = torch.bmm(a, a.transpose(1, 2))  # A_j · A_i: (B, C, C), symmetric
        if self.channel_affinity == "official":
            # the official max(E) - E; the max is detached: it shifts a whole row, which changes no
            # softmax, so its exact gradient is zero, and its backward would cost time to add
            # only rounding noise
            energy = energy.detach().amax(dim=-1, keepdim=True) - energy
        return self.gate(energy)  # (3) x_ji = softmax_i(·): (B, C, C)

    def _context(self, x: torch.Tensor) -> torch.Tensor:
        """Σ_i x_ji A_i of (4), before β: (B, C, H, W)."""
        a = rearrange(x, "b c h w -> b c (h w)")  # A: (B, C, N)
        return torch.bmm(self._weights(a), a).view_as(x)  # (4) X A: row j is Σ_i x_ji A_i

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(self, x, self.channels)
        return self.beta * self._context(x) + x  # (4) E = β X A + A

    def channel_attention(self, x: torch.Tensor) -> torch.Tensor:
        """X of eq. (3), the weights forward applies: ``(B, C, C)``, row j sums to 1 over i."""
        check_input(self, x, self.channels)
        return self._weights(rearrange(x, "b c h w -> b c (h w)"))

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        """The weights over positions: the identity ``(B, 1, H*W, H*W)`` (CAM mixes no positions)."""
        check_input(self, x, self.channels)
        b, _, h, w = x.shape
        return torch.eye(h * w, dtype=x.dtype, device=x.device).expand(b, 1, h * w, h * w)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, channel_affinity={self.channel_affinity!r}"


@register("danet")
class DualAttention(nn.Module):
    r"""DANet's dual attention as a plug-in: position and channel attention on the same map, summed.

    Paper: Fu et al., "Dual Attention Network for Scene Segmentation", CVPR 2019, arXiv:1809.02983
    (see :class:`PositionAttention`); official head ``DANetHead`` in ``encoding/models/sseg/danet.py``.
    With P and Q the aggregations of eqs. (2) and (4)
    before their scales (P_j = Σ_i s_ji D_i, Q_j = Σ_i x_ji A_i), this module computes::

        E = A + α P(A) + β Q(A) = PAM(A) + CAM(A) - A

    the sum of the two modules' outputs on the same input, less one copy of A, so that it is the
    identity at initialisation (α = β = 0) and keeps the (B, C, H, W) -> (B, C, H, W) contract.

    What is left out: in the paper's segmentation head each branch has its own 3×3 conv + BN + ReLU
    that reduces 2048 channels to C = 512 before the module, and another after it, then the two
    results are summed (and a dropout and 1×1 classifiers follow). Those convolutions change the
    channel count and belong to the host network (in this course, the conv blocks around the
    plug-in); with them, the head's sum at initialisation is conv(A₁) + conv(A₂) of two different
    reductions, not the identity. Without them, the paper's plain sum PAM(A) + CAM(A) would be 2A at
    initialisation; subtracting A (equivalently: one shared residual) restores the identity and
    changes nothing else: it is the paper's sum with the residual counted once.

    Args:
        channels: C.
        reduction: the position module's query/key width is ``channels // reduction`` (8, the
            official code's; see :class:`PositionAttention`).
        channel_affinity: ``"paper"`` or ``"official"`` (see :class:`ChannelAttention`).

    Shapes: ``(B, C, H, W)`` → ``(B, C, H, W)``, any H, W ≥ 1. :meth:`attention` returns the position
    module's S ``(B, 1, H*W, H*W)``, :meth:`channel_attention` the channel module's X ``(B, C, C)``;
    the gates ``position.gate`` and ``channel.gate`` output them as forward uses them.

    Parameters: ``2(C d + d) + C² + C + 1`` (the position module) ``+ 1`` (β);
    ``1.25 C² + 1.25 C + 2`` when 8 divides C.

    Differences from the paper and the official code: the head's convolutions (above); B and C are
    plain 1×1 convolutions as in the code (see :class:`PositionAttention`); the channel affinity is
    the paper's by default.
    """

    def __init__(self, channels: int, *, reduction: int = 8, channel_affinity: str = "paper") -> None:
        super().__init__()
        # Validate here first, so that errors name DualAttention, not a submodule.
        self.channels = check_channels(self, channels)
        self.reduction = check_positive_int(self, "reduction", reduction)
        _check_width(self, self.channels, self.reduction)
        check_choice(self, "channel_affinity", channel_affinity, CHANNEL_AFFINITIES)
        self.channel_affinity = channel_affinity
        self.position = PositionAttention(channels, reduction=reduction)  # eqs. (1)-(2), α
        self.channel = ChannelAttention(channels, channel_affinity=channel_affinity)  # eqs. (3)-(4), β

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(self, x, self.channels)
        p = self.position.alpha * self.position._context(x)  # α P(A), eq. (2) without "+ A"
        q = self.channel.beta * self.channel._context(x)  # β Q(A), eq. (4) without "+ A"
        return x + p + q  # PAM(A) + CAM(A) - A

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        """The position module's S, ``(B, 1, H*W, H*W)``."""
        check_input(self, x, self.channels)
        return self.position._weights(x).unsqueeze(1)

    def channel_attention(self, x: torch.Tensor) -> torch.Tensor:
        """The channel module's X, ``(B, C, C)``."""
        check_input(self, x, self.channels)
        return self.channel._weights(rearrange(x, "b c h w -> b c (h w)"))

    def extra_repr(self) -> str:
        return f"channels={self.channels}, reduction={self.reduction}, channel_affinity={self.channel_affinity!r}"

