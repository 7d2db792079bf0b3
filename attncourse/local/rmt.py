"""Manhattan self-attention (MaSA) of RMT (Fan et al., CVPR 2024): multi-head self-attention whose
weights decay with the Manhattan distance between query and key, γ^(|Δx| + |Δy|), one γ per head,
with a 5 × 5 depthwise convolution on the values (LePE) added to the output; in full or in the
decomposed form (along W, then along H). Chapter: ``chapters/local/rmt.md``."""

from __future__ import annotations

import math
import numbers

import torch
from einops import einsum, rearrange
from torch import nn

from .._checks import check_channels, check_choice, check_heads, check_input, check_positive_int
from .._registry import register
from ..layers import Gate

__all__ = ["ManhattanSelfAttention2d", "manhattan_distance", "head_decays", "theta_shift"]

#: Where the decay enters: ``"logits"`` adds log D to the logits before the softmax (the official
#: code: the product renormalised); ``"product"`` multiplies the softmax by D (the paper's formula).
DECAYS = ("logits", "product")
#: The head width that ``heads=None`` takes: RMT-S's first stage, 64 channels in 4 heads.
HEAD_WIDTH = 16


def head_decays(heads: int, init_value: float = 2.0, heads_range: float = 4.0) -> torch.Tensor:
    """log γ_i of every head i = 0 … heads − 1, ``(heads,)``, as the official ``RetNetRelPos2d``
    computes it (in float32): ``log(1 − 2^(−init_value − heads_range · i / heads))``. Head 0 decays
    fastest (γ_0 = 1 − 2^−init_value); the last comes closest to 1, 1 − 2^−(init_value + heads_range)."""
    i = torch.arange(heads, dtype=torch.float32)
    return torch.log(1 - 2 ** (-init_value - heads_range * i / heads))


def manhattan_distance(h: int, w: int, *, device: torch.device | None = None) -> torch.Tensor:
    """``(H*W, H*W)``: ``|y_n − y_m| + |x_n − x_m|`` between every query n and key m, both in ``(h w)``
    order. Built from ``arange`` (no Python integers taken from the sizes), so a traced or
    exported module keeps H and W symbolic."""
    dy = (torch.arange(h, device=device)[:, None] - torch.arange(h, device=device)[None, :]).abs()  # (H, H)
    dx = (torch.arange(w, device=device)[:, None] - torch.arange(w, device=device)[None, :]).abs()  # (W, W)
    return rearrange(dy[:, None, :, None] + dx[None, :, None, :], "y x yy xx -> (y x) (yy xx)")


def _distance_1d(n: int, device: torch.device) -> torch.Tensor:
    """``(n, n)``: |i − j|, the distance along one axis."""
    r = torch.arange(n, device=device)
    return (r[:, None] - r[None, :]).abs()


def theta_shift(t: torch.Tensor, sin: torch.Tensor, cos: torch.Tensor) -> torch.Tensor:
    """The official ``theta_shift``: rotate every pair of channels (2j, 2j+1) of ``t`` by the angle
    whose sine and cosine are given (the pair's entries repeated), ``t cos + rot(t) sin`` with
    ``rot(a, b) = (−b, a)``: a rotary code (RoPE)."""
    pairs = t.unflatten(-1, (-1, 2))  # (..., d/2, 2)
    rotated = torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).flatten(-2)  # (a, b) -> (-b, a)
    return t * cos + rotated * sin


