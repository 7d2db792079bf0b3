"""Multi-head scaled dot-product self-attention on the positions of a feature map (Vaswani et al.,
NeurIPS 2017; tokens of a feature map as in ViT). Chapter: ``chapters/selfattn/mhsa.md``."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from .._checks import check_channels, check_choice, check_divisible, check_input, check_positive_int
from .._registry import register
from ..layers import Gate

__all__ = ["MultiHeadSelfAttention2d", "sine_position_2d", "relative_index"]

#: The positional options: none (the paper's attention, blind to order), DETR's 2-D sine code, a
#: learned relative position bias on the logits (the course's option, in the style of Swin's), or a
#: learned absolute code per position (the course's option, in the style of ViT's).
POSITIONS = (None, "sine", "relative", "learned")
#: The options whose learned tables fix the map's size.
_SIZED = ("relative", "learned")


def sine_position_2d(
    h: int, w: int, channels: int, *, temperature: float = 10000.0, dtype: torch.dtype | None = None,
    device: torch.device | None = None,
) -> torch.Tensor:
    r"""The 2-D sine position code of DETR (Carion et al., ECCV 2020, arXiv:2005.12872), ``(H*W, C)``.

    The Transformer's sinusoids (Vaswani et al. 2017, section 3.5) applied to each axis: the first
    C/2 channels encode the row y, the last C/2 the column x; within each half, channel pairs
    (2i, 2i+1) hold ``sin(p ω_i)`` and ``cos(p ω_i)`` with ``ω_i = temperature^(-2i / (C/2))``, for
    the position p = 1..H (rows) or 1..W (columns). This is DETR's ``PositionEmbeddingSine`` with
    ``normalize=False`` (its default; DETR's own configuration normalises p to (0, 2π], which makes
    a position's code depend on the map's size). Unnormalised, a shift by k positions is the same
    rotation of every (sin, cos) pair at any H, W, and nothing is learned: any H, W works, so the
    export keeps H and W dynamic. Rows of the result are in ``(h w)`` order. ``channels`` must be
    divisible by 4.
    """
    f = channels // 4  # frequencies per axis
    i = torch.arange(f, dtype=dtype, device=device)
    omega = temperature ** (-2 * i / (channels // 2))  # ω_i = T^(-2i/(C/2))
    ay = torch.arange(1, h + 1, dtype=dtype, device=device)[:, None] * omega  # (H, C/4): y ω_i
    ax = torch.arange(1, w + 1, dtype=dtype, device=device)[:, None] * omega  # (W, C/4): x ω_i
    py = rearrange(torch.stack([ay.sin(), ay.cos()], -1), "h f two -> h (f two)")  # (H, C/2), sin/cos interleaved
    px = rearrange(torch.stack([ax.sin(), ax.cos()], -1), "w f two -> w (f two)")  # (W, C/2)
    half = 2 * f
    pos = torch.cat([py[:, None, :].expand(h, w, half), px[None, :, :].expand(h, w, half)], dim=-1)  # [y; x]
    return pos.reshape(h * w, channels)  # "h w c -> (h w) c"


def check_sine_channels(module: nn.Module, channels: int) -> None:
    """The sine code needs C divisible by 4; raise the module's ``ValueError`` otherwise."""
    if channels % 4:
        raise ValueError(
            f"{type(module).__name__} with position='sine' expected channels divisible by 4 (a sin and a "
            f"cos per frequency, for rows and for columns), got channels={channels}"
        )


def relative_index(h: int, w: int) -> torch.Tensor:
    """``(N, N)``, N = H·W in ``(h w)`` order: the entry of a flattened (2H−1) × (2W−1) table of
    relative biases that the query n reads for the key m, at the offset key − query,
    ``(y_m − y_n + H − 1) (2W − 1) + (x_m − x_n + W − 1)``."""
    y, x = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    y, x = y.reshape(-1), x.reshape(-1)  # (N,): each position's row and column, in (h w) order
    dy = y[None, :] - y[:, None] + h - 1  # (N, N): row_key - row_query + H - 1, in [0, 2H-2]
    dx = x[None, :] - x[:, None] + w - 1  # (N, N): col_key - col_query + W - 1, in [0, 2W-2]
    return dy * (2 * w - 1) + dx


