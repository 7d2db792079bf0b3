"""Criss-cross attention, CCNet (Huang et al., ICCV 2019). Chapter: ``chapters/selfattn/ccnet.md``."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import einsum, rearrange
from torch import nn

from .._checks import check_channels, check_input, check_positive_int
from .._registry import register
from ..layers import Gate

__all__ = ["CrissCrossAttention"]


def _cross_mask(h: torch.Tensor | int, device: torch.device) -> torch.Tensor:
    """The (H, 1, H) boolean mask of the vertical path's diagonal (query row == key row), from torch
    ops on H, so that an exported program keeps H dynamic."""
    rows = torch.arange(h, device=device)
    return rearrange(rows, "h -> h 1 1") == rearrange(rows, "g -> 1 1 g")


@register("ccnet")
class CrissCrossAttention(nn.Module):
    r"""Recurrent criss-cross attention: each position attends to its row and its column, R times.

    Paper: Z. Huang, X. Wang, L. Huang, C. Huang, Y. Wei, W. Liu, "CCNet: Criss-Cross Attention
    for Semantic Segmentation", ICCV 2019, arXiv:1811.11721. Official code:
    github.com/speedinghzl/CCNet (``cc_attention/functions.py`` of the ``pure-python`` branch;
    ``networks/ccnet.py``, ``RCCAModule``, for the recurrence).

    One pass (section 3.2 of the ICCV paper; numbers not re-checked), H ∈ R^{C×H×W}::

        Q = W_q H,  K = W_k H  ∈ R^{C'×H×W},   V = W_v H ∈ R^{C×H×W}     (1×1 convs, C' = C / 8)
        (1) d_{i,u} = Q_u Ω_{i,u}ᵀ        Ω_u: the keys of the H + W - 1 positions in u's column and row
            A = softmax over the path of d    one softmax over [column path; row path]
        (2) H'_u = γ Σ_i A_{i,u} Φ_{i,u} + H_u   Φ_u: the values on the same path; γ starts at 0

    The scale γ is the official code's (``self.gamma``, a zero-initialised parameter); the paper's
    eq. (2) has no γ, H'_u = Σ_i A_{i,u} Φ_{i,u} + H_u, which is the above with γ = 1.

    The recurrence (the paper's RCCA) applies the same pass R times with **shared weights**:
    after R = 2 passes every position has received information from every other one.

    The position u itself lies in both its column and its row; as in the official code, its
    logit in the column path is set to -inf, so it is counted once (in the row path). The
    column and the row share one softmax, so the H + W - 1 weights of each query sum to 1.

    Args:
        channels: C.
        reduction: C / C', the reduction of the query and key channels (8 in the official code;
            the paper only says C' < C). ``channels // reduction`` must be ≥ 1.
        recurrence: R, the number of passes, with shared weights (2, the paper's choice; the
            official ``train.py --recurrence`` defaults to 0, which would skip the module: 0 is
            refused here).

    Shapes: input ``(B, C, H, W)`` → output ``(B, C, H, W)``, any H, W ≥ 1 (on a 1 × 1 map the
    path is the position itself). ``self.gate`` outputs the path weights ``(B, H, W, H + W)``,
    the column path first (its diagonal is exactly 0), then the row path; it runs R times per
    forward. ``attention(x)`` returns the weights of the first pass as a dense
    ``(B, 1, H*W, H*W)`` matrix, queries and keys in ``(h w)`` order, zero off the cross.

    Parameters: ``2(C·C' + C') + C² + C + 1`` = ``1.25C² + 1.25C + 1`` when 8 divides C
    (W_q, W_k, W_v with biases, and γ), shared by the R passes.

    Identity at initialisation: γ is a zero-initialised scalar (as in the official code), so
    every pass, hence the module, returns its input exactly until γ is trained.

    A bias the softmax cancels: the key convolution's bias b_k adds Q_u · b_k to every logit of
    u's path (column and row alike, one softmax), so b_k (C' of the parameters counted above)
    changes no output, in every pass, and its gradient is zero (exactly in exact arithmetic;
    rounding noise in floating point, which Adam can still turn into steps: b_k then drifts
    without changing anything). It is kept because the official ``key_conv`` has it.

    Differences from the official code: the same computation, with Q, K and V from one 1×1
    convolution whose filters are those of ``query``, ``key`` and ``value`` stacked (one pass over
    the input instead of three; the parameters stay three convolutions), written with einsum over
    ``(b, h, w, path)`` instead of permutes and ``bmm`` over ``(B·W, H, H)`` and ``(B·H, W, W)``;
    the -inf diagonal is built from H with torch ops on the input's device (the official
    ``INF`` calls ``.cuda()`` and fails on a CPU); the recurrence, a loop in ``RCCAModule``
    outside the attention module, is inside this module (``recurrence=R``).
    """

    def __init__(self, channels: int, *, reduction: int = 8, recurrence: int = 2) -> None:
        super().__init__()
        self.channels = check_channels(self, channels)
        self.reduction = check_positive_int(self, "reduction", reduction)
        self.recurrence = check_positive_int(self, "recurrence", recurrence)
        self.inner = channels // self.reduction  # C'
        if self.inner < 1:
            raise ValueError(
                f"{type(self).__name__} expected reduction <= channels so that the query/key width "
                f"C' = channels // reduction is at least 1, got channels={channels}, reduction={reduction}"
            )
        self.query = nn.Conv2d(channels, self.inner, 1)  # W_q: C -> C'
        self.key = nn.Conv2d(channels, self.inner, 1)  # W_k: C -> C'
        self.value = nn.Conv2d(channels, channels, 1)  # W_v: C -> C
        self.gamma = nn.Parameter(torch.zeros(1))  # γ, zero at init: the identity
        self.gate = Gate(nn.Softmax(dim=-1), kind="attention")  # softmax over [column; row] path

    def _stacked(self) -> tuple[torch.Tensor, torch.Tensor]:
        """W_q, W_k, W_v stacked into one 1×1 convolution C -> 2C' + C (and their biases)."""
        weight = torch.cat([self.query.weight, self.key.weight, self.value.weight])
        return weight, torch.cat([self.query.bias, self.key.bias, self.value.bias])

    def _weights(self, x: torch.Tensor, stacked: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """The path weights A (B, H, W, H + W) of one pass on x, and the values V."""
        # Q, K (B, C', H, W) and V (B, C, H, W) by one convolution: the same numbers as
        # self.query(x), self.key(x), self.value(x), with one pass over x instead of three.
        q, k, v = F.conv2d(x, *stacked).split([self.inner, self.inner, self.channels], dim=1)
        e_col = einsum(q, k, "b c h w, b c g w -> b h w g")  # (1) d over u's column: key (g, w)
        e_row = einsum(q, k, "b c h w, b c h v -> b h w v")  # (1) d over u's row: key (h, v)
        e_col = e_col.masked_fill(_cross_mask(x.shape[2], x.device), float("-inf"))  # u counted once
        return self.gate(torch.cat([e_col, e_row], dim=-1)), v  # A: one softmax over H + W

    def _pass(self, x: torch.Tensor, stacked: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        a, v = self._weights(x, stacked)
        a_col, a_row = a[..., : x.shape[2]], a[..., x.shape[2] :]  # split the path: H | W
        out = einsum(a_col, v, "b h w g, b c g w -> b c h w")  # Σ over the column
        out = out + einsum(a_row, v, "b h w v, b c h v -> b c h w")  # + Σ over the row
        return self.gamma * out + x  # (2)

    def single_pass(self, x: torch.Tensor) -> torch.Tensor:
        """One criss-cross pass, eq. (2): ``γ Σ_i A_{i,u} Φ_{i,u} + x`` (forward applies it R times)."""
        check_input(self, x, self.channels)
        return self._pass(x, self._stacked())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(self, x, self.channels)
        stacked = self._stacked()  # the shared weights, stacked once for the R passes
        for _ in range(self.recurrence):  # R passes, shared weights (a constant, not a tensor value)
            x = self._pass(x, stacked)
        return x

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        """The first pass's weights as a dense (B, 1, H*W, H*W) matrix: row (h w) is query u, column
        (g v) key i; zero off u's row and column; each row sums to 1."""
        check_input(self, x, self.channels)
        h, w = x.shape[2], x.shape[3]
        a, _ = self._weights(x, self._stacked())
        a_col, a_row = a[..., :h], a[..., h:]
        eye_w = torch.eye(w, dtype=a.dtype, device=a.device)
        eye_h = torch.eye(h, dtype=a.dtype, device=a.device)
        dense = einsum(a_col, eye_w, "b h w g, w v -> b h w g v")  # key (g, v) in u's column: v = w
        dense = dense + einsum(a_row, eye_h, "b h w v, h g -> b h w g v")  # key in u's row: g = h
        return rearrange(dense, "b h w g v -> b 1 (h w) (g v)")

    def extra_repr(self) -> str:
        return f"channels={self.channels}, reduction={self.reduction}, inner={self.inner}, recurrence={self.recurrence}"
