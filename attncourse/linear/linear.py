"""Linear attention (Katharopoulos et al., ICML 2020) on the positions of a feature map, as a
multi-head residual plug-in. Chapter: ``chapters/linear/linear.md``."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from .._checks import check_channels, check_choice, check_divisible, check_input, check_positive_int
from .._registry import register
from ..layers import Gate
from ..selfattn.mhsa import check_sine_channels, sine_position_2d
from .kernel import EPS, RowNormalise, _accumulator, elu_feature_map, kernel_attention_heads

__all__ = ["LinearAttention2d", "FEATURE_MAPS", "POSITIONS"]

#: The positional options: none (the paper's), or DETR's 2-D sine code on the query and key tokens
#: (the course's). Not MHSA's list: its learned relative bias is added to softmax logits, which
#: linear attention never forms.
POSITIONS = (None, "sine")

#: The feature maps φ by name, the paper's elu(x) + 1 or ReLU (EfficientViT's LiteMLA; a feature can be all zero,
#: which the ε of the normaliser then guards).
FEATURE_MAPS = {"elu": elu_feature_map, "relu": F.relu}


@register("linear")
class LinearAttention2d(nn.Module):
    r"""Multi-head linear attention over the H × W positions of a feature map, as a residual
    plug-in: ``x + LinearAttention(T)`` with the tokens ``T = rearrange(x, "b c h w -> b (h w) c")``.

    Paper: A. Katharopoulos, A. Vyas, N. Pappas, F. Fleuret, "Transformers are RNNs: Fast
    Autoregressive Transformers with Linear Attention", ICML 2020 (PMLR 119), arXiv:2006.16236.

    Equations (section 3.2; numbered as we read the arXiv version, not checked against the ICML
    PDF), per head, with d = C / h and Q = T W^Q, K = T W^K, V = T W^V::

        (3)  V'_i = Σ_j sim(Q_i, K_j) V_j / Σ_j sim(Q_i, K_j)
        (4)  sim(q, k) = φ(q)ᵀ φ(k)
        (5)  V'_i = φ(Q_i)ᵀ (Σ_j φ(K_j) V_jᵀ) / (φ(Q_i)ᵀ Σ_j φ(K_j))
        (6)  (φ(Q) φ(K)ᵀ) V = φ(Q) (φ(K)ᵀ V)
        (7)  φ(x) = elu(x) + 1

    Eq. (5), by the associativity (6), costs O(N d²) per head instead of softmax attention's
    O(N² d): the d × d state
    ``Σ_j φ(K_j) V_jᵀ`` is formed once and every query reads it. Unlike softmax's logit
    q·k / √d, which grows with the square of the projections' scale, elu + 1 weights cannot be
    made arbitrarily sharp by larger projections: φ(s x) / s → ReLU(x) as s grows, so the weights
    tend to the ReLU kernel's, which do not depend on s (tested; the chapter measures the
    entropies). The heads are concatenated and
    projected by W^O, as in multi-head attention. The module is non-causal (every position sees
    every other, as on images); the causal form is ``attncourse.linear.kernel_attention(...,
    causal=True)``.

    Args:
        channels: C.
        heads: h (must divide C; d = C / h). 8 by default, as Part III's MHSA.
        bias: biases on the projections (``True``, as the course's MHSA; the paper's code uses
            ``nn.Linear`` with bias).
        feature_map: ``"elu"`` (the paper's φ(x) = elu(x) + 1) or ``"relu"`` (EfficientViT's; the
            same as ``FocusedLinearAttention2d(..., focusing_factor=1, kernel_size=None)`` with the
            same weights, tested).
        eps: ε added to the normaliser φ(Q_i)ᵀ Σ_j φ(K_j) (fast-transformers' 1e-6). With elu + 1
            the normaliser is > 0 in exact arithmetic; ε is there for ReLU features that are all
            zero (0/0) and for elu + 1 features that round to 0 in low precision.
        position: ``None`` (default): no position code, as in the paper, whose equations above
            see the tokens as a set: permuting the positions permutes the output (tested).
            ``"sine"``: **the course's own option, not the paper's** (Katharopoulos et al. give no
            position code for images): DETR's 2-D sine code :func:`~attncourse.selfattn.sine_position_2d`
            (Carion et al., ECCV 2020, arXiv:2005.12872), exactly as
            :class:`~attncourse.selfattn.MultiHeadSelfAttention2d`'s ``position="sine"``: the code P
            is added to the tokens that make the queries and keys, not the values, so
            Q = (T + P) W^Q, K = (T + P) W^K, V = T W^V (computed as T W + P W, with P W once per
            call, not per image). It needs ``channels`` divisible by 4, works at any H, W (the export
            keeps them dynamic) and learns nothing. Why it exists: Part III's "What attention without
            positions cannot see" (``chapters/selfattn/mhsa.md``): attention without positions is
            permutation equivariant and cannot tell where a token sits; the option lets a reader turn
            positions on where the arrangement matters, as for MHSA.

    Numerical care: φ, the sums and the state run in float32 when the input is float16 or
    bfloat16 (``Σ_j φ(K_j)`` over 65,536 positions overflows float16's 65,504; elu(x) + 1
    rounds to exactly 0 for x ≲ -6.2 in bfloat16, x ≲ -8.3 in float16), and the result is cast back.
    With ``position="sine"``, P and P W are computed in that precision too and added after the
    cast (in bfloat16 the rows and columns past 256 would otherwise round to one another).

    Identity at initialisation: W^O (``proj``, weight and bias) starts at zero, as in Part III's
    :class:`~attncourse.selfattn.MultiHeadSelfAttention2d`, so the module returns x; ``qkv`` starts
    Xavier-uniform with zero bias. The same parameters as that MHSA: ``4C² + 4C`` (``4C²`` without
    bias); linear attention adds none, nor does ``position="sine"``.

    Shapes: input ``(B, C, H, W)`` → output ``(B, C, H, W)``, any H, W ≥ 1.
    ``attention(x)`` returns the implicit weights ``φ(Q_i)ᵀφ(K_j) / (φ(Q_i)ᵀ Σ_j φ(K_j) + ε)``,
    ``(B, h, H*W, H*W)`` in ``(h w)`` order, rows summing to 1: what forward applies without
    forming them. They pass through ``gate`` (``Gate(RowNormalise(eps), kind="attention")``),
    which forward does not call.
    """

    def __init__(
        self,
        channels: int,
        *,
        heads: int = 8,
        bias: bool = True,
        feature_map: str = "elu",
        eps: float = EPS,
        position: str | None = None,
    ) -> None:
        super().__init__()
        self.channels = check_channels(self, channels)
        self.heads = check_positive_int(self, "heads", heads)
        check_divisible(self, "channels", self.channels, "heads", self.heads)
        check_choice(self, "bias", bias, (True, False))
        check_choice(self, "feature_map", feature_map, tuple(FEATURE_MAPS))
        if not (isinstance(eps, (int, float)) and not isinstance(eps, bool) and eps > 0):
            raise ValueError(f"{type(self).__name__} expected eps to be a number > 0, got {eps!r}")
        check_choice(self, "position", position, POSITIONS)
        if position == "sine":
            check_sine_channels(self, self.channels)
        self.bias = bool(bias)
        self.feature_map = feature_map
        self.eps = float(eps)
        self.position = position
        self.head_dim = self.channels // self.heads
        self.qkv = nn.Linear(channels, 3 * channels, bias=self.bias)  # [W^Q; W^K; W^V], heads side by side
        self.proj = nn.Linear(channels, channels, bias=self.bias)  # W^O
        self.gate = Gate(RowNormalise(self.eps), kind="attention")  # the normaliser of (5), used by attention(x)
        nn.init.xavier_uniform_(self.qkv.weight)
        nn.init.zeros_(self.proj.weight)  # W^O = 0: the module starts as the identity
        if self.bias:
            nn.init.zeros_(self.qkv.bias)
            nn.init.zeros_(self.proj.bias)

    def _features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """φ(Q), φ(K) (in float32 for half inputs) and V of every head, each ``(B, N, h, d)``:
        positions before heads, as the projection lays them out (views, no copies)."""
        _, c, h, w = x.shape
        t = rearrange(x, "b c h w -> b (h w) c")  # the tokens T: one per position
        q, k, v = rearrange(self.qkv(t), "b n (three h d) -> three b n h d", three=3, h=self.heads).unbind(0)
        acc = _accumulator(x.dtype)
        q, k = q.to(acc), k.to(acc)
        if self.position == "sine":  # (T + P) W^Q, (T + P) W^K, by linearity T W + P W: P once, not per image
            p = sine_position_2d(h, w, c, dtype=acc, device=x.device)  # P: (N, C)
            pw = F.linear(p, self.qkv.weight[: 2 * c].to(acc))  # [P W^Q, P W^K]: no bias, T W has it
            pq, pk = rearrange(pw, "n (two h d) -> two 1 n h d", two=2, h=self.heads)
            q, k = q + pq, k + pk
        phi = FEATURE_MAPS[self.feature_map]
        return phi(q), phi(k), v  # (7): φ(Q), φ(K)

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        """The implicit weights of every head, ``(B, h, H*W, H*W)``, rows summing to 1 (up to ε)."""
        check_input(self, x, self.channels)
        q, k, _ = self._features(x)
        sim = torch.einsum("bnhd,bmhd->bhnm", q, k)  # φ(Q_i)ᵀφ(K_j) for every head
        return self.gate(sim).to(x.dtype)  # normalised over j

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(self, x, self.channels)
        q, k, v = self._features(x)
        o = kernel_attention_heads(q, k, v, eps=self.eps)  # (5), per head: (B, N, h, d), in x's dtype
        o = self.proj(rearrange(o, "b n h d -> b n (h d)"))  # Concat(heads) W^O
        return x + rearrange(o, "b (h w) c -> b c h w", h=x.shape[2])

    def extra_repr(self) -> str:
        return (
            f"channels={self.channels}, heads={self.heads}, head_dim={self.head_dim}, bias={self.bias}, "
            f"feature_map={self.feature_map!r}, eps={self.eps}, position={self.position!r}"
        )