@register("mhsa")
class MultiHeadSelfAttention2d(nn.Module):
    r"""Multi-head scaled dot-product self-attention over the H × W positions of a feature map, as a
    residual plug-in: ``x + MultiHead(T, T, T)`` with the tokens ``T = rearrange(x, "b c h w -> b (h w) c")``.

    Paper: A. Vaswani, N. Shazeer, N. Parmar, J. Uszkoreit, L. Jones, A. N. Gomez, Ł. Kaiser,
    I. Polosukhin, "Attention Is All You Need", NeurIPS 2017, arXiv:1706.03762 (eq. (1) as numbered
    there, section 3.2.1; the multi-head equations of section 3.2.2 carry no number). The tokens of a feature map,
    one per position, as ViT does with patches: A. Dosovitskiy et al., "An Image is Worth 16x16 Words",
    ICLR 2021, arXiv:2010.11929.

    Equations (section 3.2), with d = d_k = d_v = C / h::

        (1)  Attention(Q, K, V) = softmax(Q K^T / sqrt(d_k)) V
             MultiHead(Q, K, V) = Concat(head_1, ..., head_h) W^O
             head_i = Attention(Q W_i^Q, K W_i^K, V W_i^V)

    with Q = K = V = T (self-attention), W_i^Q, W_i^K, W_i^V ∈ R^{C×d} and W^O ∈ R^{C×C}.
    ``forward`` returns ``x + rearrange(MultiHead(T, T, T), "b (h w) c -> b c h w")``.

    Args:
        channels: C, the paper's d_model.
        heads: h, the number of heads (8 in the paper); must divide ``channels`` (d = C / h).
        bias: biases on the projections (``True``, as ``torch.nn.MultiheadAttention`` and ViT's
            ``qkv_bias=True``; the paper writes none). With ``bias=False`` the module has 4C²
            parameters, with ``True`` 4C² + 4C. Of these, the keys' C biases change no output and
            get a zero gradient: q_n · b_K is the same for every key of row n, and a softmax row
            does not change when all its logits are shifted by one amount.
        position: ``None`` (default): no position code, the attention of eq. (1), which cannot see
            where a token is (permuting the positions permutes the output). ``"sine"``: DETR's
            2-D sine code :func:`sine_position_2d` (Carion et al., ECCV 2020, arXiv:2005.12872)
            added, as in DETR's encoder, to the tokens that make the queries and keys, not the
            values; it needs ``channels`` divisible by 4, works at any H, W and learns nothing.
            ``"relative"``: the course's option, a learned relative position bias B added to every
            head's logits, ``softmax(Q K^T / sqrt(d) + B) V``, in the style of Swin's relative
            position bias (Z. Liu et al., ICCV 2021, arXiv:2103.14030) and of the relative
            position terms of Shaw et al. (NAACL 2018, arXiv:1803.02155) and T5 (Raffel et al.,
            JMLR 2020, arXiv:1910.10683): a table ``relative_bias`` of shape (h, 2H−1, 2W−1),
            zero at initialisation, read for query (y_q, x_q) and key (y_k, x_k) at
            ``(y_k − y_q + H − 1, x_k − x_q + W − 1)``; one table per head, no bucketing or
            clipping (every offset of an H × W map has its own entry). It needs ``size``.
            ``"learned"``: the course's option, a learned absolute code, one C-vector per position
            (``position_embedding``, (H·W, C), truncated normal with std 0.02 at the start, as
            ViT's ``pos_embed``; Dosovitskiy et al., ICLR 2021, arXiv:2010.11929), added where
            the sine code goes, to the tokens that make the queries and keys and not to the values
            (ViT adds its code to the tokens themselves, values included). It needs ``size``.
        size: ``(H, W)``, the map's size, required with ``position="relative"`` or ``"learned"``
            (the table's shape depends on it) and refused otherwise; forward then accepts only
            inputs of that H, W.
        identity_init: ``True`` (default): W^O starts at zero, so the module is the identity at
            initialisation (the project's rule, below). ``False``: W^O (weight and bias) keeps
            ``nn.Linear``'s default initialisation. Why the option exists: with W^O = 0 the
            attention's own parameters (W^Q, W^K, the relative bias B) get no gradient at the
            first step (tested), and W^O's first gradient comes from outputs of near-uniform
            attention; on a task where no global statistic helps (``attncourse.data.side_by_side``)
            that may leave the branch stuck at its start. Measured there (the protocol ``where``,
            ``chapters/selfattn/where.md``: 4 heads, 10 epochs, five seeds), with
            ``position="relative"`` the identity start solved 3 seeds of 5 and
            ``identity_init=False`` all 5; with ``"sine"``, 1 of 5 either way; with ``"learned"``,
            none either way. The default stays
            ``True``: the course's rule, which the other parts' stored runs use.

    Why no position code by default: the module is a plug-in between convolutions, whose
    features already carry local geometry (and, through zero padding, some absolute position);
    the self-attention blocks of CNNs (Non-local, DANet, CCNet, GCNet) add none. Off, the module
    equals ``torch.nn.MultiheadAttention`` with the same weights, and it stays blind to where things
    are, which the chapter shows and tests. Turn it on where the arrangement matters to the task.

    Identity at initialisation (``identity_init=True``, the default): W^O (``proj``, weight and
    bias) starts at zero, so the attention branch outputs exactly 0 and the module returns x; W^O
    gets a gradient at once, the other projections (and a relative bias) once W^O is non-zero.
    ``qkv`` starts as ``torch.nn.MultiheadAttention``'s in-projection does (Xavier-uniform weight,
    zero bias). Both are the course's choices.

    Shapes: input ``(B, C, H, W)`` → output ``(B, C, H, W)``, any H, W ≥ 1 (with
    ``position="relative"``, exactly ``size``).
    ``attention(x)`` returns the weights ``(B, h, H*W, H*W)`` (queries and keys in ``(h w)``
    order, rows summing to 1), exactly the weights forward applies (with the relative bias, which
    forward passes to ``F.scaled_dot_product_attention`` as a float additive ``attn_mask``).
    ``forward`` computes eq. (1) with ``F.scaled_dot_product_attention``, which never
    materialises the N × N matrix, so the ``gate`` (``Gate(nn.Softmax(dim=-1), kind="attention")``) runs only in ``attention(x)``:
    ``capture_gates`` on a forward pass records nothing from this module.

    Parameters: ``4C²`` projection weights (W^Q, W^K, W^V stacked in ``qkv``, and W^O) plus ``4C``
    biases, with ``position="relative"`` the table's h(2H−1)(2W−1) entries, with ``"learned"``
    the code's H·W·C.
    ``torch.nn.MultiheadAttention(C, h, batch_first=True)`` has the same tensors: copy its
    ``in_proj_weight``/``in_proj_bias`` into ``qkv`` and ``out_proj`` into ``proj``.

    Export: by default (and with ``"sine"``) B, H and W stay dynamic. With ``"relative"`` or
    ``"learned"``, H and W are fixed by the learned table (one learned bias per relative offset,
    or one learned code per position, of an H × W map), so
    such a module exports with static H, W and a dynamic batch; the class declares no
    ``export_static_dims``, since only this option needs it.
    """

    def __init__(
        self, channels: int, *, heads: int = 8, bias: bool = True, position: str | None = None,
        size: tuple[int, int] | None = None, identity_init: bool = True,
    ) -> None:
        super().__init__()
        self.channels = check_channels(self, channels)
        self.heads = check_positive_int(self, "heads", heads)
        check_divisible(self, "channels", self.channels, "heads", self.heads)
        check_choice(self, "bias", bias, (True, False))
        check_choice(self, "position", position, POSITIONS)
        if position == "sine":
            check_sine_channels(self, self.channels)
        check_choice(self, "identity_init", identity_init, (True, False))
        if position in _SIZED and size is None:
            table = "the bias table has shape (heads, 2H-1, 2W-1)" if position == "relative" else "one code per position"
            raise ValueError(f"{type(self).__name__} with position={position!r} needs size=(H, W), the map's size ({table})")
        if position not in _SIZED and size is not None:
            raise ValueError(
                f"{type(self).__name__} takes size only with position='relative' or 'learned', got size={size!r} "
                f"with position={position!r}"
            )
        if size is not None:
            if not isinstance(size, (tuple, list)) or len(size) != 2:
                raise ValueError(f"{type(self).__name__} expected size to be a pair (H, W), got {size!r}")
            size = (check_positive_int(self, "size[0] (H)", size[0]), check_positive_int(self, "size[1] (W)", size[1]))
        self.bias = bool(bias)
        self.position = position
        self.size = size
        self.identity_init = bool(identity_init)
        self.head_dim = self.channels // self.heads  # d = d_k = d_v = C / h
        self.qkv = nn.Linear(channels, 3 * channels, bias=self.bias)  # [W^Q; W^K; W^V], heads side by side
        self.proj = nn.Linear(channels, channels, bias=self.bias)  # W^O
        self.gate = Gate(nn.Softmax(dim=-1), kind="attention")  # the softmax of (1), used by attention(x)
        nn.init.xavier_uniform_(self.qkv.weight)  # as torch.nn.MultiheadAttention's in_proj
        if self.identity_init:
            nn.init.zeros_(self.proj.weight)  # W^O = 0: the branch starts at exactly 0, the module at x
        if self.bias:
            nn.init.zeros_(self.qkv.bias)
            if self.identity_init:
                nn.init.zeros_(self.proj.bias)
        if position == "relative":
            h, w = size
            self.relative_bias = nn.Parameter(torch.zeros(self.heads, 2 * h - 1, 2 * w - 1))  # B, one table per head
            self.register_buffer("relative_index", relative_index(h, w), persistent=False)  # into the flat table
        if position == "learned":
            h, w = size
            self.position_embedding = nn.Parameter(torch.empty(h * w, self.channels))  # P: one code per position, (h w)
            nn.init.trunc_normal_(self.position_embedding, std=0.02)  # as ViT's pos_embed

    def _qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Queries, keys and values of every head, each ``(B, h, N, d)``, N = H*W in ``(h w)`` order."""
        _, c, h, w = x.shape
        t = rearrange(x, "b c h w -> b (h w) c")  # the tokens T: one per position
        q, k, v = rearrange(self.qkv(t), "b n (three h d) -> three b h n d", three=3, h=self.heads)  # T W_i^{Q,K,V}
        if self.position in ("sine", "learned"):  # (T + P) W^Q, (T + P) W^K = T W + P W: P once, not per image
            if self.position == "sine":
                p = sine_position_2d(h, w, c, dtype=x.dtype, device=x.device)  # P: (N, C)
            else:
                p = self.position_embedding.to(x.dtype)  # P: (N, C), learned
            pq, pk = rearrange(F.linear(p, self.qkv.weight[: 2 * c]), "n (two h d) -> two 1 h n d", two=2, h=self.heads)
            q, k = q + pq, k + pk
        return q, k, v

    def _check(self, x: torch.Tensor) -> None:
        check_input(self, x, self.channels)
        if self.size is not None and tuple(x.shape[2:]) != self.size:
            raise ValueError(
                f"{type(self).__name__} with position={self.position!r} was built for maps of size (H, W) = "
                f"{self.size}, got an input of size {tuple(x.shape[2:])}"
            )

    def _relative_bias(self, dtype: torch.dtype) -> torch.Tensor | None:
        """B of every head, ``(h, N, N)``: ``B[i, n, m] = relative_bias[i, y_m - y_n + H - 1, x_m - x_n + W - 1]``."""
        if self.position != "relative":
            return None
        return self.relative_bias.flatten(1)[:, self.relative_index].to(dtype)  # gather: (h, N, N)

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        """The weights ``softmax(Q K^T / sqrt(d) [+ B])`` of every head, ``(B, h, H*W, H*W)``, rows summing to 1."""
        self._check(x)
        q, k, _ = self._qkv(x)
        logits = q @ k.transpose(-2, -1) * self.head_dim**-0.5  # Q K^T / sqrt(d_k)
        bias = self._relative_bias(logits.dtype)
        if bias is not None:
            logits = logits + bias  # + B, the same for every image
        return self.gate(logits)  # (1): softmax over the keys

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x)
        q, k, v = self._qkv(x)
        bias = self._relative_bias(q.dtype)  # None, or (h, N, N) broadcast over the batch
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)  # (1) per head, scale 1/sqrt(d) [+ B]: (B, h, N, d)
        o = self.proj(rearrange(o, "b h n d -> b n (h d)"))  # Concat(head_1..head_h) W^O: (B, N, C)
        return x + rearrange(o, "b (h w) c -> b c h w", h=x.shape[2])  # residual: x + MultiHead(T, T, T)

    def extra_repr(self) -> str:
        return (
            f"channels={self.channels}, heads={self.heads}, head_dim={self.head_dim}, bias={self.bias}, "
            f"position={self.position!r}" + (f", size={self.size}" if self.size is not None else "")
            + f", identity_init={self.identity_init}"
        )
