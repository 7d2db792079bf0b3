"""Focused Linear Attention (Han et al., ICCV 2023) on the positions of a feature map, as a
multi-head residual plug-in. Chapter: ``chapters/linear/flatten.md``."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from .._checks import check_channels, check_choice, check_divisible, check_input, check_positive_int
from .._registry import register
from ..layers import Gate
from .kernel import EPS, RowNormalise, _accumulator, kernel_attention

__all__ = ["FocusedLinearAttention2d", "focusing_function"]


def focusing_function(x: torch.Tensor, p: float, *, eps: float = EPS) -> torch.Tensor:
    r"""The focusing function f_p (F2) along the last axis, for x ≥ 0:
    ``f_p(x) = (‖x‖ / ‖x^{**p}‖) · x^{**p}`` (``x^{**p}``: element-wise power).

    It keeps the norm of x and raises every component to the power p before renormalising, so the
    largest components gain on the others: the direction moves towards the nearest axis.

    Computed as ``‖x‖ · y^p / max(‖y^p‖, ε)`` with ``y = x / max_i x_i``: the same in exact
    arithmetic (f_p is positively homogeneous of degree 1, so dividing x by a positive number
    changes nothing), but y ≤ 1 cannot overflow (x³ overflows float16 from x ≈ 40) and ‖y^p‖ ≥ 1
    because y's largest component is exactly 1. The ε (> 0, < 1) is therefore inactive except for
    an all-zero x (a ReLU feature that is zero everywhere), where the paper's 0/0 becomes 0.
    Runs in float32 for float16/bfloat16 inputs and returns float32 then.
    """
    acc = _accumulator(x.dtype)
    x = x.to(acc)
    # max_i x_i (x ≥ 0; tiny for x = 0), detached: the result does not depend on it (degree-1
    # homogeneity), so its exact gradient is zero and its backward (a mask over the maxima) is saved
    m = x.detach().amax(dim=-1, keepdim=True).clamp_min(torch.finfo(acc).tiny)
    y = (x / m) ** p  # (x / m)^{**p}: every component in [0, 1], the largest exactly 1
    norm_x = x.norm(dim=-1, keepdim=True)  # ‖x‖
    return norm_x * y / y.norm(dim=-1, keepdim=True).clamp_min(eps)  # ‖x‖ · x^p / ‖x^p‖


@register("flatten")
class FocusedLinearAttention2d(nn.Module):
    r"""Multi-head focused linear attention over the H × W positions of a feature map, plus a
    depthwise convolution on the values, as a residual plug-in: ``x + FLA(T)`` with the tokens
    ``T = rearrange(x, "b c h w -> b (h w) c")``.

    Paper: D. Han, X. Pan, Y. Han, S. Song, G. Huang, "FLatten Transformer: Vision Transformer
    using Focused Linear Attention", ICCV 2023, arXiv:2308.00442. Official code:
    LeapLabTHU/FLatten-Transformer, ``models/flatten_swin.py`` ``FocusedLinearAttention``.

    Equations (section 4 of the arXiv version; the labels F1-F4 are the course's, we could not
    check the paper's numbering), per head, with d = C / h and Q = T W^Q, K = T W^K, V = T W^V::

        (F1)  Sim(Q_i, K_j) = φ_p(Q_i) φ_p(K_j)ᵀ,    φ_p(x) = f_p(ReLU(x))
        (F2)  f_p(x) = (‖x‖ / ‖x^{**p}‖) · x^{**p}
        (F3)  O_i = Σ_j Sim(Q_i, K_j) V_j / Σ_j Sim(Q_i, K_j)   (as φ_p(Q_i) (Σ_j φ_p(K_j)ᵀ V_j) / ...)
        (F4)  O = Sim(Q, K) V + DWC(V)

    The heads are concatenated and projected by W^O, as in multi-head attention. f_p keeps each
    feature's norm and sharpens its direction, so the implicit attention of linear attention is
    less flat; the depthwise k × k convolution DWC on V adds a banded N × N term to the implicit
    weights, whose rank is otherwise at most d (the chapter measures both).

    Args:
        channels: C.
        heads: h (must divide C; d = C / h). 8 by default, as the course's MHSA and linear attention
            (the official FLatten-Swin keeps Swin's heads of width 32).
        focusing_factor: p of (F2), a number ≥ 1 (the paper's 3; p = 1 gives plain ReLU linear
            attention).
        kernel_size: k of the DWC, odd (the paper's 5; padding k // 2 keeps H × W), or ``None``: no
            DWC (the ablation "FLatten (no DWC)").
        bias: biases on the projections (``True``, as the official code's ``qkv_bias=True`` and
            ``nn.Linear`` for W^O).
        scale: ``None`` (the paper: no scale) or ``"softplus"`` (the official code: ReLU(Q), ReLU(K)
            divided by ``softplus(s)``, one learnable s per channel, initialised 0; adds C
            parameters).
        norm: ``"head"`` (the paper: f_p acts on each head's d-dimensional feature) or ``"all"``
            (the official code: the norms ‖x‖, ‖x^p‖ run over all C channels, before the split
            into heads).
        key_position: ``None`` (the paper writes none), or ``(H, W)``: the official code's learnable
            positional encoding (zeros at the start, one C-vector per position) added to K before
            the ReLU. It fixes the map size: another H × W raises ``ValueError``, and an export
            must then keep H and W static. Adds H·W·C parameters.
        eps: ε of the normaliser ``φ_p(Q_i) Σ_j φ_p(K_j)ᵀ + ε`` (as linear attention's, 1e-6) and
            of f_p's ``max(‖y^p‖, ε)`` (see :func:`focusing_function`): both matter only when a
            ReLU feature is all zero, where the paper's formulas read 0/0; the output there is 0
            (plus the DWC term) instead of NaN.
        eps_placement: ``"guard"`` (ε on the normaliser's sum only, as above) or ``"official"``
            (the official code's: ReLU(x) + ε on every feature, before the scale and f_p, and
            N·ε on the sum, its ``q·mean_j k_j + ε``); see below for when the two differ.

    Where the official code departs from the paper (and what this module does): the learnable
    scale (option ``scale``), the norms over all channels (option ``norm``), the positional
    encoding on K (option ``key_position``), and where its ε sits (option ``eps_placement``). The
    official code adds 1e-6 to every ReLU feature, ``ReLU(x) + 1e-6``, and writes the normaliser
    with a mean and the state ``Kᵀ V`` scaled by N^-0.5 twice, ``q·mean_j k_j + 1e-6``: the same
    weights as (F3) up to its ε, which is N·1e-6 on the sum q·Σ_j k_j. This module's default
    (``"guard"``) puts ε = 1e-6 on the sum and nowhere else, which only guards the all-zero
    feature. How much the placement matters depends on the head width d, measured (float64,
    N(0, 1) inputs, the module's initialisation, p = 3, ``scale="softplus"``, no DWC, W^O = I;
    tested): with ``norm="all"`` and d = 16 (C = 32, 2 heads, 12 × 12, this part's protocol) or
    d = 32 (C = 96, 3 heads, 56 × 56, FLatten-Swin-T's first stage) no (query, head) row has an
    N·ε above 1 % of q·Σ_j k_j, and the outputs differ by at most 1.2e-4 and 1e-5 (largest
    outputs 1.0 and 0.4);
    with d = 8 (C = 32, 4 heads) 0.8 % of the rows do, and outputs differ by up to 0.34 (largest
    output 1.1); with d = 4 (C = 32, 8 heads) 8 % of the rows, up to 0.55 (largest output 0.8):
    the official ε visibly shrinks the outputs of rows whose q·Σ_j k_j is small. With
    ``norm="head"`` every all-zero ReLU feature differs (one query in 2^d for Gaussian
    projections): 0 here (plus the DWC term), a shrunken average of the values in the official
    code. ``eps_placement="official"`` reproduces the official normaliser (ReLU(x) + ε, and N·ε on
    the sum; tested equal to the re-typed official forward within 1e-6 in float64), for weights
    moved from the official code. The official code reshapes N into a square
    window (``H = W = int(N ** 0.5)``); this module takes any H × W. The commit "fix numerical
    instability" (e205a01, May 2024) rewrote the computation; before it, p > 6 was computed as
    (x / max x)^p, which this module does for every p (see :func:`focusing_function`).

    DWC shared across heads: the paper does not say how the DWC is laid out; the official code
    uses ``Conv2d(d, d, k, groups=d)`` on the values of every head (heads folded into the batch),
    so the h heads share one set of d filters. This module does the same: DWC parameters
    d·k² + d (with the official code's conv bias).

    Numerical care: ReLU, f_p, the sums and the state run in float32 when the input is float16 or
    bfloat16 (x³ overflows float16's 65,504 from x ≈ 40; ``Σ_j φ(K_j)`` over 65,536 positions
    too), and the result is cast back; the DWC runs in the input's dtype.

    Identity at initialisation: W^O (``proj``, weight and bias) starts at zero, so the module
    returns x; ``qkv`` starts Xavier-uniform with zero bias, the DWC with PyTorch's default.
    Parameters: ``4C² + 4C`` (the projections, as MHSA) ``+ d·k² + d`` (the DWC) ``[+ C]``
    (``scale="softplus"``) ``[+ H·W·C]`` (``key_position``); ``4C²`` without bias.

    Shapes: input ``(B, C, H, W)`` → output ``(B, C, H, W)``, any H, W ≥ 1 (unless
    ``key_position``). ``attention(x)`` returns the implicit normalised weights
    ``φ_p(Q_i)φ_p(K_j)ᵀ / (Σ_j φ_p(Q_i)φ_p(K_j)ᵀ + ε)`` (N·ε with ``eps_placement="official"``),
    ``(B, h, H*W, H*W)`` in ``(h w)`` order,
    rows summing to 1 (0 for an all-zero query feature), **without** the DWC term: what forward
    applies to V before adding DWC(V). They pass through ``gate`` (``Gate(RowNormalise(eps),
    kind="attention")``), which forward does not call.
    """

    def __init__(
        self,
        channels: int,
        *,
        heads: int = 8,
        focusing_factor: float = 3,
        kernel_size: int | None = 5,
        bias: bool = True,
        scale: str | None = None,
        norm: str = "head",
        key_position: tuple[int, int] | None = None,
        eps: float = EPS,
        eps_placement: str = "guard",
    ) -> None:
        super().__init__()
        name = type(self).__name__
        self.channels = check_channels(self, channels)
        self.heads = check_positive_int(self, "heads", heads)
        check_divisible(self, "channels", self.channels, "heads", self.heads)
        if not (isinstance(focusing_factor, (int, float)) and not isinstance(focusing_factor, bool)
                and focusing_factor >= 1):
            raise ValueError(f"{name} expected focusing_factor (p) to be a number >= 1, got {focusing_factor!r}")
        if kernel_size is not None:
            check_positive_int(self, "kernel_size", kernel_size)
            if kernel_size % 2 == 0:
                raise ValueError(f"{name} expected an odd kernel_size (padding k // 2 keeps H x W), got {kernel_size}")
        check_choice(self, "bias", bias, (True, False))
        check_choice(self, "scale", scale, (None, "softplus"))
        check_choice(self, "norm", norm, ("head", "all"))
        check_choice(self, "eps_placement", eps_placement, ("guard", "official"))
        if key_position is not None and not (
            isinstance(key_position, (tuple, list)) and len(key_position) == 2
            and all(isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in key_position)
        ):
            raise ValueError(f"{name} expected key_position to be None or (H, W), two ints >= 1, got {key_position!r}")
        if not (isinstance(eps, (int, float)) and not isinstance(eps, bool) and 0 < eps < 1):
            raise ValueError(f"{name} expected eps to be a number in (0, 1), got {eps!r}")
        self.focusing_factor = focusing_factor
        self.kernel_size = kernel_size
        self.bias = bool(bias)
        self.scale = scale
        self.norm = norm
        self.key_position = None if key_position is None else (int(key_position[0]), int(key_position[1]))
        self.eps = float(eps)
        self.eps_placement = eps_placement
        self.head_dim = d = self.channels // self.heads
        self.qkv = nn.Linear(channels, 3 * channels, bias=self.bias)  # [W^Q; W^K; W^V], heads side by side
        self.proj = nn.Linear(channels, channels, bias=self.bias)  # W^O
        # DWC of (F4): one depthwise k x k conv on the d channels of a head, shared by the h heads (official code)
        self.dwc = None if kernel_size is None else nn.Conv2d(d, d, kernel_size, padding=kernel_size // 2, groups=d)
        # official code's options: per-channel scale (softplus(0) at the start), positional encoding of K
        self.scale_param = nn.Parameter(torch.zeros(channels)) if scale == "softplus" else None
        self.pos = (
            nn.Parameter(torch.zeros(self.key_position[0] * self.key_position[1], channels))
            if self.key_position is not None else None
        )
        self.gate = Gate(RowNormalise(self.eps), kind="attention")  # the normaliser of (F3), used by attention(x)
        nn.init.xavier_uniform_(self.qkv.weight)
        nn.init.zeros_(self.proj.weight)  # W^O = 0: the module starts as the identity
        if self.bias:
            nn.init.zeros_(self.qkv.bias)
            nn.init.zeros_(self.proj.bias)

    def _phi(self, t: torch.Tensor) -> torch.Tensor:
        """φ_p of (F1) on projected tokens ``(B, N, C)``: ``(B, h, N, d)`` in float32 for half inputs."""
        t = F.relu(t.to(_accumulator(t.dtype)))  # ReLU(x)
        if self.eps_placement == "official":
            t = t + self.eps  # official code: ReLU(x) + 1e-6, before the scale and f_p
        if self.scale_param is not None:
            t = t / F.softplus(self.scale_param)  # official code: ReLU(x) / softplus(s), per channel
        if self.norm == "all":  # official code: f_p over all C channels, then the head split
            return rearrange(focusing_function(t, self.focusing_factor, eps=self.eps), "b n (h d) -> b h n d",
                             h=self.heads)
        t = rearrange(t, "b n (h d) -> b h n d", h=self.heads)
        return focusing_function(t, self.focusing_factor, eps=self.eps)  # (F2) per head

    def _features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """φ_p(Q), φ_p(K) (float32 for half inputs) and V, each ``(B, h, N, d)``."""
        if self.key_position is not None and tuple(x.shape[2:]) != self.key_position:
            raise ValueError(
                f"{type(self).__name__} was built with key_position={self.key_position} (a learned encoding of "
                f"that map size); got a {x.shape[2]}x{x.shape[3]} map"
            )
        t = rearrange(x, "b c h w -> b (h w) c")  # the tokens T: one per position
        q, k, v = rearrange(self.qkv(t), "b n (three c) -> three b n c", three=3)  # T W^Q, T W^K, T W^V
        if self.pos is not None:
            k = k + self.pos.to(k.dtype)  # official code: positional encoding added to K
        v = rearrange(v, "b n (h d) -> b h n d", h=self.heads)
        return self._phi(q), self._phi(k), v

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        """The implicit weights of every head (without the DWC term), ``(B, h, H*W, H*W)``."""
        check_input(self, x, self.channels)
        q, k, _ = self._features(x)
        sim = q @ k.transpose(-2, -1)  # φ_p(Q_i)φ_p(K_j)ᵀ
        if self.eps_placement == "official":  # the official mean over the N keys: ε on the mean, N·ε on the sum
            sim = sim / k.shape[-2]
        return self.gate(sim).to(x.dtype)  # normalised over j

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(self, x, self.channels)
        q, k, v = self._features(x)
        eps = self.eps * k.shape[-2] if self.eps_placement == "official" else self.eps  # official: N·ε on the sum
        o = kernel_attention(q, k, v, eps=eps)  # (F3), per head: (B, h, N, d), in x's dtype
        if self.dwc is not None:  # (F4): + DWC(V), the heads folded into the batch (one shared conv)
            hh = x.shape[2]
            # the maps as a channels-last view, (b h) y w d in memory, as the official code's
            # reshape(B * heads, H, W, -1).permute(0, 3, 1, 2): the depthwise conv's forward and
            # backward run several times faster on it than on an NCHW copy, and its output comes
            # back as (b h) y w d in memory, so the rearrange below is a view
            maps = rearrange(v, "b h (y w) d -> (b h) y w d", y=hh).permute(0, 3, 1, 2)  # (b h) d y w
            o = o + rearrange(self.dwc(maps), "(b h) d y w -> b h (y w) d", h=self.heads)
        o = self.proj(rearrange(o, "b h n d -> b n (h d)"))  # Concat(heads) W^O
        return x + rearrange(o, "b (h w) c -> b c h w", h=x.shape[2])

    def extra_repr(self) -> str:
        return (
            f"channels={self.channels}, heads={self.heads}, head_dim={self.head_dim}, "
            f"focusing_factor={self.focusing_factor}, kernel_size={self.kernel_size}, bias={self.bias}, "
            f"scale={self.scale!r}, norm={self.norm!r}, key_position={self.key_position}, eps={self.eps}, "
            f"eps_placement={self.eps_placement!r}"
        )
