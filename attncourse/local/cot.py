"""The Contextual Transformer block (CoT; Li, Yao, Pan, Mei, TPAMI 2022), a drop-in for a 3 × 3
convolution. Chapter: ``chapters/local/cot.md``."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from .._checks import check_channels, check_divisible, check_input, check_positive_int
from .._registry import register
from ..layers import Gate

__all__ = ["ContextualTransformer2d", "local_aggregation"]


def local_aggregation(v: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    r"""The official CUDA kernel's local aggregation (``aggregation_zeropad``, one weight head),
    with ``F.unfold``: ``out[b, c, y, x] = Σ_{i,j} a[b, c mod G, i k + j, y, x] · v[b, c, y + i − p, x + j − p]``,
    zero outside the map, p = (k − 1) / 2.

    Args:
        v: the values, ``(B, C, H, W)``.
        a: the local weights, ``(B, G, k², H, W)``, G dividing C; channel c of ``v`` uses weight
            map ``c mod G`` (the kernel's ``c % weight_channels``: the C/G channels sharing a map
            are interleaved, not a contiguous block).

    Returns:
        ``(B, C, H, W)``.
    """
    b, c, h, w = v.shape
    g, kk = a.shape[1], a.shape[2]
    k = int(round(kk**0.5))
    cols = F.unfold(v, k, padding=(k - 1) // 2)  # (B, C k², H W): the k × k neighbours of every position
    cols = rearrange(cols, "b (r g kk) (h w) -> b r g kk h w", g=g, kk=kk, h=h)  # c = r G + g: map c mod G
    out = (cols * a[:, None]).sum(3)  # Σ over the k² neighbours, (B, C/G, G, H, W)
    return rearrange(out, "b r g h w -> b (r g) h w")


@register("cot")
class ContextualTransformer2d(nn.Module):
    r"""The Contextual Transformer (CoT) block: a k × k convolution's static context fused with a
    dynamic context aggregated by k × k attention weights computed from the query and that static
    context, on a ``(B, C, H, W)`` map.

    Paper: Y. Li, T. Yao, Y. Pan, T. Mei, "Contextual Transformer Networks for Visual Recognition",
    IEEE TPAMI 2022 (45(2):1489-1500), arXiv:2107.12292. Official code: JDAI-CV/CoTNet,
    ``models/cotnet.py``, class ``CotLayer``, whose local aggregation is the CuPy/CUDA kernel of
    ``cupy_layers/aggregation_zeropad.py``.

    Equations (the course's labels; K = Q = X, as in the paper)::

        (a) static context    K¹ = ReLU(BN(conv_{k×k, groups}(X)))
        (b) attention         A  = GN(W_δ ReLU(BN(W_θ [Q, K¹])))     W_θ: 2C → C/f, W_δ: C/f → k² C/s
        (c) values            V  = BN(W_v X)                         W_v: 1 × 1, C → C
        (d) dynamic context   K² = swish(BN(V ⊛ A))
            V ⊛ A at (y, x), channel c: Σ_{i,j} A[c mod C/s, (i, j), y, x] · V[c, y + i − p, x + j − p]
        (e) fusion            u = GAP(K¹ + K²);  z = W_2 ReLU(BN(W_1 u));  (α_c, β_c) = softmax(z_{2c}, z_{2c+1})
                              Y = α ⊙ K² + β ⊙ K¹

    The two gates: ``self.local_gate`` is (b)'s GroupNorm (C/s groups, each the k² weights of one
    map over all positions, with its affine scale and shift), which plays the part of the softmax
    of self-attention and outputs A, ``(B, k² C/s, H, W)`` with channels in ``(g i j)`` order; it
    does not make weights that sum to 1 (they may be negative). ``self.gate`` is (e)'s softmax over
    the two branches, ``(B, 2, C)``: index 0 weighs K² (dynamic), index 1 K¹ (static), the order
    of the official ``torch.cat([x, k], dim=2)``. ``attention(x)`` returns A as ``(B, C/s, k², H, W)``.

    Plug-in interface: CoT is a *replacement* for a C → C 3 × 3 convolution with its BN and ReLU
    (CoTNet puts it in place of ``conv2``/``bn2``/``act2`` of every ResNet bottleneck; a stride-2
    bottleneck average-pools 3 × 3 with stride 2 before it). It maps ``(B, C, H, W)`` to
    ``(B, C, H, W)`` at stride 1 and has no residual path, so it is not the identity at
    initialisation (and, unlike the course's residual attention plug-ins, has no ``identity_init``:
    a zero start would make it output 0, not X). In the course's networks it sits in the attention
    slot after a block's BN like every module: there it is an *extra* layer after the block's own
    3 × 3 convolution, not a replacement for it.

    Args:
        channels: C.
        kernel_size: k, the neighbourhood of the static context and of the local aggregation (3 in
            CoTNet); odd, so that the size is kept.
        groups: the groups of the k × k convolution of (a) (official: 4); must divide C.
        share_planes: s, the number of channels that share one k × k weight map (official: 8);
            there are C/s maps, and s must divide C.
        factor: f, the reduction of W_θ's output, C/f (official: 2); must divide C.
        reduction: r of the fusion, whose hidden width is ``d = max(2C // r, min_dim)`` (official
            ``reduction_factor = 4`` with radix 2: d = max(C/2, 32)).
        min_dim: the smallest hidden width of the fusion (official: 32).

    Shapes: ``(B, C, H, W)`` → ``(B, C, H, W)``, any H, W ≥ 1 (zero padding, as the kernel's).

    Parameters (BN and GN: a scale and a shift per channel; biases only where the code has them:
    W_δ and the fusion's two layers)::

        k² C² / groups + 2C                      (a)
        + 2C · C/f + 2 C/f                       W_θ and its BN
        + (C/f) · k² C/s + 3 k² C/s              W_δ with bias, GroupNorm
        + C² + 2C + 2C                           W_v and its BN, the BN of (d)
        + 3 C d + 3 d + 2C                       fusion: C → d (bias) + BN, d → 2C (bias)

    at the defaults (k = 3, groups 4, f = 2, s = 8): ``77 C² / 16 + 99 C / 8 + 3 C d + 3 d``, fewer
    than the 9 C² of the 3 × 3 convolution it replaces from C = 32 on (more at C = 16, where d = 32
    dominates).

    Differences from the official ``CotLayer``: none in the computation. The CUDA kernel is
    replaced by ``F.unfold`` (``local_aggregation``; the kernel file's own test checks the same
    unfold form), so the module runs on any device and exports. The fusion's 1 × 1 convolutions on
    a ``(B, C, 1, 1)`` map are ``nn.Linear`` layers with ``BatchNorm1d`` (the same numbers, same
    state-dict order and sizes up to the trailing 1 × 1). The hyperparameters the code hard-codes
    (groups 4, share_planes 8, factor 2, reduction_factor 4, min 32) are keyword arguments with those
    defaults; the radix is 2 (K¹ and K²). Differences from the paper: the paper writes the
    concatenation [K¹, Q]; the code (and the module) concatenates [X, K¹] (a permutation of W_θ's
    input columns, nothing else). As our notes record the paper's equation, (b) shows no
    normalisation; the code's GroupNorm, which the module follows, is the only one.

    Batch size: the BN of the fusion normalises the pooled vector over the batch, so in training
    mode a batch of one sample has no statistics; the module then raises ``ValueError`` (in eval
    mode any batch size works).
    """

    def __init__(
        self,
        channels: int,
        *,
        kernel_size: int = 3,
        groups: int = 4,
        share_planes: int = 8,
        factor: int = 2,
        reduction: int = 4,
        min_dim: int = 32,
    ) -> None:
        super().__init__()
        self.channels = c = check_channels(self, channels)
        self.kernel_size = k = check_positive_int(self, "kernel_size", kernel_size)
        if k % 2 == 0:
            raise ValueError(f"{type(self).__name__} expected an odd kernel_size (the map keeps its size), got {k}")
        self.groups = check_positive_int(self, "groups", groups)
        check_divisible(self, "channels", c, "groups", self.groups)
        self.share_planes = check_positive_int(self, "share_planes", share_planes)
        check_divisible(self, "channels", c, "share_planes", self.share_planes)
        self.factor = check_positive_int(self, "factor", factor)
        check_divisible(self, "channels", c, "factor", self.factor)
        self.reduction = check_positive_int(self, "reduction", reduction)
        self.min_dim = check_positive_int(self, "min_dim", min_dim)
        self.maps = c // self.share_planes  # C/s weight maps (the kernel's weight_channels)
        self.hidden = max(2 * c // self.reduction, self.min_dim)  # d of the fusion
        kk = k * k
        self.key_embed = nn.Sequential(  # (a): K¹
            nn.Conv2d(c, c, k, padding=k // 2, groups=self.groups, bias=False), nn.BatchNorm2d(c), nn.ReLU(inplace=True)
        )
        self.embed = nn.Sequential(  # (b): W_θ (+ BN, ReLU), then W_δ
            nn.Conv2d(2 * c, c // self.factor, 1, bias=False), nn.BatchNorm2d(c // self.factor), nn.ReLU(inplace=True),
            nn.Conv2d(c // self.factor, kk * self.maps, 1),
        )
        self.local_gate = Gate(nn.GroupNorm(self.maps, kk * self.maps), kind="local")  # (b): A = GN(·)
        self.value = nn.Sequential(nn.Conv2d(c, c, 1, bias=False), nn.BatchNorm2d(c))  # (c): V
        self.bn = nn.BatchNorm2d(c)  # (d)
        self.act = nn.SiLU(inplace=True)  # (d): swish
        self.se = nn.Sequential(  # (e): W_1 + BN + ReLU, W_2
            nn.Linear(c, self.hidden), nn.BatchNorm1d(self.hidden), nn.ReLU(inplace=True), nn.Linear(self.hidden, 2 * c)
        )
        self.gate = Gate(nn.Softmax(dim=1), kind="branch")  # (e): softmax over (K², K¹)

    def _check(self, x: torch.Tensor) -> None:
        check_input(self, x, self.channels)
        if self.training and x.shape[0] < 2:
            raise ValueError(
                f"{type(self).__name__} in training mode needs a batch of at least 2 samples: the BatchNorm of the "
                f"fusion normalises the pooled vector over the batch, got batch size {x.shape[0]}; use a larger "
                "batch or call .eval()"
            )

    def _weights(self, x: torch.Tensor, k1: torch.Tensor) -> torch.Tensor:
        """(b): A, ``(B, k² C/s, H, W)``, channels in ``(g i j)`` order."""
        return self.local_gate(self.embed(torch.cat([x, k1], dim=1)))  # [Q, K¹] (the code's order) W_θ W_δ, GN

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        """The local weights A that forward applies, ``(B, C/s, k², H, W)``: map g, neighbour
        ``(i, j)`` at index ``i k + j``, position (y, x); channel c uses map ``c mod C/s``."""
        self._check(x)
        return rearrange(self._weights(x, self.key_embed(x)), "b (g kk) h w -> b g kk h w", g=self.maps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x)
        h, w = x.shape[2], x.shape[3]
        k1 = self.key_embed(x)  # (a): static context, (B, C, H, W)
        a = rearrange(self._weights(x, k1), "b (g kk) h w -> b g kk h w", g=self.maps)  # (b)
        k2 = self.act(self.bn(local_aggregation(self.value(x), a)))  # (c), (d): dynamic context
        u = (k1 + k2).sum(dim=(2, 3)) / (h * w)  # (e): u = GAP(K¹ + K²), (B, C); a sum / HW, as SK
        z = rearrange(self.se(u), "b (c r) -> b r c", r=2)  # the code's view(B, C, radix): z_{2c + r}
        wts = self.gate(z)  # (B, 2, C): softmax over the branches, per channel
        return wts[:, 0, :, None, None] * k2 + wts[:, 1, :, None, None] * k1  # Y = α K² + β K¹

    def extra_repr(self) -> str:
        return (
            f"channels={self.channels}, kernel_size={self.kernel_size}, groups={self.groups}, "
            f"share_planes={self.share_planes}, factor={self.factor}, reduction={self.reduction}, "
            f"min_dim={self.min_dim}, maps={self.maps}, hidden={self.hidden}"
        )
