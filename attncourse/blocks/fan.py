"""FAN's channel attention (Zhou et al., ICML 2022): the fully attentional block, token
self-attention followed by attention over channels in place of the MLP (``"fan"``).

Token-level parts (``DWConvMlp``, ``ChannelProcessing``, ``FANBlock``, on tokens ``(B, N, C)``
plus the map size ``(H, W)`` that the depthwise convolution needs, as the official code takes
``H, W``) and the block as a feature-map module (``FANBlock2d``)."""

from __future__ import annotations

import math
import numbers
from typing import Callable

import torch
from einops import rearrange
from torch import nn

from .._checks import check_channels, check_choice, check_input, check_norm_batch, check_positive_int
from .._registry import register
from ..layers import Gate
from .vit import TokenSelfAttention, _check_ratio

__all__ = ["DWConvMlp", "ChannelProcessing", "FANBlock", "FANBlock2d"]


def _check_heads(module: object, dim: int, heads: object, arg: str = "heads") -> int:
    heads = check_positive_int(module, arg, heads)
    if dim % heads:
        raise ValueError(f"{type(module).__name__} expected {arg}={heads} to divide the width, got width {dim}")
    return heads


def _check_eta(module: object, eta: object) -> float:
    if isinstance(eta, bool) or not isinstance(eta, numbers.Real) or not math.isfinite(eta):
        raise ValueError(f"{type(module).__name__} expected eta to be a finite number, got {eta!r}")
    return float(eta)


def _check_size(module: object, t: torch.Tensor, size: object) -> tuple[int, int]:
    if not isinstance(size, (tuple, list)) or len(size) != 2:
        raise ValueError(f"{type(module).__name__} expected size=(H, W), the token map's size, got {size!r}")
    h, w = size
    if h * w != t.shape[1]:
        raise ValueError(
            f"{type(module).__name__} expected {t.shape[1]} tokens to form a map of size (H, W) = {tuple(size)}, "
            f"which has {h * w}"
        )
    return h, w


def fan_init_(m: nn.Module) -> None:
    """The official initialisation (``_init_weights`` of ``TokenMixing``, ``ChannelProcessing`` and
    ``Mlp`` in NVlabs/FAN ``models/fan.py``), for ``module.apply``: Linear weights truncated normal
    with std 0.02, biases 0; LayerNorm 1 and 0; Conv2d weights normal with std sqrt(2 / fan_out),
    fan_out = k·k·out / groups (9 for the 3 × 3 depthwise convolutions: std 0.471), biases 0."""
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)
    elif isinstance(m, nn.Conv2d):
        fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
        nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
        if m.bias is not None:
            nn.init.zeros_(m.bias)


class ScaledSigmoid(nn.Module):
    """FAN's gate: ``σ(logits) · τ_h`` with one learned τ per head (``temperature``, ``(h, 1, 1)``,
    initialised to 1). The official code calls τ a temperature, but it multiplies the sigmoid's
    *output* (a gate in (0, τ)), it does not divide its input."""

    def __init__(self, heads: int) -> None:
        super().__init__()
        self.temperature = nn.Parameter(torch.ones(heads, 1, 1))

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(logits) * self.temperature


class DWConvMlp(nn.Module):
    r"""FAN's MLP for the values: ``fc2(u + γ ⊙ DWConv(u))`` with ``u = fc1(t)``, on tokens ``(B, N, C)``
    laid out on an ``(H, W)`` map (official ``Mlp`` with ``DWConv``, NVlabs/FAN ``models/fan.py``).

    ``DWConv = conv2 ∘ BN ∘ GELU ∘ conv1``, both 3 × 3 depthwise with biases, on the hidden map
    ``(B, Ĉ, H, W)``; γ (``gamma``, Ĉ values, initialised to 1) scales it before the residual. As
    released, the MLP applies no activation of its own between fc1 and fc2 (the official ``Mlp``
    builds ``act`` but its ``forward`` never calls it): the only non-linearity is DWConv's GELU.
    Parameters: ``2·C·Ĉ + 24·Ĉ + C`` (fc1, conv1, BN, conv2, γ, fc2).
    """

    def __init__(self, dim: int, hidden: int, *, activation: Callable[[], nn.Module] = nn.GELU) -> None:
        super().__init__()
        self.dim = check_positive_int(self, "dim", dim)
        self.hidden = check_positive_int(self, "hidden", hidden)
        self.gamma = nn.Parameter(torch.ones(hidden))  # γ
        self.fc1 = nn.Linear(dim, hidden)
        self.conv1 = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden)
        self.act = activation()
        self.bn = nn.BatchNorm2d(hidden)
        self.conv2 = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, t: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        check_input(self, t, self.dim, layout="B N C")
        h, w = _check_size(self, t, size)
        u = self.fc1(t)  # (B, N, Ĉ)
        m = rearrange(u, "b (h w) c -> b c h w", h=h, w=w)
        m = self.conv2(self.bn(self.act(self.conv1(m))))  # DWConv on the hidden map
        u = u + self.gamma * rearrange(m, "b c h w -> b (h w) c")  # u + γ ⊙ DWConv(u)
        return self.fc2(u)


