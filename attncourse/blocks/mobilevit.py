"""The MobileViT block (Mehta & Rastegari, ICLR 2022): a convolution-transformer hybrid in which
the transformer runs *across patches*, one sequence per pixel position inside the patch
(``"mobilevit"``)."""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from .._checks import check_channels, check_choice, check_divisible, check_input, check_norm_batch, check_positive_int
from .._registry import register
from .vit import TransformerBlock, _check_ratio

__all__ = ["MobileViTBlock"]

#: The non-linearities the block can use: the paper's and the official code's Swish (SiLU), or the
#: ReLU that timm's bare ``MobileVitBlock`` falls back to when no network hands it one.
ACTIVATIONS = {"silu": nn.SiLU, "relu": nn.ReLU}


def _conv_norm_act(c_in: int, c_out: int, kernel_size: int, activation: type[nn.Module]) -> nn.Sequential:
    """cvnets' ``ConvLayer2d`` with ``use_norm=True, use_act=True``: a bias-free convolution with
    "same" padding, a batch norm, the activation."""
    return nn.Sequential(OrderedDict(
        conv=nn.Conv2d(c_in, c_out, kernel_size, padding=(kernel_size - 1) // 2, bias=False),
        norm=nn.BatchNorm2d(c_out),
        act=activation(),
    ))


@register("mobilevit")
class MobileViTBlock(nn.Module):
    r"""The MobileViT block: local convolutions, a transformer across patches (one sequence per
    pixel position in the patch), and a fusion with the input, on a ``(B, C, H, W)`` map.

    Paper: S. Mehta, M. Rastegari, "MobileViT: Light-weight, General-purpose, and Mobile-friendly
    Vision Transformer", ICLR 2022, arXiv:2110.02178 (Section 3, Fig. 1b). Official code:
    apple/ml-cvnets, ``cvnets/modules/mobilevit_block.py`` (``MobileViTBlock``, its ``unfolding``,
    ``folding`` and ``forward_spatial``), ``cvnets/modules/transformer.py`` (``TransformerEncoder``)
    and the network configuration ``cvnets/models/classification/config/mobilevit.py``.

    With P = h·w pixels per patch (patch ``h = w = p``) and N = HW / P patches::

        X_L = Conv1x1_{C→d}(Conv n×n_{C→C}(X))                      (local representation, H × W × d)
        X_U = unfold(X_L)                                           (P × N × d)
        X_G(p) = Transformer(X_U(p)),  1 ≤ p ≤ P                    (eq. (1): L layers, then a LayerNorm)
        X_F = fold(X_G)                                             (H × W × d)
        Y = Conv n×n_{2C→C}([X, Conv1x1_{d→C}(X_F)])                (fusion: concatenate, convolve)

    ``X_U(p)`` is the sequence of the p-th pixel of every patch: the transformer's tokens are
    patches, and pixel ``(i, j)`` attends only to the pixels ``(i', j')`` with ``i' ≡ i`` and
    ``j' ≡ j`` (mod p), the same position in every other patch (the n × n convolution before it
    has already mixed each pixel with its neighbours). Every transformer layer is ViT's pre-norm
    layer (:class:`attncourse.blocks.vit.TransformerBlock`: LN → MHSA → residual, LN → MLP →
    residual), the official ``TransformerEncoder`` exactly (one ``Linear(d, 3d)`` for q, k, v with
    the heads side by side, q scaled by (d/heads)^-1/2, biases everywhere), with Swish in the MLP
    and LayerNorm ε = 1e-5 (cvnets' and timm's, not ViT's 1e-6). Convolutions are bias-free with a
    batch norm (ε = 1e-5) and the activation after them, except the 1 × 1 to d (no norm, no
    activation), as in the official code.

    Odd sizes: as the official code (and timm) do, a map whose H or W is not a multiple of p is
    resized bilinearly (``align_corners=False``) to the next multiple before the unfolding, and the
    folded map is resized back to H × W. A 1 × 1 map becomes a 2 × 2 one of four equal pixels.

    Args:
        channels: C.
        dim: d, the transformer's width. ``None`` (default): d = C, the width of the ViT block it is
            compared with in Part VI and timm's default (``transformer_dim = bottle_ratio · C``,
            ratio 1). The MobileViT networks choose d per stage: d = 1.5 C in MobileViT-XS and -S
            (e.g. C = 96, d = 144), 1.2 to 1.33 C in -XXS.
        depth: L, the number of transformer layers (2, 4, 3 in the three stages of the networks;
            2 is the official class's default).
        patch: the patch side p (h = w = p; P = p²). 2, the paper's and the official networks'
            choice at every stage (the official class's and timm's class default is 8).
        heads: the attention heads; must divide d. 4, the official ImageNet configuration's
            ``number_heads`` and timm's default (the cvnets class alone defaults to head width 32).
        mlp_ratio: the MLP's width over d; 2 (FFN = 2d in every official configuration).
        kernel_size: n, the side of the local and of the fusion convolution (3); odd.
        activation: ``"silu"`` (default; the paper's and official code's Swish) or ``"relu"``
            (timm's ``MobileVitBlock`` without a network's layer config).
        fusion: ``True`` (default) concatenates the input and fuses with an n × n convolution;
            ``False`` is the official ``no_fusion`` option (output ``Conv1x1_{d→C}(X_F)``).

    ``spans_blocks = True``: :class:`attncourse.nets.TinyViT` builds *one* MobileViT block with
    ``depth`` transformer layers (L = the network's depth), so ``TinyViT(..., depth=2,
    block="mobilevit")`` has two transformer layers, as ``block="vit"`` has.

    Shapes: ``(B, C, H, W)`` → ``(B, C, H, W)``, any H, W ≥ 1. ``attention(x)`` returns the weights
    of every layer ``(B, L, P, heads, N, N)`` (pixel position p in row-major order inside the
    patch, patches in row-major order of the resized map), through each layer's ``Gate``.

    Parameters (F = ``round(mlp_ratio · d)``, 2d by default)::

        n²C² + 2C            local n × n convolution and its batch norm
      + C·d                  1 × 1 to d (no bias)
      + L·(4d² + 4d          attention: W^Q, W^K, W^V, W^O with biases
           + 2dF + F + d     MLP
           + 4d)             two LayerNorms
      + 2d                   the LayerNorm after the L layers
      + d·C + 2C             1 × 1 back to C and its batch norm
      + 2n²C² + 2C           fusion convolution 2C → C and its batch norm
      = 3n²C² + 2Cd + 6C + 2d + L·(4d² + 2dF + F + 9d)   (without fusion: n²C² + 2Cd + 4C + 2d + L·(...)).

    Initialisation as the official ImageNet recipe (``config/classification/imagenet/mobilevit.yaml``
    with ``cvnets/misc/init_utils.py``): convolutions Kaiming-normal (fan-out), linear layers
    truncated normal with std 0.02, biases 0, norms weight 1 and bias 0. No identity start: the
    block is the whole block, as in the paper.

    Differences from the official code, and why:

    - no dropout (the official recipe has 0.1 after the attention and the MLP); the course's blocks
      have none, and in eval mode the two agree;
    - attention through ``F.scaled_dot_product_attention`` (the official code multiplies and takes
      the softmax in float32); the same numbers up to rounding, tested equal in float64;
    - the square patch is one integer (the official block has ``patch_h``, ``patch_w``).

    Export: H and W are exported static, because the number of patches along each axis, ⌈H/p⌉ and
    ⌈W/p⌉, can be 1, which the exporter cannot rule out for a symbolic size (its reshapes then
    guard on it). ``torch.compile(dynamic=True)`` handles a new H and W with at most one recompile
    per parity of H and W (the resize runs only when p does not divide them, as in the official
    code). Tried without success: always resizing, the official ``reshape``/``transpose`` chain,
    and ``F.pixel_unshuffle``.
    """

    export_static_dims = {
        "H": "the number of patches along each axis, ⌈H/p⌉ and ⌈W/p⌉, can be 1, which the exporter cannot rule out for a symbolic size",
        "W": "the number of patches along each axis, ⌈H/p⌉ and ⌈W/p⌉, can be 1, which the exporter cannot rule out for a symbolic size",
    }
    spans_blocks = True

    def __init__(
        self,
        channels: int,
        *,
        dim: int | None = None,
        depth: int = 2,
        patch: int = 2,
        heads: int = 4,
        mlp_ratio: float = 2.0,
        kernel_size: int = 3,
        activation: str = "silu",
        fusion: bool = True,
    ) -> None:
        super().__init__()
        self.channels = check_channels(self, channels)
        self.dim = self.channels if dim is None else check_positive_int(self, "dim", dim)
        self.depth = check_positive_int(self, "depth", depth)
        self.patch = check_positive_int(self, "patch", patch)
        self.heads = check_positive_int(self, "heads", heads)
        check_divisible(self, "dim", self.dim, "heads", self.heads)
        self.mlp_ratio = _check_ratio(self, mlp_ratio)
        self.kernel_size = check_positive_int(self, "kernel_size", kernel_size)
        if self.kernel_size % 2 == 0:
            raise ValueError(f"{type(self).__name__} expected an odd kernel_size (the map keeps its size), got {kernel_size}")
        check_choice(self, "activation", activation, tuple(ACTIVATIONS))
        check_choice(self, "fusion", fusion, (True, False))
        self.activation = activation
        act = ACTIVATIONS[activation]
        c, d, n = self.channels, self.dim, self.kernel_size
        self.local_conv = _conv_norm_act(c, c, n, act)  # n x n: local spatial information
        self.local_proj = nn.Conv2d(c, d, 1, bias=False)  # 1 x 1 to d: X_L
        self.layers = nn.ModuleList(
            TransformerBlock(d, heads=self.heads, mlp_ratio=self.mlp_ratio, activation=act, eps=1e-5)
            for _ in range(self.depth)
        )
        self.norm = nn.LayerNorm(d, eps=1e-5)  # after the L layers, as the official global_rep
        self.proj = _conv_norm_act(d, c, 1, act)  # 1 x 1 back to C
        self.fusion = _conv_norm_act(2 * c, c, n, act) if fusion else None
        self._init_official()

    def _init_official(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, (nn.LayerNorm, nn.BatchNorm2d)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    # ------------------------------------------------------------------ the steps of the block
    def _check(self, x: torch.Tensor) -> None:
        check_input(self, x, self.channels)
        if self.training:
            check_norm_batch(self, x, "the batch norms after its convolutions")

    def local_rep(self, x: torch.Tensor) -> torch.Tensor:
        """``X_L``: the n × n convolution (+ BN + activation), then the 1 × 1 to d: ``(B, d, H, W)``."""
        return self.local_proj(self.local_conv(x))

    def unfold(self, z: torch.Tensor) -> tuple[torch.Tensor, bool]:
        """``X_U``: ``(B, d, H, W)`` → ``(B·P, N, d)``, one sequence of N patches per pixel position
        (batch outer, p = (i, j) row-major inside the patch). Resizes to a multiple of p first when
        needed (returned flag)."""
        h, w = z.shape[2:]
        p = self.patch
        hp, wp = -(-h // p) * p, -(-w // p) * p
        resized = hp != h or wp != w
        if resized:  # the official code's bilinear resize to the next multiple of the patch
            z = F.interpolate(z, size=(hp, wp), mode="bilinear", align_corners=False)
        return rearrange(z, "b d (nh i) (nw j) -> (b i j) (nh nw) d", i=p, j=p), resized

    def fold(self, t: torch.Tensor, size: tuple[int, int], resized: bool) -> torch.Tensor:
        """The inverse of :meth:`unfold`: ``(B·P, N, d)`` → ``(B, d, H, W)`` (resized back if needed)."""
        h, w = size
        p = self.patch
        z = rearrange(t, "(b i j) (nh nw) d -> b d (nh i) (nw j)", i=p, j=p, nh=-(-h // p))
        if resized:
            z = F.interpolate(z, size=(h, w), mode="bilinear", align_corners=False)
        return z

    def global_rep(self, z: torch.Tensor) -> torch.Tensor:
        """``X_F = fold(LN(Transformer^L(unfold(X_L))))``, eq. (1) for every p at once: ``(B, d, H, W)``."""
        t, resized = self.unfold(z)
        for layer in self.layers:
            t = layer(t)  # X_G(p) = Transformer(X_U(p)): B·P independent sequences of N patches
        return self.fold(self.norm(t), (z.shape[2], z.shape[3]), resized)

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        """The attention weights of every layer, ``(B, L, P, heads, N, N)``, rows summing to 1: the
        weights forward applies (each layer's ``attn.gate``)."""
        self._check(x)
        t, _ = self.unfold(self.local_rep(x))
        weights = []
        for layer in self.layers:
            weights.append(layer.attn.attention(layer.norm1(t)))  # (B·P, heads, N, N)
            t = layer(t)
        return rearrange(torch.stack(weights), "l (b q) h n m -> b l q h n m", q=self.patch**2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x)
        y = self.proj(self.global_rep(self.local_rep(x)))  # Conv1x1_{d->C}(X_F)
        if self.fusion is not None:
            y = self.fusion(torch.cat((x, y), dim=1))  # concatenate with the input, fuse with n x n
        return y

    def extra_repr(self) -> str:
        return (f"channels={self.channels}, dim={self.dim}, depth={self.depth}, patch={self.patch}, heads={self.heads}, "
                f"mlp_ratio={self.mlp_ratio}, kernel_size={self.kernel_size}, activation={self.activation!r}, "
                f"fusion={self.fusion is not None}")
