"""MUSE, parallel multi-scale attention (Zhao et al., 2019): self-attention, a dynamic depthwise
convolution and a point-wise feed-forward network run in parallel on one input, the first two on
a shared value projection. A layer on token sequences (``MUSELayer``, ``(B, N, C)``) and the same
layer on a feature map flattened row-major (``MUSE2d``, ``"muse"``)."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from .._checks import check_channels, check_choice, check_divisible, check_input, check_positive_int
from .._registry import register
from ..layers import Gate
from .vit import _check_ratio

__all__ = ["MUSELayer", "MUSE2d"]

NORMS = ("post", "pre")


def _check_kernels(module: object, kernels: object) -> tuple[int, ...]:
    name = type(module).__name__
    if isinstance(kernels, (str, bytes)) or not isinstance(kernels, Sequence):
        raise ValueError(f"{name} expected kernels to be a sequence of odd kernel sizes, e.g. (3, 15), got {kernels!r}")
    out = []
    for k in kernels:
        k = check_positive_int(module, "every kernel size", k)
        if k % 2 == 0:
            raise ValueError(
                f"{name} expected odd kernel sizes (the official encoder pads k // 2 on each side; "
                f"its padding for an even k is broken), got {tuple(kernels)}"
            )
        out.append(k)
    if len(set(out)) != len(out):
        raise ValueError(f"{name} expected distinct kernel sizes, got {tuple(kernels)}")
    return tuple(out)


class MUSELayer(nn.Module):
    r"""One MUSE encoder layer on a token sequence ``(B, N, C)``: self-attention, dynamic
    convolutions and a feed-forward network in parallel, summed with the residual, then LayerNorm.

    Paper: G. Zhao, X. Sun, J. Xu, Z. Zhang, L. Luo, "MUSE: Parallel Multi-Scale Attention for
    Sequence to Sequence Learning", arXiv:1911.09483, 2019 (renamed PRIME in the official README);
    equation numbers from the journal version shipped in the official repository
    ("Unified Transformer for Sequence-to-Sequence Learning", ``prime_jounal_ver_.pdf``).
    Official code: ``lancopku/MUSE`` (fairseq 0.6.2): ``fairseq/models/combine_transformer.py``
    (``TransformerCombineEncoderLayer``), ``fairseq/modules/multihead_attention.py``
    (``ParallelMultiheadAttention``), ``fairseq/modules/dynamic_convolution.py`` (``DynamicConv1dTBC``).

    ::

        (4)  X_i = LN(X + Attention(X) + Conv(X) + FFN(X))             (post-LN, default)
        (2)  Q = X W^Q, K = X W^K, V = X W^V,  Attention = softmax(Q K^T / sqrt(d)) V W_2^A   (per head)
        (5)  Conv_k(X) = DepthConv_k(V) W_2^C        (shared projection: the convolution reads V)
        (6)  DepthConv_k(V)_{n,c} = sum_j softmax_j(V_n W^D_k)_{head(c), j} V_{n + j - k//2, c}
        (7)  Conv(X) = sum_i softmax(alpha)_i Conv_{k_i}(X)
        (3)  FFN(X) = max(0, X W_1^F + b_1) W_2^F + b_2

    The convolution is Wu et al.'s dynamic convolution: at every position n the kernel of each head
    (k taps, softmax-normalised) is predicted from V_n by a linear map without bias, and is shared by
    the head's C/h channels (the same channel groups as the attention heads); taps outside the
    sequence read zeros. As in the official code, W_2^A and W_2^C are one ``out_proj`` acting on the
    concatenation ``[attention, conv]`` (2C → C), and alpha starts at 1/n.

    Interface: tokens ``(B, N, C)`` (fairseq's layer takes ``(T, B, C)``: ``t = x.transpose(0, 1)``),
    and an optional ``key_padding_mask`` ``(B, N)``, ``True`` at padding tokens, as fairseq's
    ``encoder_padding_mask``: padding keys get no attention; the convolution still reads the padding
    tokens' V unless ``dynamic_padding=True`` (the official ``--dynamic_padding``, default 0, zeroes
    them first). A query whose keys are all padding gives NaN, as in the official code.

    Args:
        dim: C, the tokens' width.
        heads: h, attention heads, also the dynamic convolution's weight groups (4 in the README's
            IWSLT14 De-En run, ``transformer_iwslt_de_en``; 16 in its WMT runs). C divisible by h.
        mlp_ratio: the FFN's width F over C (2 in the IWSLT run: 768 / 384; 4 in the WMT runs).
        kernels: the convolutions' kernel sizes k_i, odd (the README's ``--attn_wide_kernels [3,15]``,
            with ``--attn_dynamic_type 2``). One size is ``--attn_dynamic_type 1``; ``()`` is
            MUSE-simple (``--attn_dynamic_type 0``: attention and FFN only, ``out_proj`` C → C).
        dynamic_gate: ``True`` (the README's ``--dynamic_gate 1``): eq. (7)'s softmax(alpha) mix of the
            kernels; ``False``: their outputs concatenated, ``out_proj`` (n + 1)C → C.
        norm: ``"post"`` (default; the README's architectures, ``encoder_normalize_before=False``):
            eq. (4); ``"pre"`` (``--encoder-normalize-before``): ``X + Attention(LN X) + Conv(LN X) + FFN(LN X)``.
        shared_projection: ``True`` (the paper's choice and the code's): the convolution reads the
            attention's V; ``False``: its own projection ``V_C = X W_1^C + b`` (+ C² + C parameters;
            the paper's ablation, 34.9 instead of 36.2 BLEU on IWSLT De-En, journal Table 6).
        dynamic_padding: see the interface paragraph above (official ``--dynamic_padding``, default 0).
        eps: the LayerNorm's ε (fairseq's 1e-5).

    Initialisation, as the official code with its default ``--init_method km``: W^Q, W^K, W^V and the
    kernel predictors as ``nn.Linear`` (Kaiming-uniform, a = sqrt 5), ``out_proj`` Kaiming-uniform
    with a = 1, the FFN's weights as ``nn.Linear``, every bias 0, LayerNorm (1, 0), alpha = 1/n.

    Differences from the official code: no dropout of any kind (its ``--dropout``, attention dropout,
    ``--input_dropout`` and the convolution's DropConnect ``weight_dropout=0.1`` are regularisers for
    million-sentence corpora; at the course's scale they are left out); the decoder (causal
    convolution, cross-attention) is not implemented; the official convolution forms banded
    ``(N, N)`` matrices for N <= 512 and unfolds the sequence above; the module always forms the
    banded matrices (one matrix product per head; with the gate, the kernel sizes mixed into one
    kernel first, sum_i g_i conv_{k_i}(V) = conv_{sum_i g_i w_i}(V), the smaller kernels centred;
    no branch on N, so that export keeps N dynamic; memory grows as N², like an attention matrix).

    Shapes: ``(B, N, C)`` → ``(B, N, C)``, any N ≥ 1. Parameters (gated, n kernels, F = mlp_ratio·C):
    ``5C² + 2CF + 7C + F + C·h·Σk + n`` (attention 4C² + 4C with the 2C → C out_proj's extra C²,
    kernel predictors C·h·k each, alpha n, FFN 2CF + F + C, LayerNorm 2C).
    ``attention(t)`` returns the attention weights ``(B, h, N, N)``, ``dynamic_kernels(t)`` the
    predicted kernels, one ``(B, N, h, k)`` per size, ``conv_weights(t)`` the banded ``(B, h, N, N)``
    matrices forward applies (one with the gate, else one per size), and ``branch_weights()``
    softmax(alpha), each through its :class:`~attncourse.layers.Gate`.
    """

    def __init__(
        self,
        dim: int,
        *,
        heads: int = 4,
        mlp_ratio: float = 2.0,
        kernels: Sequence[int] = (3, 15),
        dynamic_gate: bool = True,
        norm: str = "post",
        shared_projection: bool = True,
        dynamic_padding: bool = False,
        eps: float = 1e-5,
    ) -> None:
        super().__init__()
        self.dim = check_positive_int(self, "dim", dim)
        self.heads = check_positive_int(self, "heads", heads)
        check_divisible(self, "dim", self.dim, "heads", self.heads)
        self.mlp_ratio = _check_ratio(self, mlp_ratio)
        self.kernels = _check_kernels(self, kernels)
        for arg, value in (("dynamic_gate", dynamic_gate), ("shared_projection", shared_projection),
                           ("dynamic_padding", dynamic_padding)):
            if not isinstance(value, bool):
                raise ValueError(f"{type(self).__name__} expected {arg} to be True or False, got {value!r}")
        check_choice(self, "norm", norm, NORMS)
        if not shared_projection and not self.kernels:
            raise ValueError(f"{type(self).__name__} with kernels=() has no convolution: shared_projection must be True")
        self.dynamic_gate, self.norm_place = bool(dynamic_gate), norm
        self.shared_projection, self.dynamic_padding = bool(shared_projection), bool(dynamic_padding)
        self.head_dim = self.dim // self.heads
        self.hidden = max(1, round(self.dim * self.mlp_ratio))
        c, n = self.dim, len(self.kernels)
        gated = self.dynamic_gate and n > 0
        if gated:  # eq. (7)'s alpha, 1/n each at the start (official dynamic_gate_para)
            self.alpha = nn.Parameter(torch.full((n,), 1.0 / n))
        self.in_proj = nn.Linear(c, 3 * c)  # [W^Q; W^K; W^V] (= W_1^A), heads side by side
        self.v_proj = None if self.shared_projection else nn.Linear(c, c)  # W_1^C, only without sharing
        self.kernel_proj = nn.ModuleList(nn.Linear(c, self.heads * k, bias=False) for k in self.kernels)  # W^D_k
        parts = 1 if n == 0 else (2 if gated else n + 1)
        self.out_proj = nn.Linear(parts * c, c)  # [W_2^A; W_2^C] as blocks of one matrix
        self.fc1 = nn.Linear(c, self.hidden)  # W_1^F
        self.fc2 = nn.Linear(self.hidden, c)  # W_2^F
        self.norm = nn.LayerNorm(c, eps=eps)
        self.gate = Gate(nn.Softmax(dim=-1), kind="attention")  # softmax(Q K^T / sqrt(d))
        self.kernel_gate = Gate(nn.Softmax(dim=-1), kind="kernel")  # softmax over each kernel's taps
        self.branch_gate = Gate(nn.Softmax(dim=-1), kind="branch") if gated else None  # softmax(alpha)
        self._reset_parameters()

    def _reset_parameters(self) -> None:
        """The official ``--init_method km`` start (see the class docstring)."""
        nn.init.kaiming_uniform_(self.out_proj.weight, a=1.0)
        for lin in (self.in_proj, self.out_proj, self.fc1, self.fc2, self.v_proj):
            if lin is not None:
                nn.init.zeros_(lin.bias)

    # ------------------------------------------------------------------ the pieces
    def _check(self, t: torch.Tensor, key_padding_mask: torch.Tensor | None) -> None:
        check_input(self, t, self.dim, layout="B N C")
        if key_padding_mask is not None:
            m = key_padding_mask
            if not isinstance(m, torch.Tensor) or m.dtype != torch.bool or tuple(m.shape) != tuple(t.shape[:2]):
                got = f"{m.dtype} tensor of shape {tuple(m.shape)}" if isinstance(m, torch.Tensor) else type(m).__name__
                raise ValueError(
                    f"{type(self).__name__} expected key_padding_mask to be a bool tensor of shape "
                    f"{tuple(t.shape[:2])} (B, N), True at padding, got {got}"
                )

    def _input(self, t: torch.Tensor) -> torch.Tensor:
        return self.norm(t) if self.norm_place == "pre" else t

    def _qkv(self, x: torch.Tensor) -> torch.Tensor:
        return rearrange(self.in_proj(x), "b n (three h d) -> three b h n d", three=3, h=self.heads)

    def _logits(self, x: torch.Tensor, key_padding_mask: torch.Tensor | None) -> torch.Tensor:
        q, k, _ = self._qkv(x)
        s = q @ k.transpose(-2, -1) * self.head_dim**-0.5  # Q K^T / sqrt(d), (B, h, N, N)
        if key_padding_mask is not None:
            s = s.masked_fill(key_padding_mask[:, None, None, :], float("-inf"))
        return s

    def _conv_values(self, x: torch.Tensor, v: torch.Tensor, key_padding_mask: torch.Tensor | None) -> torch.Tensor:
        """What the convolutions read, ``(B, N, C)``: V (shared projection) or X W_1^C."""
        vc = v if self.v_proj is None else self.v_proj(x)
        if self.dynamic_padding and key_padding_mask is not None:
            vc = vc.masked_fill(key_padding_mask[..., None], 0.0)
        return vc

    def _kernel(self, i: int, vc: torch.Tensor) -> torch.Tensor:
        """Eq. (6)'s kernel of size k_i at every position, ``(B, N, h, k)``, softmax over the taps."""
        return self.kernel_gate(rearrange(self.kernel_proj[i](vc), "b n (h k) -> b n h k", h=self.heads))

    def _taps(self, vc: torch.Tensor) -> list[torch.Tensor]:
        """The kernels the convolution applies, ``(B, N, h, k)`` each: with the gate, one kernel of the
        largest size, ``sum_i softmax(alpha)_i w_i`` with each w_i centred (zeros at its outer taps),
        since ``sum_i g_i DepthConv_{k_i}(V) = DepthConv(V)`` with those mixed taps (eq. (7));
        without it, each w_i."""
        ws = [self._kernel(i, vc) for i in range(len(self.kernels))]
        if self.branch_gate is None:
            return ws
        g = self.branch_gate(self.alpha)  # eq. (7)'s softmax(alpha)
        big = max(self.kernels)
        return [sum(g[i] * F.pad(w, ((big - k) // 2, (big - k) // 2)) for i, (w, k) in enumerate(zip(ws, self.kernels)))]

    @staticmethod
    def _band(w: torch.Tensor) -> torch.Tensor:
        """Eq. (6) as a matrix: from kernels ``w`` ``(B, N, h, k)``, ``D[b, head, n, m] =
        w[b, n, head, m - n + k//2]`` for ``|m - n| <= k//2``, else 0, ``(B, h, N, N)``, so that
        ``DepthConv_k(V) = D V`` per head (the official banded-matrix form; taps outside the
        sequence fall outside the matrix: zeros)."""
        k = w.shape[-1]
        w = rearrange(w, "b n h k -> b h n k")
        b, h, n, _ = w.shape
        # row n of the kernels, shifted right by n: pad each row to n + k, flatten, cut, re-fold to n + k - 1
        full = F.pad(w, (0, n)).flatten(2)[..., : n * (n + k - 1)].reshape(b, h, n, n + k - 1)
        return full[..., k // 2 : k // 2 + n]  # column m holds tap m - n + k//2

    # ------------------------------------------------------------------ public views of the weights
    def attention(self, t: torch.Tensor, key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        """The attention weights ``softmax(Q K^T / sqrt(d))`` of every head, ``(B, h, N, N)``."""
        self._check(t, key_padding_mask)
        return self.gate(self._logits(self._input(t), key_padding_mask))

    def dynamic_kernels(self, t: torch.Tensor, key_padding_mask: torch.Tensor | None = None) -> list[torch.Tensor]:
        """Eq. (6)'s predicted kernels, one ``(B, N, h, k_i)`` per kernel size (taps in order
        n - k//2, ..., n + k//2; each row sums to 1)."""
        self._check(t, key_padding_mask)
        x = self._input(t)
        vc = self._conv_values(x, self._qkv(x)[2].transpose(1, 2).flatten(2), key_padding_mask)
        return [self._kernel(i, vc) for i in range(len(self.kernels))]

    def conv_weights(self, t: torch.Tensor, key_padding_mask: torch.Tensor | None = None) -> list[torch.Tensor]:
        """The convolution as banded matrices over the tokens, ``(B, h, N, N)`` each, as forward
        applies them: with the gate one matrix (the kernel sizes mixed by softmax(alpha)), without it
        one per kernel size. Row n: the weights token n gives its neighbours (rows sum to 1 away
        from the ends of the sequence)."""
        self._check(t, key_padding_mask)
        x = self._input(t)
        vc = self._conv_values(x, self._qkv(x)[2].transpose(1, 2).flatten(2), key_padding_mask)
        return [self._band(w) for w in self._taps(vc)]

    def branch_weights(self) -> torch.Tensor | None:
        """softmax(alpha), eq. (7)'s weights of the kernel sizes (``None`` without the gate)."""
        return None if self.branch_gate is None else self.branch_gate(self.alpha)

    # ------------------------------------------------------------------ forward
    def forward(self, t: torch.Tensor, key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        self._check(t, key_padding_mask)
        x = self._input(t)
        q, k, v = self._qkv(x)  # (B, h, N, d) each
        mask = None if key_padding_mask is None else ~key_padding_mask[:, None, None, :]  # True: may attend
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # eq. (2) before W_2^A, per head
        parts = [rearrange(a, "b h n d -> b n (h d)")]
        if self.kernels:
            vc = self._conv_values(x, rearrange(v, "b h n d -> b n (h d)"), key_padding_mask)
            vh = rearrange(vc, "b n (h d) -> b h n d", h=self.heads)
            for w in self._taps(vc):  # eq. (7)'s mix (one kernel) with the gate, else one per k_i
                parts.append(rearrange(self._band(w) @ vh, "b h n d -> b n (h d)"))  # eq. (6): D V per head
        y = self.out_proj(torch.cat(parts, dim=-1))  # Attention(X) + Conv(X): [W_2^A; W_2^C] at once
        f = self.fc2(F.relu(self.fc1(x)))  # eq. (3)
        t = t + y + f  # eq. (4)'s sum with the residual
        return self.norm(t) if self.norm_place == "post" else t


@register("muse")
class MUSE2d(nn.Module):
    r"""The MUSE encoder layer (:class:`MUSELayer`) on a feature map: the map flattened row-major
    into a sequence, ``t = rearrange(x, "b c h w -> b (h w) c")``, one layer, and back.

    Paper: G. Zhao, X. Sun, J. Xu, Z. Zhang, L. Luo, "MUSE: Parallel Multi-Scale Attention for
    Sequence to Sequence Learning", arXiv:1911.09483, 2019. Official code: ``lancopku/MUSE``
    (``fairseq/models/combine_transformer.py``, ``fairseq/modules/multihead_attention.py``).
    See :class:`MUSELayer` for the equations, the options and every difference from the code.

    MUSE was written for 1-D token sequences; on a map its attention sees every position, but its
    1-D convolution mixes *row-major neighbours*: token (i, j) sits at n = iW + j and a kernel of
    size k reads n - k//2 .. n + k//2, i.e. pixels to its left and right in its row and, within k//2
    of a row's end, the first (last) pixels of the next (previous) row: the window wraps across rows.
    It never reads the pixels above or below (unless W ≤ k//2). Zeros only before the first and after
    the last pixel of the map.

    Args:
        channels: C.
        heads: h (4, the README's IWSLT14 De-En run); C divisible by h.
        mlp_ratio: the FFN's width over C (2 in that run).
        kernels, dynamic_gate, norm, shared_projection: as :class:`MUSELayer`
            (defaults (3, 15), ``True``, ``"post"``, ``True``: the README's runs).

    Shapes: ``(B, C, H, W)`` → ``(B, C, H, W)``, any H, W ≥ 1; B, H, W export dynamic.
    ``attention(x)`` returns the weights ``(B, h, H*W, H*W)`` (queries in ``(h w)`` order).
    Parameters: ``5C² + 2CF + 7C + F + C·h·Σk + n``, F = mlp_ratio·C, n kernel sizes (gated).
    """

    def __init__(
        self,
        channels: int,
        *,
        heads: int = 4,
        mlp_ratio: float = 2.0,
        kernels: Sequence[int] = (3, 15),
        dynamic_gate: bool = True,
        norm: str = "post",
        shared_projection: bool = True,
    ) -> None:
        super().__init__()
        self.channels = check_channels(self, channels)
        check_positive_int(self, "heads", heads)
        check_divisible(self, "channels", self.channels, "heads", heads)
        self.layer = MUSELayer(
            self.channels, heads=heads, mlp_ratio=mlp_ratio, kernels=kernels, dynamic_gate=dynamic_gate,
            norm=norm, shared_projection=shared_projection,
        )

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        """The layer's attention weights, ``(B, h, H*W, H*W)``."""
        check_input(self, x, self.channels)
        return self.layer.attention(rearrange(x, "b c h w -> b (h w) c"))

    def dynamic_kernels(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The predicted kernels over the row-major sequence, one ``(B, H*W, h, k)`` per size."""
        check_input(self, x, self.channels)
        return self.layer.dynamic_kernels(rearrange(x, "b c h w -> b (h w) c"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(self, x, self.channels)
        h, w = x.shape[2:]
        t = self.layer(rearrange(x, "b c h w -> b (h w) c"))
        return rearrange(t, "b (h w) c -> b c h w", h=h, w=w)