class ChannelProcessing(nn.Module):
    r"""FAN's attentional channel processing on tokens ``(B, N, C)`` of an ``(H, W)`` map, as released
    (NVlabs/FAN ``models/fan.py``, ``ChannelProcessing``): the paper's efficient channel attention,
    eq. (7) of arXiv:2204.12451, which replaced the full channel self-attention of eq. (6) in the
    released code (the first author, NVlabs/FAN issue #22).

    Per head (C split into h heads of d = C / h channels), with T the input tokens:

    ::

        Q = T W_q (+ b_q)               K = T  (no projection)           V = LN(DWConvMlp(T))
        Q̄ = softmax over the N tokens of each channel of Q                 (N, d)
        k̄ = mean over the head's d channels of (softmax over tokens of K)  (N, 1)
        a = τ_h · σ(Q̄ᵀ k̄)                                                 (d, 1)
        out[n, c] = a[c] · V[n, c]

    Q̄ᵀ k̄ is the inner product of two probability distributions over the tokens, so it lies in
    (0, max_n k̄_n] ⊂ (0, 1]: every gate σ(·) lies in (1/2, σ(1) ≈ 0.731) before τ. The output
    has no projection after the attention (the paper's Fig. 2: "the linear projection layer after
    the channel attention is removed").

    Args:
        dim: C.
        heads: h (``num_heads``, or the official ``c_head_num`` where a network sets it).
        mlp_ratio: Ĉ / C, the width of the values' MLP (``mlp_hidden_dim = int(C · mlp_ratio)``).
        qkv_bias: a bias on W_q (``True``: the released networks pass FAN's ``qkv_bias=True``).
        eps: the ε of LN on the values (1e-5: the official block builds it with PyTorch's default,
            not with the network's ``eps=1e-6``).

    ``attention(t)`` returns the gates ``a`` ``(B, h, d, 1)`` (official layout) through ``gate``, a
    :class:`~attncourse.layers.Gate` around ``ScaledSigmoid`` (so hooks see ``τ·σ``, the
    weights that multiply V). Parameters: ``C² + 2·C·Ĉ + 24·Ĉ + 4C + h`` (``− C`` without bias).
    """

    def __init__(self, dim: int, *, heads: int = 8, mlp_ratio: float = 4.0, qkv_bias: bool = True, eps: float = 1e-5) -> None:
        super().__init__()
        self.dim = check_positive_int(self, "dim", dim)
        self.heads = _check_heads(self, self.dim, heads)
        self.mlp_ratio = _check_ratio(self, mlp_ratio)
        check_choice(self, "qkv_bias", qkv_bias, (True, False))
        self.hidden = int(self.dim * self.mlp_ratio)
        if self.hidden < 1:
            raise ValueError(f"{type(self).__name__} expected int(dim * mlp_ratio) >= 1, got dim={dim}, mlp_ratio={mlp_ratio}")
        self.gate = Gate(ScaledSigmoid(self.heads), kind="channel")  # τ_h · σ(·)
        self.mlp_v = DWConvMlp(self.dim, self.hidden)
        self.norm_v = nn.LayerNorm(self.dim, eps=eps)
        self.q = nn.Linear(self.dim, self.dim, bias=qkv_bias)  # W_q
        self.apply(fan_init_)

    def _check(self, t: torch.Tensor) -> None:
        check_input(self, t, self.dim, layout="B N C")

    def _gates(self, t: torch.Tensor) -> torch.Tensor:
        q = rearrange(self.q(t), "b n (h d) -> b h n d", h=self.heads).softmax(dim=-2)  # Q̄: softmax over tokens
        k = rearrange(t, "b n (h d) -> b h n d", h=self.heads).softmax(dim=-2)  # softmax over tokens of K = T
        k = k.mean(dim=-1, keepdim=True)  # k̄: mean over the head's channels, (B, h, N, 1)
        return self.gate(q.transpose(-2, -1) @ k)  # τ_h σ(Q̄ᵀ k̄): (B, h, d, 1)

    def attention(self, t: torch.Tensor) -> torch.Tensor:
        """The gates ``τ_h σ(Q̄ᵀ k̄)`` of every head, ``(B, h, d, 1)``: channel ``c`` of head ``i`` is ``[:, i, c, 0]``."""
        self._check(t)
        return self._gates(t)

    def forward(self, t: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        self._check(t)
        _check_size(self, t, size)
        a = rearrange(self._gates(t), "b h d 1 -> b 1 (h d)")  # one gate per channel, (B, 1, C)
        v = self.norm_v(self.mlp_v(t, size))  # V = LN(DWConvMlp(T)), (B, N, C)
        return a * v


class FANBlock(nn.Module):
    r"""The FAN block on tokens ``(B, N, C)`` of an ``(H, W)`` map (NVlabs/FAN ``models/fan.py``,
    ``FANBlock``; the paper's Fig. 2(b)):

    ::

        T' = T  + γ₁ ⊙ SA(LN(T))                (token self-attention, ViT's MSA)
        T'' = T' + γ₂ ⊙ ChannelProcessing(LN(T'))

    SA is :class:`~attncourse.blocks.vit.TokenSelfAttention` (the official ``TokenMixing``: q and
    kv Linear layers, which are the rows of one ``qkv`` Linear, softmax(QKᵀ/√d)V, ``proj``).
    γ₁, γ₂ (``gamma1``, ``gamma2``: C values each) are the official block's layer scale, always
    present and initialised to ``eta`` (1.0 in every released network). LayerNorms with ε = 1e-6
    (the network's ``norm_layer``); the values' LN inside ChannelProcessing has 1e-5.
    Initialisation: the official one (``fan_init_``).

    Args:
        dim: C.
        heads: h of the token self-attention (and of the channel attention unless ``channel_heads``).
        mlp_ratio: Ĉ / C of the values' MLP.
        qkv_bias: biases on q, k, v and on the channel attention's W_q (FAN's ``qkv_bias=True``).
        eta: the layer scales' initial value.
        channel_heads: the official ``c_head_num``, the heads of the channel attention; ``None``: ``heads``.
    """

    def __init__(
        self,
        dim: int,
        *,
        heads: int = 8,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        eta: float = 1.0,
        channel_heads: int | None = None,
    ) -> None:
        super().__init__()
        self.dim = check_positive_int(self, "dim", dim)
        self.heads = _check_heads(self, self.dim, heads)
        self.channel_heads = self.heads if channel_heads is None else _check_heads(self, self.dim, channel_heads, "channel_heads")
        self.eta = _check_eta(self, eta)
        self.gamma1 = nn.Parameter(self.eta * torch.ones(self.dim))  # γ₁
        self.gamma2 = nn.Parameter(self.eta * torch.ones(self.dim))  # γ₂
        self.norm1 = nn.LayerNorm(self.dim, eps=1e-6)
        self.attn = TokenSelfAttention(self.dim, heads=self.heads, qkv_bias=qkv_bias)
        self.norm2 = nn.LayerNorm(self.dim, eps=1e-6)
        self.mlp = ChannelProcessing(self.dim, heads=self.channel_heads, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias)
        self.apply(fan_init_)

    def _mix(self, t: torch.Tensor) -> torch.Tensor:
        return t + self.gamma1 * self.attn(self.norm1(t))  # T' = T + γ₁ SA(LN(T))

    def token_attention(self, t: torch.Tensor) -> torch.Tensor:
        """The token self-attention's weights ``(B, h, N, N)``."""
        check_input(self, t, self.dim, layout="B N C")
        return self.attn.attention(self.norm1(t))

    def attention(self, t: torch.Tensor) -> torch.Tensor:
        """The channel attention's gates ``(B, h_c, d, 1)`` (after the token mixing, as forward computes them)."""
        check_input(self, t, self.dim, layout="B N C")
        return self.mlp.attention(self.norm2(self._mix(t)))

    def forward(self, t: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        check_input(self, t, self.dim, layout="B N C")
        _check_size(self, t, size)
        t = self._mix(t)
        return t + self.gamma2 * self.mlp(self.norm2(t), size)  # T'' = T' + γ₂ CP(LN(T'))


@register("fan")
class FANBlock2d(nn.Module):
    r"""The FAN block (token self-attention, then attention over channels in place of the MLP) on a
    feature map: one token per position, ``T = rearrange(x, "b c h w -> b (h w) c")``, then
    :class:`FANBlock`, then back to ``(B, C, H, W)``.

    Paper: D. Zhou, Z. Yu, E. Xie, C. Xiao, A. Anandkumar, J. Feng, J. M. Alvarez, "Understanding
    The Robustness in Vision Transformers", ICML 2022, arXiv:2204.12451 (section 3, Fig. 2(b),
    eqs. (6)-(7)). Official code: NVlabs/FAN, ``models/fan.py`` (``FANBlock``, ``TokenMixing``,
    ``ChannelProcessing``, ``Mlp``, ``DWConv``).

    ::

        T'  = T  + γ₁ ⊙ MSA(LN(T))
        T'' = T' + γ₂ ⊙ (a ⊙ LN(DWConvMlp(LN(T'))))      a = τ_h σ(softmax_N(Q)ᵀ mean_d softmax_N(K))

    with Q = LN(T') W_q and K = LN(T') per head (see :class:`ChannelProcessing`).

    Args:
        channels: C.
        heads: h, the heads of both attentions (8, FAN-S's and FAN-B's; FAN-T has 4, FAN-L 10).
        mlp_ratio: Ĉ / C of the values' MLP (4, all FAN models).
        qkv_bias: biases on the q, k, v projections (``True``, as the FAN networks build the block).
        eta: the layer scales γ₁, γ₂ start at this value (1.0, all FAN models).
        channel_heads: the official ``c_head_num``: heads of the channel attention (``None``: ``heads``).

    Differences from the official code: none in the computation (the test re-types it and compares
    in float64). Dropout, drop path, the ``return_attention`` path and the block's ``downsample``
    (used only where FAN-Hybrid changes width) are left out; TokenMixing's ``q`` and ``kv``
    Linear layers are one ``qkv`` Linear here (the same rows). The paper's text describes the full
    channel self-attention of eq. (6); the released code, which this module follows, computes the
    efficient eq. (7) above (see the chapter for the two side by side).

    Shapes: ``(B, C, H, W)`` → ``(B, C, H, W)``, any H, W ≥ 1; B, H, W export dynamic. In training
    mode the DWConv's batch norm needs B·H·W > 1. ``attention(x)`` returns the channel gates
    ``(B, h, d, 1)``, ``token_attention(x)`` the token attention ``(B, h, H·W, H·W)``.
    Parameters: ``5C² + 2·C·Ĉ + 24·Ĉ + 14C + h`` (Ĉ = ``int(C·mlp_ratio)``; ``− 4C`` without
    qkv_bias): ``13C² + 110C + h`` at mlp_ratio 4.
    """

    def __init__(
        self,
        channels: int,
        *,
        heads: int = 8,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        eta: float = 1.0,
        channel_heads: int | None = None,
    ) -> None:
        super().__init__()
        self.channels = check_channels(self, channels)
        _check_heads(self, self.channels, heads)
        if channel_heads is not None:
            _check_heads(self, self.channels, channel_heads, "channel_heads")
        _check_ratio(self, mlp_ratio)
        check_choice(self, "qkv_bias", qkv_bias, (True, False))
        _check_eta(self, eta)
        if int(self.channels * mlp_ratio) < 1:
            raise ValueError(f"FANBlock2d expected int(channels * mlp_ratio) >= 1, got channels={channels}, mlp_ratio={mlp_ratio}")
        self.block = FANBlock(
            self.channels, heads=heads, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, eta=eta, channel_heads=channel_heads
        )

    def _check(self, x: torch.Tensor) -> None:
        check_input(self, x, self.channels)
        if self.training:
            check_norm_batch(self, x, "the batch norm of its DWConv")

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        """The channel attention's gates ``(B, h, d, 1)``."""
        check_input(self, x, self.channels)
        return self.block.attention(rearrange(x, "b c h w -> b (h w) c"))

    def token_attention(self, x: torch.Tensor) -> torch.Tensor:
        """The token self-attention's weights ``(B, h, H*W, H*W)``."""
        check_input(self, x, self.channels)
        return self.block.token_attention(rearrange(x, "b c h w -> b (h w) c"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x)
        h, w = x.shape[2:]
        t = self.block(rearrange(x, "b c h w -> b (h w) c"), (h, w))
        return rearrange(t, "b (h w) c -> b c h w", h=h, w=w)
