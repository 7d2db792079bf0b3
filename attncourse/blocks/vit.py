"""The Vision Transformer's encoder block (Dosovitskiy et al., ICLR 2021): Part VI's bridge from
plug-in modules to attention *as the block*. Token-level parts (``Mlp``, ``TokenSelfAttention``,
``TransformerBlock``) that the other Part VI modules build on, and the block as a feature-map
plug-in (``ViTBlock2d``, ``"vit"``)."""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from .._checks import check_channels, check_choice, check_heads, check_input, check_positive_int
from .._registry import register
from ..layers import Gate

__all__ = ["Mlp", "TokenSelfAttention", "TransformerBlock", "ViTBlock2d", "official_init"]


def _check_ratio(module: object, mlp_ratio: object) -> float:
    if isinstance(mlp_ratio, bool) or not isinstance(mlp_ratio, (int, float)) or not mlp_ratio > 0:
        raise ValueError(f"{type(module).__name__} expected mlp_ratio to be a positive number, got {mlp_ratio!r}")
    return float(mlp_ratio)


class Mlp(nn.Module):
    """The transformer's position-wise MLP: ``fc2(act(fc1(t)))``, D → hidden → D, on the last axis.

    ViT's ``MlpBlock`` (``vit_jax/models_vit.py``): Dense(4D) → GELU → Dense(D), both with biases.
    ``activation`` builds the non-linearity: ``nn.GELU`` (default; the exact erf form, as timm and
    PyTorch ports use; JAX's ``nn.gelu`` is the tanh approximation, ``lambda: nn.GELU("tanh")``),
    or ``nn.SiLU`` as MobileViT's official code uses. Parameters: ``2·D·hidden + hidden + D``.
    """

    def __init__(self, dim: int, hidden: int, *, activation: Callable[[], nn.Module] = nn.GELU) -> None:
        super().__init__()
        self.dim = check_positive_int(self, "dim", dim)
        self.hidden = check_positive_int(self, "hidden", hidden)
        self.fc1 = nn.Linear(dim, hidden)
        self.act = activation()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        if not isinstance(t, torch.Tensor) or t.dim() < 1 or t.shape[-1] != self.dim:
            got = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
            raise ValueError(f"Mlp expected an input whose last axis has {self.dim} entries, got {got}")
        return self.fc2(self.act(self.fc1(t)))


class TokenSelfAttention(nn.Module):
    r"""Multi-head self-attention over a sequence of tokens ``(B, N, D)`` (Vaswani et al., 2017;
    ViT's MSA, eq. (2) of Dosovitskiy et al.).

    ``head_i = softmax(T W_i^Q (T W_i^K)^T / sqrt(d)) T W_i^V``, ``MSA(T) = [head_1, ..., head_h] W^O``,
    d = D / h. The three input projections are one ``Linear(D, 3D)`` (``qkv``, timm's layout; Flax
    keeps three Dense layers with the same numbers), the output projection is ``proj``.

    ``logits(t)`` returns ``Q K^T / sqrt(d)`` ``(B, h, N, N)``, ``attention(t)`` the softmax of it
    through ``gate`` (a :class:`~attncourse.layers.Gate`), and ``forward`` computes the same
    attention with ``F.scaled_dot_product_attention`` (which never materialises the N × N matrix).
    Parameters: ``4D² + 4D`` with biases (``qkv_bias=True``, ViT's), ``4D² + D`` without.
    """

    def __init__(self, dim: int, *, heads: int, qkv_bias: bool = True) -> None:
        super().__init__()
        self.dim = check_positive_int(self, "dim", dim)
        self.heads = check_heads(self, self.dim, heads, width=64, source="ViT-B's ")
        check_choice(self, "qkv_bias", qkv_bias, (True, False))
        self.head_dim = self.dim // self.heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)  # [W^Q; W^K; W^V], heads side by side
        self.proj = nn.Linear(dim, dim)  # W^O
        self.gate = Gate(nn.Softmax(dim=-1), kind="attention")

    def _check(self, t: torch.Tensor) -> None:
        check_input(self, t, self.dim, layout="B N C")

    def _qkv(self, t: torch.Tensor) -> torch.Tensor:
        return rearrange(self.qkv(t), "b n (three h d) -> three b h n d", three=3, h=self.heads)

    def logits(self, t: torch.Tensor) -> torch.Tensor:
        """``Q K^T / sqrt(d)`` of every head, ``(B, h, N, N)`` (queries on the rows)."""
        self._check(t)
        q, k, _ = self._qkv(t)
        return q @ k.transpose(-2, -1) * self.head_dim**-0.5

    def attention(self, t: torch.Tensor) -> torch.Tensor:
        """The weights ``softmax(Q K^T / sqrt(d))`` of every head, ``(B, h, N, N)``, rows summing to 1."""
        return self.gate(self.logits(t))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        self._check(t)
        q, k, v = self._qkv(t)
        o = F.scaled_dot_product_attention(q, k, v)  # softmax(Q K^T / sqrt(d)) V per head: (B, h, N, d)
        return self.proj(rearrange(o, "b h n d -> b n (h d)"))


