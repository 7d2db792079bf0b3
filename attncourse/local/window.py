"""Window multi-head self-attention with a relative position bias, shifted or not (Swin Transformer,
Liu et al., ICCV 2021), as a plug-in on feature maps: Part V's first module (``"window"``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from .._checks import check_channels, check_choice, check_heads, check_input, check_positive_int
from .._registry import register
from ..layers import Gate
from ..selfattn.mhsa import relative_index

__all__ = ["WindowAttention2d"]

#: The value the official code adds to the logits of a key outside the query's region (and this
#: module also to padding keys): not -inf, so that no row can be all -inf.
MASK_VALUE = -100.0


def _regions(n: int, window: int, shift: int, device: torch.device) -> torch.Tensor:
    """The region of each row (or column) of a padded, cyclically shifted map of side ``n``, as the
    official code labels it with its slices ``(0, -M)``, ``(-M, -s)``, ``(-s, None)``: 0, 1, 2."""
    r = torch.arange(n, device=device)
    if shift == 0:
        return torch.zeros_like(r)
    return (r >= n - window).long() + (r >= n - shift).long()


@register("window")
class WindowAttention2d(nn.Module):
    r"""Multi-head self-attention inside M × M windows, with Swin's learned relative position bias
    and, with ``shift > 0``, Swin's shifted windows: ``x + W-MSA(x)`` (or SW-MSA) on a ``(B, C, H, W)`` map.

    Paper: Z. Liu, Y. Lin, Y. Cao, H. Hu, Y. Wei, Z. Zhang, S. Lin, B. Guo, "Swin Transformer:
    Hierarchical Vision Transformer using Shifted Windows", ICCV 2021, arXiv:2103.14030, eq. (4)
    and section 3.2; official code ``microsoft/Swin-Transformer``, ``models/swin_transformer.py``
    (``WindowAttention``, and the shift, partition and mask of ``SwinTransformerBlock``).

    Inside each window of M² tokens, every head computes
    ``softmax(Q K^T / sqrt(d) + B) V`` with B read from a table of (2M − 1)² learned biases per
    head, one per offset (key minus query; the official table is indexed by query minus key, the
    same numbers flipped), truncated normal with std 0.02 at the start as in the official code.
    With ``shift = s > 0`` the map is rolled by (−s, −s) before the partition and back after, and
    a query may attend only to keys of its own region of the rolled map (the official mask: −100
    on the logits of the others), so that windows that wrap round the border do not mix
    positions that are not neighbours. Swin alternates ``shift=0`` and ``shift=M // 2``.

    Padding (not in the paper; the official classification code requires H and W divisible by M):
    a map whose H or W is not a multiple of M is padded at the bottom and right with zeros to the
    next multiple, and cropped back after. Unlike Swin's detection code, which lets the padding
    tokens take part as keys, the module masks them (−100), so that the output at a real position
    does not depend on how much padding its window got.

    Args:
        channels: C.
        window_size: M (7 in Swin).
        heads: the number of heads; ``None`` (default): C / 32, Swin's head width of 32 (3 heads at
            C = 96), which needs C divisible by 32.
        shift: s, the cyclic shift, ``0 <= s < M`` (0: W-MSA; Swin's SW-MSA uses M // 2).
        bias: biases on the projections (``qkv_bias=True`` in Swin).
        identity_init: ``True`` (default, the course's rule): W^O starts at zero, so the module
            starts as the identity; ``False``: ``nn.Linear``'s default start.

    Shapes: ``(B, C, H, W)`` → ``(B, C, H, W)``, any H, W ≥ 1. Parameters:
    ``4C² + 4C`` (with biases) plus ``heads · (2M − 1)²``.

    ``forward`` computes the attention with ``F.scaled_dot_product_attention`` (bias and mask as
    its additive ``attn_mask``); ``attention(x)`` returns the weights of every window through the
    module's ``gate`` (``Gate(nn.Softmax(dim=-1))``), for pictures and hooks.

    Export: H and W are exported static, because the padding to a multiple of M and the number of
    windows are computed from H and W (the official classification code fixes the input resolution
    when the block is built, and builds its mask once for it). ``torch.compile(dynamic=True)``
    handles a new H and W with one recompile per shape family; ``torch.export`` with a symbolic H, W
    fails on guards the exporter cannot prove (``M * ceil(H / M) >= H``, one window per axis or
    more). Tried without success: padding by ``(-H) % M``, ``torch._check`` hints on the padding,
    and windows by ``F.unfold``/``F.fold`` (which specialise inside ``F.pad`` and ``unfold``).
    """

    export_static_dims = {
        "H": "the padding to a multiple of M and the number of windows are computed from H and W",
        "W": "the padding to a multiple of M and the number of windows are computed from H and W",
    }

    def __init__(
        self, channels: int, *, window_size: int = 7, heads: int | None = None, shift: int = 0,
        bias: bool = True, identity_init: bool = True,
    ) -> None:
        super().__init__()
        self.channels = check_channels(self, channels)
        self.window_size = check_positive_int(self, "window_size", window_size)
        self.heads = check_heads(self, self.channels, heads, width=32, source="Swin's ")
        if not (isinstance(shift, int) and not isinstance(shift, bool) and 0 <= shift < self.window_size):
            raise ValueError(f"{type(self).__name__} expected 0 <= shift < window_size = {self.window_size}, got {shift!r}")
        check_choice(self, "bias", bias, (True, False))
        check_choice(self, "identity_init", identity_init, (True, False))
        self.shift = shift
        self.bias = bool(bias)
        self.identity_init = bool(identity_init)
        self.head_dim = self.channels // self.heads
        m = self.window_size
        self.qkv = nn.Linear(channels, 3 * channels, bias=self.bias)  # [W^Q; W^K; W^V]
        self.proj = nn.Linear(channels, channels, bias=self.bias)  # W^O
        if self.identity_init:
            nn.init.zeros_(self.proj.weight)
            if self.bias:
                nn.init.zeros_(self.proj.bias)
        self.relative_bias = nn.Parameter(torch.empty(self.heads, 2 * m - 1, 2 * m - 1))  # B: one table per head
        nn.init.trunc_normal_(self.relative_bias, std=0.02)  # as the official relative_position_bias_table
        # the entry each query reads for each key of its window, (m1 m2) order, offset key - query
        self.register_buffer("relative_index", relative_index(m, m), persistent=False)
        self.gate = Gate(nn.Softmax(dim=-1), kind="attention")  # the softmax, used by attention(x)

    def _mask(self, h: int, w: int, nh: int, nw: int, device: torch.device) -> torch.Tensor:
        """(nW, 1, M², M²): MASK_VALUE where the key is in another region of the rolled map, or is
        padding; 0 elsewhere (all zeros without shift and padding: computed anyway, so that an
        exported or compiled module has no branch on H and W)."""
        m, s = self.window_size, self.shift
        hp, wp = nh * m, nw * m
        ry, rx = _regions(hp, m, s, device), _regions(wp, m, s, device)
        region = ry[:, None] * 3 + rx[None, :]  # (Hp, Wp): the official cnt
        rows = (torch.arange(hp, device=device) + s) % hp  # the original row of each row of the rolled map
        cols = (torch.arange(wp, device=device) + s) % wp
        pad = (rows[:, None] >= h) | (cols[None, :] >= w)  # (Hp, Wp): padding
        region = region.reshape(nh, m, nw, m).permute(0, 2, 1, 3).reshape(nh * nw, m * m)  # "(nh m1) (nw m2) -> (nh nw) (m1 m2)"
        pad = pad.reshape(nh, m, nw, m).permute(0, 2, 1, 3).reshape(nh * nw, m * m)
        masked = (region[:, None, :] != region[:, :, None]) | pad[:, None, :]  # (nW, queries, keys)
        return (masked.to(torch.float32) * MASK_VALUE)[:, None]

    def _windows(self, x: torch.Tensor):
        """The rolled, padded map's windows and their q, k, v: ``(B, nW·heads, M², d)`` each, the
        additive bias + mask ``(nW·heads, M², M²)`` (broadcast over the batch) and the sizes
        (b, h, w, nh, nw)."""
        check_input(self, x, self.channels)
        b, c, h, w = x.shape
        m, s = self.window_size, self.shift
        nh, nw = (h + m - 1) // m, (w + m - 1) // m  # windows per column and per row
        ph, pw = nh * m - h, nw * m - w  # padding to the next multiple of M
        t = rearrange(x, "b c h w -> b h w c")
        t = F.pad(t, (0, 0, 0, pw, 0, ph))  # zeros at the bottom and right (none if H, W divide)
        if s:
            t = torch.roll(t, shifts=(-s, -s), dims=(1, 2))  # the cyclic shift
        win = t.reshape(b, nh, m, nw, m, c).permute(0, 1, 3, 2, 4, 5).reshape(b, nh * nw, m * m, c)  # the windows
        # windows and heads share one axis, so that q, k, v are 4-D (as ONNX's attention needs) and
        # the (nW heads, M², M²) bias + mask broadcasts over the images instead of being repeated
        q, k, v = rearrange(self.qkv(win), "b n t (three h d) -> three b (n h) t d", three=3, h=self.heads)
        bias = self.relative_bias.flatten(1)[:, self.relative_index]  # (heads, M², M²)
        full = bias + self._mask(h, w, nh, nw, x.device).to(bias.dtype)  # (nW, heads, M², M²)
        return q, k, v, rearrange(full, "n h t u -> (n h) t u").to(q.dtype), (b, h, w, nh, nw)

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        """The weights ``softmax(Q K^T / sqrt(d) + B + mask)`` of every window and head,
        ``(B, nW, heads, M², M²)`` (windows in row-major order of the padded, rolled map; tokens
        (m1 m2) inside a window), rows summing to 1."""
        q, k, _, full, _ = self._windows(x)
        weights = self.gate(q @ k.transpose(-2, -1) * self.head_dim**-0.5 + full)  # (B, nW heads, M², M²)
        return rearrange(weights, "b (n h) t u -> b n h t u", h=self.heads)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v, full, (b, h, w, nh, nw) = self._windows(x)
        m, s, c = self.window_size, self.shift, self.channels
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=full)  # (B, nW heads, M², d)
        o = self.proj(rearrange(o, "b (n h) t d -> b n t (h d)", h=self.heads))
        o = o.reshape(b, nh, nw, m, m, c).permute(0, 1, 3, 2, 4, 5).reshape(b, nh * m, nw * m, c)
        if s:
            o = torch.roll(o, shifts=(s, s), dims=(1, 2))
        o = o[:, :h, :w]
        return x + rearrange(o, "b h w c -> b c h w")

    def extra_repr(self) -> str:
        return (f"channels={self.channels}, window_size={self.window_size}, heads={self.heads}, shift={self.shift}, "
                f"bias={self.bias}, identity_init={self.identity_init}")
