"""ReViT's residual attention (Diko et al., 2024): the pre-softmax attention logits of a layer are
blended with those of the layer before, so that a stack of ViT blocks passes its attention maps on.
The mechanism spans blocks: a token-level block that takes and returns the logits
(``ReViTBlock``), the stack that owns the shared α (``ReViTStack``), and the stack on a feature map
(``ReViT2d``, ``"revit"``)."""

from __future__ import annotations

import torch
from einops import rearrange
from torch import nn

from .._checks import check_channels, check_choice, check_heads, check_input, check_positive_int
from .._registry import register
from .vit import Mlp, TokenSelfAttention, _check_ratio

__all__ = ["ReViTBlock", "ReViTStack", "ReViT2d"]

INITS = ("official", "pytorch")


def _check_alpha(module: object, alpha: object) -> float:
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(f"{type(module).__name__} expected alpha to be a number in [0, 1], got {alpha!r}")
    return float(alpha)


def _official_init(m: nn.Module) -> None:
    """ReViT's ``_init_weights`` (``model/revit_model.py``): Linear weights truncated normal with
    std 0.02 (``nn.init.trunc_normal_``'s default cut at ±2, a hundred standard deviations: a
    normal in practice) and zero biases; LayerNorms weight 1, bias 0 (PyTorch's start already)."""
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)