def _check_number(module: nn.Module, arg: str, value: object, *, positive: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or (
        value <= 0 if positive else value < 0
    ):
        bound = "> 0" if positive else ">= 0"
        raise ValueError(f"{type(module).__name__} expected {arg} to be a finite number {bound}, got {value!r}")
    return float(value)


@register("masa")
class ManhattanSelfAttention2d(nn.Module):
    r"""Manhattan self-attention (MaSA): multi-head self-attention over the H × W positions whose
    weights decay as ``γ^(|Δx| + |Δy|)`` with the Manhattan distance, one γ per head, plus a depthwise
    convolution of the values (LePE), as a residual plug-in ``x + W^O (MaSA(x) + LePE(V))``.

    Paper: Q. Fan, H. Huang, M. Chen, H. Liu, R. He, "RMT: Retentive Networks Meet Vision
    Transformers", CVPR 2024, arXiv:2309.11523 (section 3, Manhattan self-attention and its
    decomposition). Official code: ``qhfan/RMT``, ``classfication_release/RMT.py``
    (``RetNetRelPos2d``, ``VisionRetentionAll``, ``VisionRetentionChunk``, ``DWConv2d``,
    ``theta_shift``).

    With the tokens T = rearrange(x, "b c h w -> b (h w) c") and, per head, Q = T W^Q + b^Q,
    K = T W^K + b^K, V = T W^V + b^V, the paper writes::

        D_nm = γ^(|x_n − x_m| + |y_n − y_m|)                 (the spatial decay)
        MaSA(X) = (Softmax(Q K^T) ⊙ D) V                      (full)
        Attn_W = Softmax(Q_W K_W^T) ⊙ D^W,  D^W_nm = γ^|x_n − x_m|   (along each row)
        Attn_H = Softmax(Q_H K_H^T) ⊙ D^H,  D^H_nm = γ^|y_n − y_m|   (along each column)
        MaSA(X) = Attn_H (Attn_W V)^T                         (decomposed)
        X_out = MaSA(X) + LCE(V)                              (LCE: a 5 × 5 depthwise conv)

    and ``forward`` returns ``x + rearrange(X_out W^O + b^O, "b (h w) c -> b c h w")``.

    What the official code computes, which this module follows (``decay="logits"``, the default):

    - **the decay in the logits.** ``softmax(Q K^T / sqrt(d) + log D)``: ``log D = |Δ| log γ`` is added
      before the softmax, which equals ``Softmax(Q K^T) ⊙ D`` divided by its row sums (the
      authors' answer in qhfan/RMT issue #21). ``decay="product"`` is the paper's formula as
      written, the softmax times D, not renormalised: rows then sum to less than 1.
    - **one γ per head**, ``log γ_i = log(1 − 2^(−init_value − heads_range · i / heads))``
      (:func:`head_decays`): at the defaults, 4 heads have γ = 0.75, 0.875, 0.9375, 0.96875.
    - **a rotary code on q and k** (``theta_shift=True``): each pair of channels (2j, 2j+1) of
      q and k at position n is rotated by the angle n θ_j, θ_j = 10000^(−j / (d/2 − 1)) (the
      official ``1 / 10000 ** linspace(0, 1, d/2)``), where n = y W + x is the position's index
      in raster order (one dimension, not two: horizontal neighbours are 1 apart, vertical ones
      W). q · k then depends on the offset of the two positions in raster order, so the code
      depends on W. The paper does not write it (it comes from RetNet's xPos); ``False``
      leaves it out.
    - **the scale 1/sqrt(d)** on the logits (the official code scales k by d^−0.5 before the
      rotation; the paper writes Q K^T). **Biases** on the four projections and the LePE, as in
      the official code.
    - **the decomposed form** (``decomposed=True``; the official ``VisionRetentionChunk``, used in
      RMT's first three stages): attention along each row with D^W, then along each column, on
      the row pass's output, with D^H; both with the rotary code of the full form, both with the
      decay in the logits (or ``"product"``). It is *not* equal to the full form: a query reaches
      the key (y', x') only through (y', x), and the two softmaxes normalise separately. It is
      equal for a map of one row or one column, and whenever the logits do not depend on the
      content (q = 0): then softmax and decay both factorise over the two axes.

    The official block around it, ``RetBlock``, is ``x + CPE(x)`` (a 3 × 3 depthwise convolution),
    then ``x + MaSA(LayerNorm(x))`` and ``x + FFN(LayerNorm(x))``; this module is the attention
    branch alone with its residual, as the course's other attention plug-ins.

    Args:
        channels: C.
        heads: the number of heads; ``None`` (default): C / 16, the head width of RMT-S's first
            stage (64 channels, 4 heads), which needs C divisible by 16. With ``theta_shift`` the
            head width must be even.
        decomposed: ``False`` (default): the full form, every query attends to all H·W keys
            (O(N²) logits). ``True``: the decomposed form, along W then along H (O(N(H + W))).
        decay: ``"logits"`` (default, the official code) or ``"product"`` (the paper's formula).
        init_value, heads_range: the official ``initial_value`` (2 in every RMT) and
            ``heads_range`` (4 in RMT-S's first two stages, 6 in the last two) of γ's formula.
        lepe_kernel: k, the kernel of the depthwise convolution on V (LCE in the paper, ``lepe``
            in the code; 5, padding 2); an odd integer, or ``None`` for none.
        theta_shift: the official rotary code on q and k (``True``, default) or none.
        identity_init: ``True`` (default, the course's rule): W^O and b^O start at zero, so the
            module starts as the identity; ``False``: the official start (Xavier-normal W^O,
            zero b^O).

    Initialisation otherwise as the official ``VisionRetentionAll.reset_parameters``: W^Q, W^K,
    W^V Xavier-normal with gain 2^−2.5; their biases zero (as ``VisRetNet._init_weights`` sets
    them), LePE PyTorch's default. (The official network's ``_init_weights`` then overwrites every
    Linear weight with a truncated normal of std 0.02; the module keeps the block's own start.)

    Shapes: ``(B, C, H, W)`` → ``(B, C, H, W)``, any H, W ≥ 1. ``attention(x)`` returns the
    ``(B, heads, H*W, H*W)`` weights forward applies (queries and keys in ``(h w)`` order); in the
    decomposed form the effective weights of the two passes,
    ``A[(y, x), (y', x')] = Attn_H^(x)[y, y'] · Attn_W^(y')[x, x']``. The softmax runs in
    ``gate`` (the full form, or the row pass) and ``gate_h`` (the column pass, decomposed form
    only), in forward too: forward forms the weights as the official code does (logits, + log D,
    softmax, product with V). ``F.scaled_dot_product_attention`` with log D as its float mask
    was slower on this course's CPU (forward + backward at 8 × 256 × 28 × 28 and 8 × 512 × 14 × 14,
    one thread), so it is not used; the full form therefore holds the N × N weights, as the
    official code does.

    Parameters: ``4C² + 4C`` (W^Q, W^K, W^V in ``qkv``, W^O in ``proj``, with biases) plus
    ``k²C + C`` for the LePE: ``4C² + 30C`` at k = 5. The decays and rotation angles are constants of
    the hyperparameters, computed in forward (properties ``log_gamma`` and ``angle``), neither
    parameters nor buffers.
    """

    def __init__(
        self, channels: int, *, heads: int | None = None, decomposed: bool = False, decay: str = "logits",
        init_value: float = 2.0, heads_range: float = 4.0, lepe_kernel: int | None = 5, theta_shift: bool = True,
        identity_init: bool = True,
    ) -> None:
        super().__init__()
        self.channels = check_channels(self, channels)
        self.heads = check_heads(self, self.channels, heads, width=HEAD_WIDTH, source="RMT-S's ")
        check_choice(self, "decomposed", decomposed, (False, True))
        check_choice(self, "decay", decay, DECAYS)
        check_choice(self, "theta_shift", theta_shift, (True, False))
        check_choice(self, "identity_init", identity_init, (True, False))
        self.init_value = _check_number(self, "init_value", init_value, positive=True)
        self.heads_range = _check_number(self, "heads_range", heads_range, positive=False)
        if lepe_kernel is not None:
            check_positive_int(self, "lepe_kernel", lepe_kernel)
            if lepe_kernel % 2 == 0:
                raise ValueError(f"{type(self).__name__} expected lepe_kernel to be odd (same padding), got {lepe_kernel}")
        self.head_dim = self.channels // self.heads
        if theta_shift and self.head_dim % 2:
            raise ValueError(
                f"{type(self).__name__} with theta_shift=True rotates pairs of channels and expected an even head "
                f"width, got channels / heads = {self.channels} / {self.heads} = {self.head_dim}"
            )
        self.decomposed = bool(decomposed)
        self.decay = decay
        self.lepe_kernel = lepe_kernel
        self.theta_shift = bool(theta_shift)
        self.identity_init = bool(identity_init)
        c = self.channels
        self.qkv = nn.Linear(c, 3 * c)  # [W^Q; W^K; W^V], heads side by side in each
        self.proj = nn.Linear(c, c)  # W^O
        self.lepe = None if lepe_kernel is None else nn.Conv2d(c, c, lepe_kernel, padding=lepe_kernel // 2, groups=c)
        self.gate = Gate(nn.Softmax(dim=-1), kind="attention")  # the softmax (full form, or along W)
        if self.decomposed:
            self.gate_h = Gate(nn.Softmax(dim=-1), kind="attention")  # the softmax along H
        with torch.no_grad():
            for w in self.qkv.weight.split(c):  # each of W^Q, W^K, W^V as the official separate Linear
                nn.init.xavier_normal_(w, gain=2**-2.5)
            nn.init.zeros_(self.qkv.bias)
            if self.identity_init:
                nn.init.zeros_(self.proj.weight)  # the branch starts at exactly 0
            else:
                nn.init.xavier_normal_(self.proj.weight)
            nn.init.zeros_(self.proj.bias)

    @property
    def log_gamma(self) -> torch.Tensor:
        """log γ of every head, ``(heads,)``, float32 (:func:`head_decays`): constants of the
        hyperparameters, computed when used (not buffers, so that a state dict holds only weights)."""
        return head_decays(self.heads, self.init_value, self.heads_range)

    @property
    def angle(self) -> torch.Tensor:
        """θ_j of every channel, ``(d,)``, float32, each pair's angle twice: θ_0 θ_0 θ_1 θ_1 … with
        θ_j = 1 / 10000^(j / (d/2 − 1)) (the official ``1 / 10000 ** linspace(0, 1, d/2)``)."""
        return (1.0 / (10000 ** torch.linspace(0, 1, self.head_dim // 2))).repeat_interleave(2)

    # ------------------------------------------------------------------ pieces
    def _qkv(self, x: torch.Tensor):
        """q, k, v of every head as ``(B, H, W, heads, d)`` (k scaled by 1/sqrt(d), q and k rotated), and
        the LePE ``(B, H, W, C)``."""
        b, c, h, w = x.shape
        t = x.permute(0, 2, 3, 1)  # (B, H, W, C): the tokens, channels last
        q, k, v = self.qkv(t).unflatten(-1, (3, self.heads, self.head_dim)).unbind(-3)  # T W + b
        lepe = None
        if self.lepe is not None:
            lepe = self.lepe(v.flatten(-2).permute(0, 3, 1, 2)).permute(0, 2, 3, 1)  # LCE(V), (B, H, W, C)
        k = k * self.head_dim**-0.5  # the scale 1/sqrt(d), on k as the official code (not on the N x N logits)
        if self.theta_shift:
            sin, cos = self._sin_cos(h, w, x.device, q.dtype)
            q, k = theta_shift(q, sin, cos), theta_shift(k, sin, cos)  # rotate by n θ_j, n = y W + x
        return q, k, v, lepe

    def _sin_cos(self, h: int, w: int, device: torch.device, dtype: torch.dtype):
        """sin and cos of n θ_j, ``(H, W, 1, d)``, n = y W + x (raster order). As in the official code,
        θ is made in float32 and the product n θ_j computed in float32, or in float64 for a float64
        module (the official buffers after ``.double()``); then cast to the input's dtype."""
        at = torch.promote_types(torch.float32, dtype)
        n = torch.arange(h, device=device)[:, None] * w + torch.arange(w, device=device)[None, :]  # (H, W)
        a = n.to(at)[:, :, None, None] * self.angle.to(device=device, dtype=at)  # (H, W, 1, d)
        return a.sin().to(dtype), a.cos().to(dtype)

    def _log_decay(self, distance: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """log D = |Δ| log γ_i of every head, ``(heads, n, n)`` from an ``(n, n)`` distance (computed
        in float32, or float64 for float64 input, as the official mask)."""
        at = torch.promote_types(torch.float32, dtype)
        log_gamma = self.log_gamma.to(device=distance.device, dtype=at)
        return (log_gamma[:, None, None] * distance.to(at)).to(dtype)

    def _weights(self, q: torch.Tensor, k: torch.Tensor, log_d: torch.Tensor, gate: Gate) -> torch.Tensor:
        """Softmax(q kᵀ + log D), or Softmax(q kᵀ) ⊙ D with ``decay="product"`` (k holds 1/sqrt(d))."""
        logits = q @ k.transpose(-2, -1)
        if self.decay == "logits":
            return gate(logits.add_(log_d))  # the official: the decay before the softmax (renormalised); in place
        return gate(logits) * log_d.exp()  # the paper: Softmax(Q Kᵀ) ⊙ D

    def _axes(self, q: torch.Tensor, k: torch.Tensor, h: int, w: int):
        """The decomposed form's q, k per pass: rows ``((b h), heads, W, d)`` and columns ``((b w), heads, H, d)``,
        and log D^W ``(heads, W, W)``, log D^H ``(heads, H, H)``."""
        rows = [rearrange(t, "b h w n d -> (b h) n w d") for t in (q, k)]
        cols = [rearrange(t, "b h w n d -> (b w) n h d") for t in (q, k)]
        log_dw = self._log_decay(_distance_1d(w, q.device), q.dtype)
        log_dh = self._log_decay(_distance_1d(h, q.device), q.dtype)
        return rows, cols, log_dw, log_dh

    # ------------------------------------------------------------------ the weights, for pictures
    def attention(self, x: torch.Tensor) -> torch.Tensor:
        """The weights forward applies, ``(B, heads, H*W, H*W)``, queries and keys in ``(h w)`` order
        (decomposed form: the two passes' product, see the class docstring)."""
        check_input(self, x, self.channels)
        b, _, h, w = x.shape
        q, k, _, _ = self._qkv(x)
        if not self.decomposed:
            q, k = (rearrange(t, "b h w n d -> b n (h w) d") for t in (q, k))
            return self._weights(q, k, self._log_decay(manhattan_distance(h, w, device=x.device), q.dtype), self.gate)
        (qr, kr), (qc, kc), log_dw, log_dh = self._axes(q, k, h, w)
        a_w = rearrange(self._weights(qr, kr, log_dw, self.gate), "(b y) n x xx -> b y n x xx", b=b)  # Attn_W per row y
        a_h = rearrange(self._weights(qc, kc, log_dh, self.gate_h), "(b x) n y yy -> b x n y yy", b=b)  # Attn_H per column x
        a = einsum(a_h, a_w, "b x n y yy, b yy n x xx -> b n y x yy xx")  # query (y, x) -> key (yy, xx) via (yy, x)
        return rearrange(a, "b n y x yy xx -> b n (y x) (yy xx)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(self, x, self.channels)
        b, _, h, w = x.shape
        q, k, v, lepe = self._qkv(x)
        if not self.decomposed:
            q, k, v = (rearrange(t, "b h w n d -> b n (h w) d") for t in (q, k, v))
            log_d = self._log_decay(manhattan_distance(h, w, device=x.device), q.dtype)  # (heads, N, N)
            o = self._weights(q, k, log_d, self.gate) @ v  # (Softmax(Q Kᵀ) ⊙ D) V, renormalised by default
            o = rearrange(o, "b n (h w) d -> b h w (n d)", h=h)
        else:
            (qr, kr), (qc, kc), log_dw, log_dh = self._axes(q, k, h, w)
            o = self._weights(qr, kr, log_dw, self.gate) @ rearrange(v, "b h w n d -> (b h) n w d")  # Attn_W V
            o = rearrange(o, "(b h) n w d -> (b w) n h d", b=b)  # each column of the row pass's output
            o = self._weights(qc, kc, log_dh, self.gate_h) @ o  # Attn_H (Attn_W V)
            o = rearrange(o, "(b w) n h d -> b h w (n d)", b=b)
        if lepe is not None:
            o = o + lepe  # + LCE(V)
        return x + self.proj(o).permute(0, 3, 1, 2)  # residual: x + W^O (...)

    def extra_repr(self) -> str:
        return (
            f"channels={self.channels}, heads={self.heads}, head_dim={self.head_dim}, decomposed={self.decomposed}, "
            f"decay={self.decay!r}, init_value={self.init_value:g}, heads_range={self.heads_range:g}, "
            f"lepe_kernel={self.lepe_kernel}, theta_shift={self.theta_shift}, identity_init={self.identity_init}"
        )
