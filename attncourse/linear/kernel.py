"""Kernelised attention as a function: the computation that Part IV's modules share.

``kernel_attention(phi_q, phi_k, v)`` is softmax attention with the exponential kernel replaced by
a dot product of feature maps, ``sim(q, k) = φ(q)ᵀ φ(k)``, computed in the order that costs
O(N d²) instead of O(N² d) (Katharopoulos et al., ICML 2020, arXiv:2006.16236, eqs. (4)-(6) as
numbered in the chapter; not checked against the ICML PDF)::

    V'_i = φ(Q_i)ᵀ (Σ_j φ(K_j) V_jᵀ) / (φ(Q_i)ᵀ Σ_j φ(K_j) + ε)

Chapters: ``chapters/linear/linear.md`` (derivation), ``chapters/linear/cost.md`` (cost).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["elu_feature_map", "kernel_attention", "kernel_attention_heads", "kernel_weights", "RowNormalise", "EPS"]

#: The ε added to the normaliser φ(Q_i)ᵀ Σ_j φ(K_j), fast-transformers' value (``eps=1e-6`` in
#: ``fast_transformers/attention/linear_attention.py``). It matters only when a query's features
#: are (nearly) orthogonal to every key's, e.g. an all-zero ReLU feature: then the output is
#: 0 / ε = 0 instead of 0 / 0 = NaN.
EPS = 1e-6


def elu_feature_map(x: torch.Tensor) -> torch.Tensor:
    """φ(x) = elu(x) + 1 (Katharopoulos et al. 2020, section 3.2.1): positive, so every similarity
    φ(q)ᵀφ(k) is ≥ 0 and the normalised weights are a convex combination, like softmax's."""
    return F.elu(x) + 1


def _accumulator(dtype: torch.dtype) -> torch.dtype:
    """float32 for half-precision inputs (float16 overflows at 65,504: Σ_j φ(K_j) over 65,536
    positions does; bfloat16 keeps 8 bits of mantissa, so a long sum stops growing); float32 and
    float64 inputs keep their own precision."""
    return torch.promote_types(dtype, torch.float32)


def kernel_attention(
    phi_q: torch.Tensor, phi_k: torch.Tensor, v: torch.Tensor, *, eps: float = EPS, causal: bool = False
) -> torch.Tensor:
    r"""Normalised kernel attention in linear time, ``(..., N, d), (..., M, d), (..., M, e) -> (..., N, e)``.

    Non-causal (images: every query sees every key)::

        S = Σ_j φ(K_j) V_jᵀ   (d × e)        Z = Σ_j φ(K_j)   (d)
        V'_i = φ(Q_i)ᵀ S / (φ(Q_i)ᵀ Z + ε)

    Causal (sequences, N = M: query i sees keys j ≤ i), the running sums of eqs. (10)-(12)::

        S_i = S_{i-1} + φ(K_i) V_iᵀ,  Z_i = Z_{i-1} + φ(K_i),  V'_i = φ(Q_i)ᵀ S_i / (φ(Q_i)ᵀ Z_i + ε)

    computed here with a cumulative sum (memory O(N d e); a teaching form, not a fast kernel).

    Args:
        phi_q, phi_k: the feature-mapped queries and keys (any leading dimensions, e.g. B, heads).
        v: the values.
        eps: ε added to the normaliser (:data:`~attncourse.linear.kernel.EPS`, fast-transformers' 1e-6); must be > 0 for
            features that can be all zero.
        causal: the running-sum form (needs N = M).

    Precision: in float16/bfloat16 the sums, the state S and the division run in float32 and the
    result is cast back to the input's dtype (values are convex combinations of V, so they fit).
    """
    dtype = v.dtype
    acc = _accumulator(dtype)
    q, k, v = phi_q.to(acc), phi_k.to(acc), v.to(acc)
    if not causal:
        s = k.transpose(-2, -1) @ v  # S = Σ_j φ(K_j) V_jᵀ: (..., d, e)
        z = k.sum(dim=-2, keepdim=True).transpose(-2, -1)  # Z = Σ_j φ(K_j): (..., d, 1)
        out = (q @ s) * (q @ z + eps).reciprocal()  # φ(Q_i)ᵀ S / (φ(Q_i)ᵀ Z + ε): N divisions, not N·e
    else:
        s = torch.einsum("...nd,...ne->...nde", k, v).cumsum(dim=-3)  # S_i for every i: (..., N, d, e)
        z = k.cumsum(dim=-2)  # Z_i: (..., N, d)
        num = torch.einsum("...nd,...nde->...ne", q, s)
        out = num / ((q * z).sum(dim=-1, keepdim=True) + eps)
    return out.to(dtype)


