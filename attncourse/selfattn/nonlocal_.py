"""The non-local block (Wang, Girshick, Gupta, He, CVPR 2018). Chapter: ``chapters/selfattn/nonlocal.md``.

The file is ``nonlocal_.py`` because ``nonlocal`` is a Python keyword.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from .._checks import check_channels, check_choice, check_input, check_norm_batch, check_positive_int
from .._registry import register
from ..layers import Gate

__all__ = ["NonLocalBlock", "HalfMaxPool", "PAIRWISE"]

#: The four pairwise functions f of the paper's section 3.2, eqs. (2)-(5).
PAIRWISE = ("embedded_gaussian", "gaussian", "dot_product", "concatenation")
#: The two forms normalised by C(x) = Σ_j f (a softmax over the keys j).
SOFTMAX_FORMS = ("embedded_gaussian", "gaussian")
#: How the weight layers start: the official code's normal(std 0.01), Xavier-uniform for θ, φ, g,
#: or the paper's He et al. (Kaiming normal) initialisation (§4.1).
INITS = ("official", "xavier", "he")


class OverKeys(nn.Module):
    """C(x) = N for the dot product (eq. 4) and the concatenation (eq. 5): ``f / N_keys``.

    With ``relu=True`` first f = ReLU(logits) (the concatenation's f). The division by the
    number of keys is the whole normalisation: the rows do not sum to 1.
    """

    def __init__(self, *, relu: bool = False) -> None:
        super().__init__()
        self.relu = bool(relu)

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        f = F.relu(logits) if self.relu else logits
        return f / logits.shape[-1]  # 1/C(x) with C(x) = N, the number of positions j summed over

    def extra_repr(self) -> str:
        return f"relu={self.relu}"


class HalfMaxPool(nn.Module):
    """2×2 max-pool with stride 2 that keeps a last odd row or column (``ceil_mode``), for any H, W ≥ 1.

    Written as a pad of one row and one column of -inf, then a plain 2×2 max-pool: the same values
    as ``nn.MaxPool2d(2, 2, ceil_mode=True)`` (a -inf is never a window's maximum, every window
    holds a real value), without ``ceil_mode``'s size rule, which ``torch.export`` cannot prove
    for symbolic sizes. ⌈H/2⌉ × ⌈W/2⌉ positions come out.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.max_pool2d(F.pad(x, (0, 1, 0, 1), value=float("-inf")), 2, 2)


@register("nonlocal")
class NonLocalBlock(nn.Module):
    r"""The non-local block: every position adds a weighted sum of (projected) features from all positions.

    Paper: X. Wang, R. Girshick, A. Gupta, K. He, "Non-local Neural Networks", CVPR 2018,
    arXiv:1711.07971. Official code (Caffe2): github.com/facebookresearch/video-nonlocal-net,
    ``lib/models/nonlocal_helper.py`` (defaults in ``lib/core/config.py``).

    Equations (numbered as we read them in arXiv:1711.07971v3, the CVPR version; the copies we
    could consult did not show the numbers, so the numbering is not re-checked), x_i ∈ R^C the
    feature at position i, j running over all positions (or, with sub-sampling, over the
    max-pooled positions x̂_j)::

        (1) y_i = 1/C(x) Σ_j f(x_i, x_j) g(x_j),          g(x_j) = W_g x_j
        (2) Gaussian:           f = exp(x_iᵀ x_j),                     C(x) = Σ_j f
        (3) embedded Gaussian:  f = exp(θ(x_i)ᵀ φ(x_j)),               C(x) = Σ_j f
            θ(x_i) = W_θ x_i, φ(x_j) = W_φ x_j, so y = softmax(xᵀ W_θᵀ W_φ x) g(x): self-attention
        (4) dot product:        f = θ(x_i)ᵀ φ(x_j),                    C(x) = N
        (5) concatenation:      f = ReLU(w_fᵀ [θ(x_i), φ(x_j)]),       C(x) = N
        (6) z_i = W_z y_i + x_i

    W_θ, W_φ, W_g are 1×1 convolutions from C to C/2 channels (with biases, as the official
    code), W_z a 1×1 convolution back to C, each written as an ``nn.Linear`` on the tokens
    (the same map at every position; a weight (d, C) where a Conv2d holds (d, C, 1, 1)): one
    contiguous copy of the tokens feeds the projections, whose outputs are then ready for
    ``scaled_dot_product_attention`` without further copies. W_z is followed by a batch norm
    whose weight starts at 0 (the official ``BN_INIT_GAMMA = 0``): the branch starts at exactly
    0, so the block starts as the identity (z = x) in training and in eval mode. N is the number of positions summed over
    (H W, or the number of pooled positions with sub-sampling, as the official code divides).

    The softmax forms (2), (3) run through ``F.scaled_dot_product_attention`` (it never builds
    the N × N weights); the ``gate`` (a ``Gate(nn.Softmax(dim=-1))``, or ``OverKeys`` for (4),
    (5)) is then used by :meth:`attention`, which returns exactly the weights forward applies.
    The forms (4), (5) pass their weights through the gate in forward.

    Args:
        channels: C.
        pairwise: f: ``"embedded_gaussian"`` (3, the default, as the paper's experiments),
            ``"gaussian"`` (2: no θ, φ; f compares the raw features), ``"dot_product"`` (4) or
            ``"concatenation"`` (5; w_f ∈ R^{2d} without bias, as the paper writes it).
        reduction: the inner width is ``channels // reduction`` (the paper's C/2: 2).
        subsample: the paper's sub-sampling trick, y_i = 1/C(x̂) Σ_j f(x_i, x̂_j) g(x̂_j): a 2×2
            max-pool with stride 2 gives the keys and values 4× fewer positions. As the official
            code, the pool acts on x before φ and g (the paper's text puts it after φ and g; for
            1×1 convolutions the two differ). Odd sizes: the pool keeps a last odd row or
            column on its own (as ``ceil_mode``: ``HalfMaxPool``), so N_keys = ⌈H/2⌉·⌈W/2⌉ and
            a 1×1 map keeps its one position. On even sizes (the official code's 14×14 and
            28×28 maps) this and the official pool agree. ``torch.export`` with sub-sampling
            and dynamic H, W needs ``Dim(min=3)`` for them: it cannot prove that a pooled size
            of 1 is safe (the default, without sub-sampling, exports for any H, W ≥ 1).
        scale: multiply the logits by d^-1/2 before the softmax, d the length of the compared
            vectors (C/2 for the embedded Gaussian, C for the Gaussian): the official code's
            ``USE_SCALE = True`` (``dim_inner ** -0.5``), not in the paper's eq. (3). Only for
            the softmax forms; eqs. (4), (5) have no softmax to temper. Default ``False``.
        init: how the weight layers start (biases 0 and the batch norm's weight 0 with every
            choice, so the block is the identity at initialisation with each).
            ``"official"`` (default): θ, φ, g, W_z (and w_f) normal with std 0.01, as the official
            code. ``"xavier"``: θ, φ, g Xavier-uniform, as ``torch.nn.MultiheadAttention``'s
            in-projection (the course's option); W_z, w_f as the official code. ``"he"``: the
            paper's initialisation (§4.1: the block's weight layers with He et al.'s method, its
            reference [20]): θ, φ, g, W_z and w_f Kaiming normal, std √(2 / fan_in) (fan_in = C
            for θ, φ, g; C/2 for W_z; 2·C/2 for w_f; the paper does not say fan_in or fan_out,
            we take PyTorch's default, He et al.'s forward form). How sharp the first weights
            are: on unit-variance input a logit θ(x_i)ᵀφ(x_j) has variance d (C σ_w²)², σ_w² the
            variance of one weight: about 0 with std 0.01 (the weights start uniform), 16d/9 with
            ``"xavier"`` and 4d with ``"he"`` (d = C/2), which grows with the width, so these two
            start nearly one-hot unless ``scale=True`` divides the variance by d. Measured on a
            fresh block at C = 64 on 16 × 16 unit-variance input (mean row entropy, uniform
            ln 256 = 5.55 nats): official 5.54, Xavier 0.84, He 0.50, Xavier with ``scale=True``
            4.66. For logits of a variance of order 1 at the start (16/9), as in multi-head attention, use
            ``init="xavier"`` with ``scale=True`` (the more so at 64 channels and more); that pair
            is not among the stored runs. The part's stored runs use the 32-channel block without
            the scale (``experiments.protocol("selfattn")``: ``{}``, ``{"scale": True}``,
            ``{"init": "xavier"}``, ``{"init": "he"}``), where, on 12 × 12 unit-variance input, the
            Xavier and He rows start at 1.35 and 0.76 nats of ln 144 = 4.97. Their results (five seeds,
            ``experiments.load("selfattn")``; final test accuracy, seeds 0-4): official 0.489,
            0.707, 0.482, 0.951, 0.907; Xavier 0.488, 0.946, 0.901, 0.937, 0.908; He 0.788, 0.883,
            0.928, 0.942, 0.931. Seeds above 0.9: two, four and three of five; only the He start
            has no seed at chance (standard deviations 0.222, 0.195, 0.064). Five seeds do not
            settle which start is better.

    Shapes: input ``(B, C, H, W)`` → output ``(B, C, H, W)``, any H, W ≥ 1.
    ``attention(x)``: ``(B, 1, H*W, N_keys)``, queries in ``(h w)`` order, N_keys = H W, or
    ⌈H/2⌉·⌈W/2⌉ with sub-sampling (keys in ``(h w)`` order of the pooled map).

    Parameters (d = C // reduction): embedded Gaussian and dot product ``3(C d + d) + (d C + C)
    + 2C`` (= 2C² + 4.5C at d = C/2); Gaussian ``(C d + d) + (d C + C) + 2C`` (no θ, φ);
    concatenation adds w_f's ``2d``.

    A bias the softmax cancels: in the embedded Gaussian (3), φ's bias b_φ adds θ(x_i)ᵀb_φ to
    every logit of row i, the same amount for every key j, and a softmax row does not change
    when all its logits are shifted by one amount. So b_φ (d of the parameters counted above)
    changes no output and its gradient is zero: exactly in exact arithmetic, rounding noise in
    floating point (which Adam, dividing each step by the gradient's own size, still turns into
    steps: in training b_φ drifts from 0 without changing anything). It is kept because the
    official code's φ convolution has it (weights copy one to one). In the dot product (4)
    and the concatenation (5), with no softmax, b_φ does change the output.

    Differences from the paper and the official code: the official code is a 3-D (space-time)
    block; this is its 2-D form (T = 1), as the paper's COCO experiments use it. Weights are
    initialised as the official code by default (normal, std 0.01; biases 0), which departs
    from the paper's He initialisation (``init="he"`` gives the paper's); the batch norm keeps
    PyTorch's eps 1e-5 and momentum 0.1 (Caffe2's momentum 0.9 is the same update). In
    training mode the batch norm needs more than one value per channel: batch size × H × W = 1
    is refused with a ValueError.
    """

    def __init__(
        self,
        channels: int,
        *,
        pairwise: str = "embedded_gaussian",
        reduction: int = 2,
        subsample: bool = False,
        scale: bool = False,
        init: str = "official",
    ) -> None:
        super().__init__()
        self.channels = check_channels(self, channels)
        check_choice(self, "pairwise", pairwise, PAIRWISE)
        check_choice(self, "init", init, INITS)
        self.init = init
        self.reduction = check_positive_int(self, "reduction", reduction)
        check_choice(self, "subsample", subsample, (True, False))
        check_choice(self, "scale", scale, (True, False))
        self.inner = channels // self.reduction
        if self.inner < 1:
            raise ValueError(
                f"NonLocalBlock expected reduction <= channels so that the inner width channels // reduction "
                f"is at least 1, got channels={channels}, reduction={reduction}"
            )
        if scale and pairwise not in SOFTMAX_FORMS:
            raise ValueError(
                f"NonLocalBlock: scale=True (the official code's d^-1/2 before the softmax) applies to the softmax "
                f"forms {list(SOFTMAX_FORMS)}, got pairwise={pairwise!r}"
            )
        self.pairwise = pairwise
        self.subsample = bool(subsample)
        self.use_scale = bool(scale)
        c, d = self.channels, self.inner
        embedded = pairwise != "gaussian"
        # The 1×1 convolutions of the paper act on each position's vector: nn.Linear on tokens.
        self.theta = nn.Linear(c, d) if embedded else None  # W_θ
        self.phi = nn.Linear(c, d) if embedded else None  # W_φ
        self.g = nn.Linear(c, d)  # W_g
        # w_f = [w_θ; w_φ] ∈ R^{2d} of eq. (5), no bias (the paper writes none)
        self.w_f = nn.Parameter(torch.empty(2 * d)) if pairwise == "concatenation" else None
        self.pool = HalfMaxPool() if self.subsample else nn.Identity()  # x -> x̂
        if pairwise in SOFTMAX_FORMS:
            self.gate = Gate(nn.Softmax(dim=-1), kind="attention")  # f / Σ_j f
        else:
            self.gate = Gate(OverKeys(relu=pairwise == "concatenation"), kind="attention")  # f / N
        self.w_z = nn.Linear(d, c)  # W_z
        self.bn = nn.BatchNorm2d(c)
        #: The factor on the logits, d^-1/2 with scale=True, else 1 (the paper).
        self.logit_scale = (d if embedded else c) ** -0.5 if self.use_scale else 1.0
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The official initialisation: convolutions (and w_f) normal with std 0.01, biases 0; BN weight 0.
        With ``init="xavier"``, θ, φ, g are Xavier-uniform instead; with ``init="he"`` (the paper's),
        θ, φ, g, W_z and w_f are Kaiming normal (fan_in, gain √2)."""
        for proj in (self.theta, self.phi, self.g, self.w_z):
            if proj is not None:
                if self.init == "xavier" and proj is not self.w_z:
                    nn.init.xavier_uniform_(proj.weight)
                elif self.init == "he":
                    nn.init.kaiming_normal_(proj.weight, nonlinearity="relu")  # std √(2 / fan_in)
                else:
                    nn.init.normal_(proj.weight, std=0.01)
                nn.init.zeros_(proj.bias)
        if self.w_f is not None:
            if self.init == "he":  # w_f as a (1, 2d) weight: fan_in 2d
                nn.init.normal_(self.w_f, std=(2 / self.w_f.numel()) ** 0.5)
            else:
                nn.init.normal_(self.w_f, std=0.01)
        nn.init.zeros_(self.bn.weight)  # the block starts as the identity
        nn.init.zeros_(self.bn.bias)

    def _tokens(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Queries θ(x_i) (B, N, ·), keys φ(x̂_j) (B, M, ·) and values g(x̂_j) (B, M, d).

        The tokens are made contiguous once, before the projections: the projections' outputs
        then are too, which ``scaled_dot_product_attention`` needs for its fused kernel.
        """
        t = rearrange(x, "b c h w -> b (h w) c").contiguous()  # x_i, i in (h w) order
        ts = rearrange(self.pool(x), "b c h w -> b (h w) c").contiguous() if self.subsample else t  # x̂_j
        if self.theta is None:  # Gaussian (2): f compares x_i and x̂_j themselves
            return t, ts, self.g(ts)
        return self.theta(t), self.phi(ts), self.g(ts)  # θ(x_i), φ(x̂_j), g(x̂_j)

    def _logits(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """(B, N, M): θ(x_i)ᵀφ(x̂_j) (times the scale), or w_fᵀ[θ(x_i), φ(x̂_j)] for (5)."""
        if self.w_f is not None:  # (5): w_fᵀ[θ_i; φ_j] = w_θᵀθ_i + w_φᵀφ_j, broadcast over (i, j)
            w_theta, w_phi = self.w_f[: self.inner], self.w_f[self.inner :]
            return q @ rearrange(w_theta, "d -> d 1") + rearrange(k @ rearrange(w_phi, "d -> d 1"), "b m 1 -> b 1 m")
        return (q @ k.transpose(1, 2)) * self.logit_scale  # (2), (3), (4): the dot products

    def _check(self, x: torch.Tensor) -> None:
        check_input(self, x, self.channels)
        if self.training:
            check_norm_batch(self, x, "the batch norm after W_z")

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        """The weights f(x_i, x̂_j) / C(x) that forward applies: ``(B, 1, H*W, N_keys)``, queries in (h w) order.

        Rows sum to 1 for the softmax forms (2), (3); for (4), (5) they are f / N.
        """
        self._check(x)
        q, k, _ = self._tokens(x)
        return rearrange(self.gate(self._logits(q, k)), "b n m -> b 1 n m")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x)
        q, k, v = self._tokens(x)
        if self.pairwise in SOFTMAX_FORMS:  # (1) with (2)/(3): softmax(θφᵀ) g, fused
            y = F.scaled_dot_product_attention(q.unsqueeze(1), k.unsqueeze(1), v.unsqueeze(1), scale=self.logit_scale)
            y = y.squeeze(1)
        else:  # (1) with (4)/(5): (f / N) g
            y = self.gate(self._logits(q, k)) @ v
        wy = rearrange(self.w_z(y), "b (h w) c -> b c h w", h=x.shape[2])  # W_z y_i, back on the grid
        # laid out (B, C, H, W) in memory, as x and the gradient that comes back: a batch norm
        # whose input is a channels-last view but whose gradient is NCHW takes a slow backward
        wy = wy.contiguous()
        return x + self.bn(wy)  # (6) z = W_z y + x, W_z followed by BN (weight 0 at start)

    def extra_repr(self) -> str:
        return (
            f"channels={self.channels}, pairwise={self.pairwise!r}, reduction={self.reduction}, inner={self.inner}, "
            f"subsample={self.subsample}, scale={self.use_scale}, init={self.init!r}"
        )