class ReViTBlock(nn.Module):
    r"""One ReViT layer on tokens ``(B, N, D)``: ViT's pre-norm block whose attention logits are
    blended with the previous layer's before the softmax. ``forward(t, prev_logits, alpha)``
    returns ``(t, logits)``: the block's output and the logits ``A_l`` it passes on.

    ::

        S_l = Q_l K_l^T / sqrt(d)                        (Q, K, V from LN(t); per head)
        A_l = S_l                                        (first layer: prev_logits is None)
        A_l = alpha * S_l + (1 - alpha) * A_{l-1}        (later layers)
        t'  = t + W^O [softmax(A_l) V_l]                 (softmax through the Gate)
        out = t' + MLP(LN(t'))

    The parameters have :class:`~attncourse.blocks.vit.TransformerBlock`'s names (``norm1``,
    ``attn.qkv``, ``attn.proj``, ``norm2``, ``mlp.fc1``, ``mlp.fc2``), so a ViT block's state dict
    loads into it and, with α = 1, it computes that ViT block. The softmax runs through
    ``attn.gate`` (a :class:`~attncourse.layers.Gate`) in ``forward`` itself: the logits are needed
    anyway (they are passed on), so there is no fused path. α is not a parameter of the block: the
    official code has one α for the whole network, owned by :class:`ReViTStack`.

    Args:
        dim: D.
        heads: h (D divisible by h).
        mlp_ratio: the MLP's width over D (4 in ReViT-B).
        qkv_bias: biases on the q, k, v projections (ReViT-B's config: ``True``).
        eps: the LayerNorms' ε (1e-6, ``partial(nn.LayerNorm, eps=1e-6)`` in the official code).

    Parameters: ``4D² + 4D`` (attention) ``+ 2·D·rD + rD + D`` (MLP, r = ``mlp_ratio``) ``+ 4D``
    (two LayerNorms), with qkv biases.
    """

    def __init__(self, dim: int, *, heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = True, eps: float = 1e-6) -> None:
        super().__init__()
        self.dim = check_positive_int(self, "dim", dim)
        self.mlp_ratio = _check_ratio(self, mlp_ratio)
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = TokenSelfAttention(dim, heads=heads, qkv_bias=qkv_bias)  # qkv, proj, gate
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, max(1, round(dim * self.mlp_ratio)))
        self.heads = self.attn.heads
        self.head_dim = self.attn.head_dim

    def forward(
        self, t: torch.Tensor, prev_logits: torch.Tensor | None = None, alpha: torch.Tensor | float = 0.5
    ) -> tuple[torch.Tensor, torch.Tensor]:
        out, logits, _ = self.step(t, prev_logits, alpha)
        return out, logits

    def step(
        self, t: torch.Tensor, prev_logits: torch.Tensor | None = None, alpha: torch.Tensor | float = 0.5
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``forward`` that also returns the weights ``softmax(A_l)`` it applied: ``(t, logits, weights)``."""
        check_input(self, t, self.dim, layout="B N C")
        b, n, _ = t.shape
        if prev_logits is not None and (
            not isinstance(prev_logits, torch.Tensor) or tuple(prev_logits.shape) != (b, self.heads, n, n)
        ):
            got = tuple(prev_logits.shape) if isinstance(prev_logits, torch.Tensor) else type(prev_logits).__name__
            raise ValueError(f"ReViTBlock expected prev_logits of shape ({b}, {self.heads}, {n}, {n}), got {got}")
        q, k, v = rearrange(self.attn.qkv(self.norm1(t)), "b n (three h d) -> three b h n d", three=3, h=self.heads)
        logits = (q * self.head_dim**-0.5) @ k.transpose(-2, -1)  # S_l = Q K^T / sqrt(d): (B, h, N, N), q scaled first (N d products, not N^2)
        if prev_logits is not None:
            logits = alpha * logits + (1 - alpha) * prev_logits  # A_l = α S_l + (1 − α) A_{l−1}
        weights = self.attn.gate(logits)  # softmax(A_l), rows summing to 1
        o = weights @ v  # (B, h, N, d)
        t = t + self.attn.proj(rearrange(o, "b h n d -> b n (h d)"))  # z' = MSA + z
        return t + self.mlp(self.norm2(t)), logits, weights  # z = MLP(LN(z')) + z'


class ReViTStack(nn.Module):
    r"""A stack of ``depth`` :class:`ReViTBlock`\ s on tokens ``(B, N, D)`` that passes each layer's
    blended logits ``A_l`` to the next (the mechanism's real interface: it spans blocks), with one
    α shared by all layers, as the official ``ReViT`` model holds it.

    ``forward(t)`` returns the tokens; ``attention(t)`` returns every layer's weights
    ``softmax(A_l)`` (through each block's Gate), ``(B, depth, h, N, N)``. ``learn_alpha=False``
    keeps α fixed (a buffer): the official code's ``cfg.ReViT.alpha: False``; α = 1 fixed is a plain
    ViT stack. Parameters: ``depth`` blocks (see :class:`ReViTBlock`) ``+ 1`` when α is learned.
    See :class:`ReViT2d` for the paper, the arguments and the differences from the official code.
    """

    def __init__(
        self, dim: int, *, depth: int = 2, heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = True,
        alpha: float = 0.5, learn_alpha: bool = True, init: str = "official",
    ) -> None:
        super().__init__()
        self.dim = check_positive_int(self, "dim", dim)
        self.depth = check_positive_int(self, "depth", depth)
        check_choice(self, "learn_alpha", learn_alpha, (True, False))
        check_choice(self, "init", init, INITS)
        self.learn_alpha = bool(learn_alpha)
        self.init = init
        a = torch.tensor([_check_alpha(self, alpha)])  # one scalar, shape (1,), as the official torch.Tensor([0.5])
        if self.learn_alpha:
            self.alpha = nn.Parameter(a)
        else:
            self.register_buffer("alpha", a)
        self.blocks = nn.ModuleList(
            ReViTBlock(dim, heads=heads, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias) for _ in range(self.depth)
        )
        self.heads = self.blocks[0].heads
        if init == "official":
            self.apply(_official_init)

    def _run(self, t: torch.Tensor, weights: list[torch.Tensor] | None) -> torch.Tensor:
        check_input(self, t, self.dim, layout="B N C")
        logits = None
        for blk in self.blocks:
            t, logits, a = blk.step(t, logits, self.alpha)
            if weights is not None:
                weights.append(a)
        return t

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self._run(t, None)

    def attention(self, t: torch.Tensor) -> torch.Tensor:
        """Every layer's attention weights ``softmax(A_l)``, ``(B, depth, h, N, N)``, rows summing to 1."""
        weights: list[torch.Tensor] = []
        self._run(t, weights)
        return torch.stack(weights, dim=1)


@register("revit")
class ReViT2d(nn.Module):
    r"""ReViT's residual-attention transformer layers on a feature map: a whole stack of ``depth``
    pre-norm ViT blocks whose pre-softmax attention logits are passed from each layer to the next,
    ``(B, C, H, W) → (B, C, H, W)``, one token per position.

    Paper: A. Diko, D. Avola, M. Cascio, L. Cinque, "ReViT: Enhancing Vision Transformers Feature
    Diversity with Attention Residual Connections", arXiv:2402.11301, 2024 (v1: "ReViT: Enhancing
    Vision Transformers with Attention Residual Connections for Visual Recognition"). Official code:
    ADiko1997/ReViT, ``model/attention.py`` (``MultiScaleAttention.forward``'s "Residual Attention"
    lines, ``MultiScaleBlock``) and ``model/revit_model.py`` (``ReViT``: α and the loop over
    blocks), ``config/config-ReViT-B.yaml``.

    In every layer l and head, with ``S_l = Q_l K_lᵀ / sqrt(d)`` (d = C / h)::

        A_1 = S_1,    A_l = α · S_l + (1 − α) · A_{l−1}   (l > 1),    weights_l = softmax(A_l)

    and ``A_l`` (after the blend, before the softmax) is what layer l + 1 receives; each layer is
    otherwise ViT's pre-norm block (LN → MSA → residual, LN → MLP → residual; LN ε = 1e-6; GELU).
    α is **one** scalar for the whole stack, learned, starting at 0.5 (official: ``self.alpha =
    nn.Parameter(torch.Tensor([0.5]))`` in ``ReViT.__init__`` when ``cfg.ReViT.alpha`` is true, as
    in the ReViT-B config; otherwise the constant 0.5). The first layer has no previous logits and
    uses ``S_1`` unscaled. With α = 1 the stack is a plain ViT stack.

    This mechanism spans blocks, so it is registered as the stack (``spans_blocks = True``):
    :class:`~attncourse.nets.TinyViT` builds it once with ``depth=depth`` instead of ``depth``
    separate blocks. The token-level interfaces are :class:`ReViTBlock` (``forward(t, prev_logits,
    alpha) -> (t, logits)``) and :class:`ReViTStack` (tokens ``(B, N, C)``); this class wraps the
    stack with ``rearrange(x, "b c h w -> b (h w) c")`` and back.

    Args:
        channels: C, the tokens' width.
        depth: L, the number of layers in the stack (2 by default, the course's TinyViT depth;
            ReViT-B has 12).
        heads: h; ``None`` (default) uses ReViT-B's head width of 64 (768 / 12), which needs C
            divisible by 64.
        mlp_ratio: the MLP's width over C (4 in ReViT-B).
        qkv_bias: biases on the q, k, v projections (ReViT-B: ``True``).
        alpha: α's start (0.5), a number in [0, 1].
        learn_alpha: ``True`` (default, ReViT-B's config): α is a parameter; ``False``: a fixed
            buffer (the official ``cfg.ReViT.alpha: False``).
        init: ``"official"`` (default): the official ``_init_weights``, Linear weights truncated
            normal with std 0.02 and zero biases; ``"pytorch"``: ``nn.Linear``'s default start, as
            the course's ViT block (``"vit"``) has it, so that the two can be compared at the same start.

    Differences from the official code (which builds ReViT-B on MViTv2's ``MultiScaleBlock``): the
    ReViT-B config switches off every MViTv2 extra (no pooling of q/k/v, no relative positions, no
    class token, no residual pooling), so its block is ViT's; the module implements only that case
    and therefore not the MViTv2/Swin variants' head averaging and down-sampling of ``A_{l−1}``
    when shapes change. No drop-path (ReViT-B trains with 0.2; the course's networks use none).
    Patch embedding, position code, final norm and head are the network's
    (:class:`~attncourse.nets.TinyViT`), not the module's. The official optimiser exempts 1-D
    parameters, α included, from weight decay; that is the training loop's business.

    Shapes: ``(B, C, H, W)`` → ``(B, C, H, W)``, any H, W ≥ 1; B, H, W export dynamic.
    ``attention(x)`` returns every layer's weights ``(B, depth, h, H·W, H·W)`` through the blocks'
    Gates. Parameters: ``L · (4C² + 4C + 2·C·rC + rC + C + 4C)`` ``+ 1`` (α, when learned); at
    r = 4: ``L · (12C² + 13C) + 1``.
    """

    spans_blocks = True

    def __init__(
        self, channels: int, *, depth: int = 2, heads: int | None = None, mlp_ratio: float = 4.0,
        qkv_bias: bool = True, alpha: float = 0.5, learn_alpha: bool = True, init: str = "official",
    ) -> None:
        super().__init__()
        self.channels = check_channels(self, channels)
        heads = check_heads(self, self.channels, heads, width=64, source="ReViT-B's ")
        self.depth = check_positive_int(self, "depth", depth)
        _check_alpha(self, alpha)
        check_choice(self, "learn_alpha", learn_alpha, (True, False))
        check_choice(self, "init", init, INITS)
        _check_ratio(self, mlp_ratio)
        self.heads = heads
        self.mlp_ratio = float(mlp_ratio)
        self.qkv_bias = bool(qkv_bias)
        self.learn_alpha = bool(learn_alpha)
        self.init = init
        self.stack = ReViTStack(
            self.channels, depth=depth, heads=heads, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias,
            alpha=alpha, learn_alpha=learn_alpha, init=init,
        )

    @property
    def alpha(self) -> torch.Tensor:
        """The shared α, shape (1,)."""
        return self.stack.alpha

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        """Every layer's attention weights ``softmax(A_l)``, ``(B, depth, h, H·W, H·W)``, queries in
        ``(h w)`` order, through the blocks' Gates."""
        check_input(self, x, self.channels)
        return self.stack.attention(rearrange(x, "b c h w -> b (h w) c"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(self, x, self.channels)
        h, w = x.shape[2:]
        t = self.stack(rearrange(x, "b c h w -> b (h w) c"))
        return rearrange(t, "b (h w) c -> b c h w", h=h, w=w)