def kernel_attention_heads(
    phi_q: torch.Tensor, phi_k: torch.Tensor, v: torch.Tensor, *, eps: float = EPS
) -> torch.Tensor:
    """:func:`kernel_attention` (non-causal) on the layout that multi-head projections produce,
    ``(B, N, h, d), (B, M, h, d), (B, M, h, e) -> (B, N, h, e)``: positions before heads, as
    fast-transformers lays them out. The same numbers as
    ``kernel_attention(*(rearrange(t, "b n h d -> b h n d") for t in (phi_q, phi_k, v)))`` moved
    back, without the two copies that moving the heads in front of the positions and back costs
    (the output goes straight into W^O in this layout); tested equal.
    """
    dtype = v.dtype
    acc = _accumulator(dtype)
    q, k, v = phi_q.to(acc), phi_k.to(acc), v.to(acc)
    s = torch.einsum("bmhd,bmhe->bhed", k, v)  # S = Σ_j φ(K_j) V_jᵀ per head, stored as Sᵀ (e × d)
    z = 1 / (torch.einsum("bnhd,bhd->bnh", q, k.sum(dim=1)) + eps)  # 1 / (φ(Q_i)ᵀ Z + ε), Z = Σ_j φ(K_j)
    # φ(Q_i)ᵀ S / (φ(Q_i)ᵀ Z + ε); Sᵀ and the order of the operands are fast-transformers', which
    # lets einsum pick the faster products (measured: 4 % of the module's time at 8 x 256 x 28 x 28)
    return torch.einsum("bnhd,bhed,bnh->bnhe", q, s, z).to(dtype)


def kernel_weights(phi_q: torch.Tensor, phi_k: torch.Tensor, *, eps: float = EPS) -> torch.Tensor:
    """The implicit ``(..., N, M)`` weights ``φ(Q_i)ᵀφ(K_j) / (φ(Q_i)ᵀ Σ_j φ(K_j) + ε)`` that
    :func:`kernel_attention` applies without forming them (for pictures and checks: O(N M) memory).
    ``kernel_weights(q, k) @ v`` equals ``kernel_attention(q, k, v)``."""
    acc = _accumulator(phi_q.dtype)
    sim = phi_q.to(acc) @ phi_k.to(acc).transpose(-2, -1)  # φ(Q_i)ᵀ φ(K_j)
    return (sim / (sim.sum(dim=-1, keepdim=True) + eps)).to(phi_q.dtype)


class RowNormalise(nn.Module):
    """Similarities to weights: ``sim / (Σ_j sim_ij + ε)`` along the last axis (the normaliser of
    kernel attention, in the place where softmax attention has its softmax). For a
    :class:`attncourse.layers.Gate`, so that ``capture_gates`` records the implicit weights."""

    def __init__(self, eps: float = EPS) -> None:
        super().__init__()
        if not (isinstance(eps, (int, float)) and not isinstance(eps, bool) and eps > 0):
            raise ValueError(f"RowNormalise expected eps to be a number > 0, got {eps!r}")
        self.eps = eps

    def forward(self, sim: torch.Tensor) -> torch.Tensor:
        if not isinstance(sim, torch.Tensor) or sim.dim() < 2 or not sim.is_floating_point():
            got = f"a {sim.dim()}-D {sim.dtype} tensor" if isinstance(sim, torch.Tensor) else type(sim).__name__
            raise ValueError(f"RowNormalise expected floating-point similarities (..., queries, keys), got {got}")
        return sim / (sim.sum(dim=-1, keepdim=True) + self.eps)

    def extra_repr(self) -> str:
        return f"eps={self.eps}"
