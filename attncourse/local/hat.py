"""HAT's two attention blocks as plug-ins on feature maps (Chen et al., "Activating More Pixels in
Image Super-Resolution Transformer", CVPR 2023): the hybrid attention of its HAB (window
self-attention beside a small convolutional channel-attention branch, CAB) and its overlapping
cross-attention (OCAB: queries from M × M windows, keys and values from larger, overlapping
windows). Chapter: ``chapters/local/hat.md``."""

from __future__ import annotations

import math
import numbers

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from .._checks import check_channels, check_choice, check_heads, check_input, check_positive_int
from .._registry import register
from ..layers import Gate
from .window import MASK_VALUE, WindowAttention2d

__all__ = ["ChannelAttentionBlock", "HybridAttentionBlock2d", "OverlappingCrossAttention2d", "ocab_relative_index"]

#: What OCAB does with a key that lies outside the map: ``"zeros"`` (the official code: a zero key
#: and a zero value that still take part in the softmax) or ``"masked"`` (left out, as
#: ``WindowAttention2d`` leaves out its padding keys).
BORDERS = ("zeros", "masked")


def _check_number(module: object, arg: str, value: object, *, minimum: float = 0.0) -> float:
    """A real, finite number ``>= minimum`` (bools refused)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value < minimum:
        raise ValueError(f"{type(module).__name__} expected {arg} to be a finite number >= {minimum}, got {value!r}")
    return float(value)


class ChannelAttentionBlock(nn.Module):
    r"""HAT's channel attention block (CAB): conv 3×3 (C → C/β), GELU, conv 3×3 (C/β → C), then
    RCAN's channel attention (global average pooling, 1×1 conv C → C/γ, ReLU, 1×1 conv C/γ → C,
    sigmoid, scale). The branch that ``HybridAttentionBlock2d`` adds, times α, beside the window
    attention; on its own it is not a residual module (it returns the branch, not ``x + ...``).

    Paper: X. Chen, X. Wang, J. Zhou, Y. Qiao, C. Dong, "Activating More Pixels in Image
    Super-Resolution Transformer", CVPR 2023, arXiv:2205.04437, section 3.2 (the HAB); official
    code ``XPixelGroup/HAT``, ``hat/archs/hat_arch.py`` (``CAB``, ``ChannelAttention``).

    ``u = W_2 * GELU(W_1 * x + b_1) + b_2`` (3×3 convolutions, padding 1), then
    ``s = sigmoid(W_u ReLU(W_d GAP(u) + b_d) + b_u)`` (C weights per image, through ``gate``) and
    ``CAB(x) = s ⊙ u``.

    Args:
        channels: C.
        compress_ratio: β; the hidden width is ``max(1, C // β)``.
        squeeze_factor: γ; the channel attention's hidden width is ``max(1, C // γ)``. The
            official code writes ``C // β`` and ``C // γ`` and fails for C < β or C < γ (a
            convolution with 0 channels); the floor at 1 is the course's.
        zero_init: ``True``: the second 3×3 convolution (weight and bias) starts at zero, so the
            branch starts at exactly 0; ``False``: PyTorch's default start.

    Parameters: ``18 C c_β + 2 C c_γ + c_β + c_γ + 2C`` with ``c_β = max(1, C // β)``,
    ``c_γ = max(1, C // γ)`` (the paper's ``18C²/β + 2C²/γ + C/β + C/γ + 2C`` when β and γ divide C).
    """

    def __init__(self, channels: int, *, compress_ratio: int = 3, squeeze_factor: int = 30, zero_init: bool = False) -> None:
        super().__init__()
        self.channels = check_channels(self, channels)
        self.compress_ratio = check_positive_int(self, "compress_ratio", compress_ratio)
        self.squeeze_factor = check_positive_int(self, "squeeze_factor", squeeze_factor)
        check_choice(self, "zero_init", zero_init, (True, False))
        self.hidden = max(1, self.channels // self.compress_ratio)  # c_β = C / β
        self.squeezed = max(1, self.channels // self.squeeze_factor)  # c_γ = C / γ
        self.conv1 = nn.Conv2d(channels, self.hidden, 3, padding=1)  # W_1, b_1
        self.act = nn.GELU()
        self.conv2 = nn.Conv2d(self.hidden, channels, 3, padding=1)  # W_2, b_2
        self.down = nn.Conv2d(channels, self.squeezed, 1)  # W_d, b_d
        self.up = nn.Conv2d(self.squeezed, channels, 1)  # W_u, b_u
        self.gate = Gate(nn.Sigmoid(), kind="channel")  # s: one weight per channel and image
        if zero_init:
            nn.init.zeros_(self.conv2.weight)
            nn.init.zeros_(self.conv2.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(self, x, self.channels)
        u = self.conv2(self.act(self.conv1(x)))  # u = W_2 * GELU(W_1 * x + b_1) + b_2
        z = u.sum(dim=(2, 3), keepdim=True) / (u.shape[2] * u.shape[3])  # GAP(u): (B, C, 1, 1)
        s = self.gate(self.up(F.relu(self.down(z))))  # s = sigmoid(W_u ReLU(W_d z + b_d) + b_u)
        return u * s  # CAB(x) = s ⊙ u

    def extra_repr(self) -> str:
        return f"channels={self.channels}, compress_ratio={self.compress_ratio}, squeeze_factor={self.squeeze_factor}"


@register("hab")
class HybridAttentionBlock2d(nn.Module):
    r"""The attention of HAT's hybrid attention block (HAB) as a residual plug-in on a ``(B, C, H, W)``
    map: window self-attention beside a convolutional channel-attention branch scaled by α,
    ``x + W-MSA(x) + α · CAB(x)``.

    Paper: X. Chen, X. Wang, J. Zhou, Y. Qiao, C. Dong, "Activating More Pixels in Image
    Super-Resolution Transformer", CVPR 2023, arXiv:2205.04437, section 3.2; official code
    ``XPixelGroup/HAT``, ``hat/archs/hat_arch.py`` (``HAB``, ``CAB``, ``ChannelAttention``,
    ``WindowAttention``). The paper's HAB is::

        X_N = LN(X),   X_M = (S)W-MSA(X_N) + α CAB(X_N) + X,   Y = MLP(LN(X_M)) + X_M

    This module is the middle equation without the LayerNorm (X_N = X): ``forward`` returns
    ``x + W-MSA(x) + α · CAB(x)``. The LayerNorm before and the MLP after are left out, as the
    course's MHSA and ``WindowAttention2d`` leave them out: the plug-in sits in a convolutional
    network after a batch norm (its ``ConvBlock``), not in a transformer block.

    W-MSA is the package's ``WindowAttention2d`` (``self.attn``; HAT's ``WindowAttention`` is
    Swin's: relative position bias, and with ``shift > 0`` the cyclic shift and its mask; HAT
    alternates ``shift=0`` and ``M // 2`` from one HAB to the next). ``WindowAttention2d`` returns
    ``x + W-MSA(x)``, so forward adds ``α · CAB(x)`` to its output. CAB is
    :class:`ChannelAttentionBlock` (``self.cab``): conv 3×3 C → C/β, GELU, conv 3×3 C/β → C, RCAN's
    channel attention (GAP, 1×1 C → C/γ, ReLU, 1×1, sigmoid through a ``Gate``, scale). α is a
    fixed number (``conv_scale`` in the official code), not learned.

    Args:
        channels: C.
        window_size: M. The course's default is 8, not HAT's 16: on this course's maps (12 to 18
            pixels across) a 16 × 16 window holds the whole map, and nothing local is left to
            study; 8 is the window of SwinIR (Liang et al. 2021), the network HAT builds on
            (its official ``main_test_swinir.py`` builds SwinIR with ``window_size=8``), and gives
            an OCAB with the official code's even overlap. Pass ``window_size=16`` for HAT's.
        heads: the number of heads; ``None`` (default): C / 32 (a head width of 32, as
            ``WindowAttention2d``), which needs C divisible by 32. HAT uses 6 heads at C = 180
            (a head width of 30).
        shift: s, Swin's cyclic shift (0 <= s < M; 0: W-MSA, HAT's odd blocks use M // 2).
        alpha: α, the weight of the CAB branch (``conv_scale``, 0.01 in HAT).
        compress_ratio: β (3 in HAT): CAB's hidden width ``max(1, C // β)``.
        squeeze_factor: γ (30 in HAT): the channel attention's hidden width ``max(1, C // γ)``
            (a single unit for every C < 60, e.g. 32; 6 at HAT's C = 180). The official code
            writes ``C // β`` and ``C // γ`` and cannot be built for C < γ (a convolution with 0
            channels); the floor at 1 is the course's.
        identity_init: ``True`` (default, the course's rule): W-MSA's W^O and CAB's second 3×3
            convolution start at zero, so the module starts as the identity; ``False``: both keep
            PyTorch's default start.

    Padding: ``WindowAttention2d`` pads H, W to multiples of M with zeros and masks the padding
    keys (the official code needs H, W divisible by M: its test script reflect-pads the image);
    CAB's 3×3 convolutions zero-pad by 1, as in the official code.

    Shapes: ``(B, C, H, W)`` → ``(B, C, H, W)``, any H, W ≥ 1.

    Parameters: W-MSA's ``4C² + 4C + heads · (2M − 1)²`` plus CAB's
    ``18 C c_β + 2 C c_γ + c_β + c_γ + 2C`` with ``c_β = max(1, C // β)``, ``c_γ = max(1, C // γ)``
    (the paper's ``18C²/β + 2C²/γ + C/β + C/γ + 2C``).

    Gates: CAB's sigmoid (``cab.gate``, kind ``"channel"``) records the channel weights in any
    forward pass; the window softmax is ``WindowAttention2d``'s (fused in forward; its ``gate`` runs
    in ``attention(x)``, which returns its weights ``(B, nW, heads, M², M²)``).

    Export: B is dynamic; H and W are exported static because its window attention
    (attncourse.local.window.WindowAttention2d) does not export with a dynamic H or W yet (see
    that module's docstring). ``torch.compile`` works at any size.
    """

    export_static_dims = {
        "H": "its window attention (attncourse.local.window.WindowAttention2d) does not export with a dynamic H or W yet (see that module's docstring)",
        "W": "its window attention (attncourse.local.window.WindowAttention2d) does not export with a dynamic H or W yet (see that module's docstring)",
    }

    def __init__(
        self, channels: int, *, window_size: int = 8, heads: int | None = None, shift: int = 0, alpha: float = 0.01,
        compress_ratio: int = 3, squeeze_factor: int = 30, identity_init: bool = True,
    ) -> None:
        super().__init__()
        self.channels = check_channels(self, channels)
        self.window_size = check_positive_int(self, "window_size", window_size)
        self.heads = check_heads(self, self.channels, heads, width=32, source="a ")
        if not (isinstance(shift, int) and not isinstance(shift, bool) and 0 <= shift < self.window_size):
            raise ValueError(f"{type(self).__name__} expected 0 <= shift < window_size = {self.window_size}, got {shift!r}")
        self.shift = shift
        self.alpha = _check_number(self, "alpha", alpha)
        check_choice(self, "identity_init", identity_init, (True, False))
        self.identity_init = bool(identity_init)
        self.attn = WindowAttention2d(  # W-MSA (or SW-MSA): returns x + W-MSA(x)
            self.channels, window_size=self.window_size, heads=self.heads, shift=shift, identity_init=self.identity_init
        )
        self.cab = ChannelAttentionBlock(  # CAB(x), zero at the start with identity_init
            self.channels, compress_ratio=compress_ratio, squeeze_factor=squeeze_factor, zero_init=self.identity_init
        )

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        """W-MSA's weights, ``(B, nW, heads, M², M²)``: ``WindowAttention2d.attention`` (windows in
        row-major order of the padded, rolled map, tokens ``(m1 m2)`` inside a window)."""
        check_input(self, x, self.channels)
        return self.attn.attention(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(self, x, self.channels)
        return self.attn(x) + self.alpha * self.cab(x)  # (x + W-MSA(x)) + α CAB(x)

    def extra_repr(self) -> str:
        return (f"channels={self.channels}, window_size={self.window_size}, heads={self.heads}, shift={self.shift}, "
                f"alpha={self.alpha}, identity_init={self.identity_init}")


def ocab_relative_index(window_size: int, overlap_size: int) -> torch.Tensor:
    """``(M², M_o²)``: the entry of OCAB's flattened ``(M + M_o − 1) × (M + M_o − 1)`` bias table
    that query ``n`` (``(m1 m2)`` order in its M × M window) reads for key ``k`` (``(m1 m2)`` order in
    the M_o × M_o key window), at the offset key − query in the map,
    ``(dy + p + M − 1)(M + M_o − 1) + (dx + p + M − 1)`` with p = ⌊(M_o − M) / 2⌋ the key window's
    overhang at the top and left. (The official index counts the same offsets in another order.)"""
    m, mo = window_size, overlap_size
    side = m + mo - 1
    qy, qx = (t.reshape(-1) for t in torch.meshgrid(torch.arange(m), torch.arange(m), indexing="ij"))
    ky, kx = (t.reshape(-1) for t in torch.meshgrid(torch.arange(mo), torch.arange(mo), indexing="ij"))
    # key row in the map (iM - p + ky) minus query row (iM + qy), + p + M - 1: ky - qy + M - 1, in [0, side)
    dy = ky[None, :] - qy[:, None] + m - 1
    dx = kx[None, :] - qx[:, None] + m - 1
    return dy * side + dx


@register("ocab")
class OverlappingCrossAttention2d(nn.Module):
    r"""HAT's overlapping cross-attention (OCAB) as a residual plug-in on a ``(B, C, H, W)`` map: the
    queries of each M × M window attend to the keys and values of a larger M_o × M_o window around
    it, which overlaps its neighbours', ``x + proj(OCA(x))``.

    Paper: X. Chen, X. Wang, J. Zhou, Y. Qiao, C. Dong, "Activating More Pixels in Image
    Super-Resolution Transformer", CVPR 2023, arXiv:2205.04437, section 3.2 (OCAB); official code
    ``XPixelGroup/HAT``, ``hat/archs/hat_arch.py`` (``OCAB``, ``HAT.calculate_rpi_oca``).

    From the tokens ``T = rearrange(x, "b c h w -> b h w c")``: ``Q, K, V = T W^Q, T W^K, T W^V``
    (one Linear with biases). The queries are split into non-overlapping M × M windows; window
    (i, j) reads the keys and values of the M_o × M_o window whose top-left corner is
    ``(iM − p, jM − p)``, ``M_o = M + ⌊λM⌋``, ``p = ⌊(M_o − M) / 2⌋`` (the official
    ``nn.Unfold(kernel_size=M_o, stride=M, padding=p)``). Per head (d = C / heads)::

        OCA(Q, K, V) = softmax(Q K^T / sqrt(d) + B) V,   B from a (M + M_o − 1)² table per head

    and ``forward`` returns ``x + rearrange(OCA W^O, "b h w c -> b c h w")`` (W^O with bias).
    B is read at the offset key − query (``ocab_relative_index``); the table starts truncated
    normal with std 0.02, as the official one.

    The paper's OCAB also has a LayerNorm before the attention and an MLP (with its LayerNorm)
    after it: ``Y = MLP(LN(X_M)) + X_M`` with ``X_M = x + OCA(LN(x)) W^O``. The plug-in leaves both
    out, as the course's MHSA does.

    Keys outside the map (``border``): near the border, part of a key window lies outside the map.
    ``"zeros"`` (default, the official code): such keys are zero vectors with zero values (the
    official code unfolds the projected K and V with zero padding), so they *take part* in the
    softmax with the logit ``B`` alone and dilute the weights of the real keys. ``"masked"``: they
    are left out (logit −100, as ``WindowAttention2d`` treats its padding keys). The same rule
    holds for the keys in the padding to a multiple of M below.

    Differences from the official code, and why:

    - Any H, W ≥ 1: the official code needs H and W divisible by M; the module pads the map to
      multiples of M at the bottom and right (queries in the padding are computed and dropped),
      and every key outside the map follows ``border``. On a map whose sides divide by M and
      with ``border="zeros"`` it equals the official code.
    - Any overlap: the official unfold's symmetric padding p works only when M_o − M is even (at
      M = 6, λ = 0.5: M_o = 9, and the unfold gives one window too few per side and the code
      fails); the module gives each key window the official start ``iM − p`` and size M_o
      (one more padding row or column at the bottom and right).
    - The bias table is indexed by key − query, one entry per offset. The official index adds
      ``M − M_o + 1`` where ``M − 1`` would make it start at 0, so it runs from
      ``(2 − M_o)(M + M_o)`` upwards and its negative entries wrap round to the end of the table;
      every offset still has its own entry, so it is the same function of the table with its
      entries in another order (the tests check both).
    - When the whole map fits in one window, forward computes a second window and drops it: a
      window count that can be 1 would make ``torch.export`` fix H and W (it specialises a tensor
      dimension of size 1). Cost: one window's attention, on maps of at most M × M only.

    Args:
        channels: C.
        window_size: M, the query window. The course's default is 8, not HAT's 16 (see
            ``HybridAttentionBlock2d``: the course's maps are 12 to 18 pixels across); 8 gives
            M_o = 12 and the official even overlap. Pass ``window_size=16`` for HAT's.
        overlap_ratio: λ (0.5 in HAT): M_o = M + ⌊λM⌋ (the official ``int(window_size * overlap_ratio)``).
        heads: the number of heads; ``None`` (default): C / 32 (needs C divisible by 32). HAT:
            6 heads at C = 180.
        border: ``"zeros"`` (default, official) or ``"masked"``, see above.
        identity_init: ``True`` (default, the course's rule): W^O (weight and bias) starts at zero,
            so the module starts as the identity; ``False``: ``nn.Linear``'s default start.

    Shapes: ``(B, C, H, W)`` → ``(B, C, H, W)``, any H, W ≥ 1. ``attention(x)`` returns the weights
    ``(B, heads, H*W, M_o²)``: for each query (``(h w)`` order) its weights over its M_o × M_o key
    window (``(m1 m2)`` order, top-left key first), rows summing to 1, exactly those forward
    applies (forward calls ``F.scaled_dot_product_attention``; the softmax ``gate`` runs in
    ``attention(x)``).

    Parameters: ``4C² + 4C + heads · (M + M_o − 1)²``.
    """

    def __init__(
        self, channels: int, *, window_size: int = 8, overlap_ratio: float = 0.5, heads: int | None = None,
        border: str = "zeros", identity_init: bool = True,
    ) -> None:
        super().__init__()
        self.channels = check_channels(self, channels)
        self.window_size = check_positive_int(self, "window_size", window_size)
        self.overlap_ratio = _check_number(self, "overlap_ratio", overlap_ratio)
        self.heads = check_heads(self, self.channels, heads, width=32, source="a ")
        check_choice(self, "border", border, BORDERS)
        check_choice(self, "identity_init", identity_init, (True, False))
        self.border = border
        self.identity_init = bool(identity_init)
        self.head_dim = self.channels // self.heads
        m = self.window_size
        self.overlap_size = m + int(m * self.overlap_ratio)  # M_o = M + floor(λ M), as the official code
        self.pad = (self.overlap_size - m) // 2  # p: the key window's overhang at the top and left
        side = m + self.overlap_size - 1
        self.qkv = nn.Linear(channels, 3 * channels)  # [W^Q; W^K; W^V]
        self.proj = nn.Linear(channels, channels)  # W^O
        if self.identity_init:
            nn.init.zeros_(self.proj.weight)
            nn.init.zeros_(self.proj.bias)
        self.relative_bias = nn.Parameter(torch.empty(self.heads, side, side))  # B: one table per head
        nn.init.trunc_normal_(self.relative_bias, std=0.02)  # as the official relative_position_bias_table
        self.register_buffer("relative_index", ocab_relative_index(m, self.overlap_size), persistent=False)
        self.gate = Gate(nn.Softmax(dim=-1), kind="attention")  # the softmax, used by attention(x)

    def _windows(self, x: torch.Tensor):
        """Queries, keys and values of every window, ``(B n, heads, M², d)`` and ``(B n, heads, M_o², d)``,
        the additive bias (+ mask) of the logits, and the window count per row ``nw``, the count ``n``
        (at least 2, see the docstring) and the window of each position."""
        b, c, h, w = x.shape
        m, mo, p = self.window_size, self.overlap_size, self.pad
        dev = x.device
        nh, nw = (h + m - 1) // m, (w + m - 1) // m  # windows per column and per row (padding to a multiple of M)
        n = torch.sym_max(nh * nw, 2)  # windows computed: at least 2 (a second, dropped one if the map is one window)
        win = torch.arange(n, device=dev)
        wy = torch.div(win, nw, rounding_mode="floor")  # each window's row i ...
        wx = win - wy * nw  # ... and column j
        r, ro = torch.arange(m, device=dev), torch.arange(mo, device=dev)
        qy, qx = wy[:, None] * m + r, wx[:, None] * m + r  # (n, M): the rows / columns of its queries
        ky, kx = wy[:, None] * m + ro - p, wx[:, None] * m + ro - p  # (n, M_o): of its keys, from iM - p
        inside = ((ky >= 0) & (ky < h))[:, :, None] & ((kx >= 0) & (kx < w))[:, None, :]  # (n, M_o, M_o)
        t = rearrange(x, "b c h w -> b h w c")
        q, kv = self.qkv(t).split([c, 2 * c], dim=-1)  # Q = T W^Q; [K, V] = T [W^K, W^V]
        qw = q[:, qy.clamp(max=h - 1)[:, :, None], qx.clamp(max=w - 1)[:, None, :]]  # (B, n, M, M, C); padding rows repeat
        kvw = kv[:, ky.clamp(0, h - 1)[:, :, None], kx.clamp(0, w - 1)[:, None, :]]  # (B, n, M_o, M_o, 2C)
        kvw = kvw * inside[..., None].to(kvw.dtype)  # keys outside the map: zero key, zero value (official)
        qw = rearrange(qw, "b n m1 m2 (h d) -> (b n) h (m1 m2) d", h=self.heads)
        k, v = rearrange(kvw, "b n o1 o2 (two h d) -> two (b n) h (o1 o2) d", two=2, h=self.heads)
        bias = self.relative_bias.flatten(1)[:, self.relative_index].to(q.dtype)  # B: (heads, M², M_o²)
        if self.border == "masked":  # + MASK_VALUE on the keys outside the map, per window
            mask = (~inside).reshape(n, 1, 1, mo * mo).to(q.dtype) * MASK_VALUE
            bias = (bias + mask).repeat(b, 1, 1, 1)  # (B n, heads, M², M_o²)
        # the window (in the order computed) and the place in it of every position of the map
        yy, xx = torch.arange(h, device=dev), torch.arange(w, device=dev)
        where = ((yy // m)[:, None] * nw + (xx // m)[None, :], (yy % m)[:, None], (xx % m)[None, :])  # each (H, W)
        return qw, k, v, bias, n, where

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        """The weights ``softmax(Q K^T / sqrt(d) + B)`` of every query over its M_o × M_o key window,
        ``(B, heads, H*W, M_o²)``, queries in ``(h w)`` order, keys in ``(o1 o2)`` order; rows sum to 1."""
        check_input(self, x, self.channels)
        b, _, h, w = x.shape
        q, k, _, bias, n, (wi, yi, xi) = self._windows(x)
        a = self.gate(q @ k.transpose(-2, -1) * self.head_dim**-0.5 + bias)  # (B n, heads, M², M_o²)
        a = rearrange(a, "(b n) h (m1 m2) k -> b h n m1 m2 k", b=b, m1=self.window_size)
        return rearrange(a[:, :, wi, yi, xi], "b h y x k -> b h (y x) k")  # each position's row

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(self, x, self.channels)
        b, c, h, w = x.shape
        q, k, v, bias, n, (wi, yi, xi) = self._windows(x)
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)  # softmax(Q K^T / sqrt(d) + B) V: (B n, heads, M², d)
        o = rearrange(o, "(b n) h (m1 m2) d -> b n m1 m2 (h d)", b=b, m1=self.window_size)  # heads concatenated
        o = self.proj(o[:, wi, yi, xi])  # back on the map (padding and the extra window dropped), then W^O: (B, H, W, C)
        return x + rearrange(o, "b h w c -> b c h w")  # residual

    def extra_repr(self) -> str:
        return (f"channels={self.channels}, window_size={self.window_size}, overlap_size={self.overlap_size}, "
                f"heads={self.heads}, border={self.border!r}, identity_init={self.identity_init}")