PLUGIN_PLACES = ("attention", "mlp")


class TransformerBlock(nn.Module):
    r"""ViT's pre-norm encoder block on tokens ``(B, N, D)`` (Dosovitskiy et al., ICLR 2021, eqs. (2)-(3)).

    ::

        (2)  z' = MSA(LN(z)) + z
        (3)  z  = MLP(LN(z')) + z'

    LayerNorms with ε = 1e-6 (Flax's default, which the official code and timm use), MLP width
    ``mlp_ratio · D`` (4 in ViT), GELU.

    A plug-in slot: ``plugin`` (any ``(B, D, H, W) -> (B, D, H, W)`` module, e.g.
    ``attncourse.create("se", D)``) is applied to one branch's output reshaped to the token map
    before that branch is added back: ``plugin_at="attention"`` gives
    ``z' = map⁻¹(plugin(map(MSA(LN(z))))) + z``, ``"mlp"`` the same on the MLP's output. It needs
    the map's ``size=(H, W)`` in ``forward`` (tokens in ``(h w)`` order). Without a plug-in the
    block is ViT's and ``size`` is not needed.
    """

    def __init__(
        self,
        dim: int,
        *,
        heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        activation: Callable[[], nn.Module] = nn.GELU,
        eps: float = 1e-6,
        plugin: nn.Module | None = None,
        plugin_at: str = "attention",
    ) -> None:
        super().__init__()
        self.dim = check_positive_int(self, "dim", dim)
        self.mlp_ratio = _check_ratio(self, mlp_ratio)
        check_choice(self, "plugin_at", plugin_at, PLUGIN_PLACES)
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = TokenSelfAttention(dim, heads=heads, qkv_bias=qkv_bias)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, max(1, round(dim * self.mlp_ratio)), activation=activation)
        self.plugin = plugin
        self.plugin_at = plugin_at

    def _plug(self, branch: torch.Tensor, size: tuple[int, int] | None) -> torch.Tensor:
        if size is None:
            raise ValueError("TransformerBlock with a plugin needs size=(H, W), the token map's size, in forward")
        h, w = size
        if h * w != branch.shape[1]:
            raise ValueError(f"TransformerBlock expected {branch.shape[1]} tokens to form a map of size {tuple(size)}")
        m = self.plugin(rearrange(branch, "b (h w) c -> b c h w", h=h, w=w))
        return rearrange(m, "b c h w -> b (h w) c")

    def forward(self, t: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
        check_input(self, t, self.dim, layout="B N C")
        a = self.attn(self.norm1(t))
        if self.plugin is not None and self.plugin_at == "attention":
            a = self._plug(a, size)
        t = t + a  # (2)
        m = self.mlp(self.norm2(t))
        if self.plugin is not None and self.plugin_at == "mlp":
            m = self._plug(m, size)
        return t + m  # (3)


@torch.no_grad()
def official_init(block: TransformerBlock) -> TransformerBlock:
    """Start ``block`` as ViT's official code starts an ``Encoder1DBlock`` (``vit_jax/models_vit.py``):
    Xavier-uniform weights in every Dense layer, q, k and v each as its own D × D matrix (Flax's
    separate Dense layers; the fused ``qkv`` is initialised a third at a time), zero attention
    biases, N(0, 1e-6) MLP biases. LayerNorms keep their start (1 and 0). Returns ``block``."""
    for w in block.attn.qkv.weight.chunk(3, dim=0):  # W^Q, W^K, W^V: (D, D) each
        nn.init.xavier_uniform_(w)
    nn.init.xavier_uniform_(block.attn.proj.weight)
    for lin in (block.attn.qkv, block.attn.proj):
        if lin.bias is not None:
            nn.init.zeros_(lin.bias)
    for lin in (block.mlp.fc1, block.mlp.fc2):
        nn.init.xavier_uniform_(lin.weight)
        nn.init.normal_(lin.bias, std=1e-6)
    return block


@register("vit")
class ViTBlock2d(nn.Module):
    r"""ViT's encoder block applied to a feature map: one token per position,
    ``T = rearrange(x, "b c h w -> b (h w) c")``, then eqs. (2)-(3) of :class:`TransformerBlock`,
    then back to ``(B, C, H, W)``.

    Paper: A. Dosovitskiy, L. Beyer, A. Kolesnikov, D. Weissenborn, X. Zhai, T. Unterthiner,
    M. Dehghani, M. Minderer, G. Heigold, S. Gelly, J. Uszkoreit, N. Houlsby, "An Image is Worth
    16x16 Words: Transformers for Image Recognition at Scale", ICLR 2021, arXiv:2010.11929.
    Official code: google-research/vision_transformer, ``vit_jax/models_vit.py`` (``Encoder1DBlock``).

    Args:
        channels: C, the tokens' width D.
        heads: h; ``None`` (default) uses ViT-B's head width of 64 (needs C divisible by 64).
        mlp_ratio: the MLP's width over D (4 in ViT).
        qkv_bias: biases on the q, k, v projections (ViT's: ``True``).
        init: ``"official"`` (default) or ``"pytorch"``, the start (below).

    The block carries no position code: like every plug-in of the course it sees the map the
    network gives it (positions, if any, are the network's: :class:`attncourse.nets.TinyViT` adds
    them after its patch embedding, as ViT does). Without one it is permutation-equivariant:
    shuffling the positions of the map shuffles the output the same way.

    Differences from the official code (``tests/test_vit.py`` re-types it and timm's ``Block``):

    - GELU: the exact (erf) form, as timm and PyTorch ports; the Flax code's ``nn.gelu`` is the tanh
      approximation (at most 4.7e-4 apart). :class:`TransformerBlock` takes
      ``activation=lambda: nn.GELU("tanh")`` to reproduce the Flax block exactly.
    - q, k, v: one ``Linear(C, 3C)`` (timm's layout); Flax has three Dense layers of ``(C, h, d)``
      kernels, the same numbers rearranged.
    - No dropout (ViT-B/16's configuration trains with dropout 0.0 as well).
    - Initialisation (``init``): ``"official"`` (default) starts the block as the official code
      does: Xavier-uniform weights in every Dense layer (q, k and v each as its own D × D
      matrix, as Flax's three Dense layers, so the bound is sqrt(6 / 2D) for the fused ``qkv``
      too), zero attention biases, N(0, 1e-6) MLP biases, LayerNorms at 1 and 0.
      ``"pytorch"``: PyTorch's defaults for every layer (what :class:`TransformerBlock` alone
      gives; the part's protocols use it as a control, where ReViT starts from the same weights).
    - The MLP's width is ``round(mlp_ratio · C)`` (timm: ``int(mlp_ratio · C)``; the same for
      every integer product, e.g. the ratio 4 of ViT and 2 of the part's protocol).

    Shapes: ``(B, C, H, W)`` → ``(B, C, H, W)``, any H, W ≥ 1; B, H, W export dynamic.
    ``attention(x)`` returns the weights ``(B, h, H*W, H*W)``.
    Parameters: ``4C² + 4C`` (attention) ``+ 2·C·rC + rC + C`` (MLP, r = ``mlp_ratio``)
    ``+ 4C`` (two LayerNorms): ``12C² + 13C`` at r = 4.
    """

    def __init__(
        self, channels: int, *, heads: int | None = None, mlp_ratio: float = 4.0, qkv_bias: bool = True,
        init: str = "official",
    ) -> None:
        super().__init__()
        self.channels = check_channels(self, channels)
        heads = check_heads(self, self.channels, heads, width=64, source="ViT-B's ")
        check_choice(self, "init", init, ("official", "pytorch"))
        self.init = init
        self.block = TransformerBlock(self.channels, heads=heads, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias)
        if init == "official":
            official_init(self.block)

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        """The attention weights of the block's MSA, ``(B, h, H*W, H*W)``."""
        check_input(self, x, self.channels)
        return self.block.attn.attention(self.block.norm1(rearrange(x, "b c h w -> b (h w) c")))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(self, x, self.channels)
        h, w = x.shape[2:]
        t = self.block(rearrange(x, "b c h w -> b (h w) c"), (h, w))  # the map's size, for a plug-in (attncourse.insert)
        return rearrange(t, "b (h w) c -> b c h w", h=h, w=w)
