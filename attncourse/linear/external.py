"""External Attention (Guo et al., TPAMI 2022): attention of every position to S learnable memory
units shared by all samples, in time linear in the number of positions.
Chapter: ``chapters/linear/external.md``."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from .._checks import check_channels, check_choice, check_input, check_positive_int
from .._registry import register
from ..layers import Gate
from .kernel import _accumulator

__all__ = ["ExternalAttention", "DoubleNormalise", "EA_EPS"]

#: The ε of the ℓ1 step of the double normalisation, the official code's ``1e-9``
#: (``attn / (1e-9 + attn.sum(dim=1, keepdim=True))`` in MenghaoGuo/EANet ``model_torch.py``).
EA_EPS = 1e-9


class DoubleNormalise(nn.Module):
    """The double normalisation of External Attention (eq. (c) below), on logits laid out
    ``(..., N, S)`` (positions, memory units): a softmax over the N positions for each memory unit
    (``dim=-2``), then an ℓ1 normalisation over the S units for each position (``dim=-1``)::

        α̃_ij = exp(α_ij) / Σ_k exp(α_kj)        α_ij = α̃_ij / (Σ_k α̃_ik + ε)

    Both steps run in float32 for float16/bfloat16 logits (a softmax over 65,536 positions gives
    values near 1.5e-5, below float16's smallest normal number 6.1e-5; and ε = 1e-9 is 0 in float16),
    and the result is cast back. For a :class:`attncourse.layers.Gate`."""

    def __init__(self, eps: float = EA_EPS) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        t = logits.transpose(-2, -1)  # (..., S, N): a view; contiguous when forward made the logits
        a = F.softmax(t, dim=-1, dtype=_accumulator(logits.dtype))  # α̃: softmax over the N positions
        a = a * (a.sum(dim=-2, keepdim=True) + self.eps).reciprocal()  # α: ℓ1 over the S units (one division per position)
        return a.to(logits.dtype).transpose(-2, -1)  # back to (..., N, S), a view

    def extra_repr(self) -> str:
        return f"eps={self.eps}"


@register("external")
class ExternalAttention(nn.Module):
    r"""External attention block: every position attends to S learnable memory units (M_k, M_v)
    shared by all samples, inside the official block ``ReLU(x + BN(W_2 EA(W_1 x + b_1)))``.

    Paper: M.-H. Guo, Z.-N. Liu, T.-J. Mu, S.-M. Hu, "Beyond Self-attention: External Attention
    using Two Linear Layers for Visual Tasks", IEEE TPAMI (online 2022, in an issue of 2023),
    arXiv:2105.02358. Official code: MenghaoGuo/EANet, ``model_torch.py``, ``External_attention``.

    Equations (section 3 of the paper; its equation numbers could not be checked, so they are
    labelled (a)-(c) here), with the tokens F = rearrange(W_1 x + b_1, "b c h w -> b (h w) c")
    (N × C per image) and the memories M_k, M_v ∈ R^{S×C}::

        (a)  A = (α)_{i,j} = Norm(F M_kᵀ)          A: N × S
        (b)  F_out = A M_v                          F_out: N × C
        (c)  α̃_ij = exp(α_ij) / Σ_k exp(α_kj)      softmax over the N positions (per unit j)
             α_ij = α̃_ij / Σ_k α̃_ik                ℓ1 over the S units (per position i)

    Block (the official code's, around the two memories): 1×1 conv W_1 (C → C, with bias), EA, 1×1 conv W_2 (C → C, no bias), BatchNorm, the residual, ReLU. Cost linear in N:
    ``2NSC`` multiply-adds for the two memory products (two ``Conv1d(k=1)`` in the official code),
    ``2NC²`` for the two 1×1 convolutions.

    Args:
        channels: C (d in the paper).
        memory_units: S, the number of memory units (rows of M_k and M_v): 64, the paper's and
            the official code's ``self.k = 64``.
        eps: ε of the ℓ1 step, the official code's 1e-9 (:data:`~attncourse.linear.external.EA_EPS`); a position whose
            softmax values all round to 0 gets α = 0 instead of 0/0.
        relu: the official ReLU after the residual (``True``). ``False`` drops it.
        zero_init: start BN's γ at 0, so the branch starts at exactly 0 (the course's option; the
            official code starts γ at 1). With ``zero_init=True, relu=False`` the block is the
            identity at initialisation, like Part III's plug-ins.

    Defaults follow the official code where the paper is silent, and so the block is **not** the
    identity at initialisation: BN's γ = 1 makes the branch non-zero, and the final ReLU zeroes
    every negative input. Initialisation (official): W_1, W_2 and M_k ~ N(0, 2/C) (the code's
    ``normal_(0, sqrt(2/n))`` with n = the output channels of ``linear_1``, which overwrites
    ``linear_0``'s init through the shared storage, see below); b_1 PyTorch's default; BN γ = 1,
    β = 0 (PyTorch's BatchNorm2d: momentum 0.1, eps 1e-5, as the official ``BN_MOM = 0.1``).

    M_v = M_k at initialisation, as two independent parameters. The official code assigns
    ``linear_1.weight.data = linear_0.weight.data.permute(1, 0, 2)``: its ``Conv1d`` weights are
    M_k (S, C) and M_vᵀ (C, S), so the line sets M_v = M_k in the paper's notation ("M_v = M_kᵀ"
    in the layout of the weights). It assigns a view: the two parameters
    share storage, so on the CPU an optimizer step writes both gradients into the same memory and
    they stay tied. But ``Module.cuda()`` (which its ``train_torch.py`` calls before building the
    optimizer), ``.double()`` and ``copy.deepcopy`` copy each parameter separately and untie them:
    the official training in effect starts from M_v = M_k and trains both freely. That is what
    this module does, without the storage trick (checked in the chapter).

    Parameters: ``2C² + 2SC + 3C`` (W_1 with bias C² + C, M_k and M_v 2SC, W_2 C², BN γ and β 2C).
    C of them do nothing: the bias b_1 adds ``b_1 · M_k[j]`` to every logit of memory unit j, the
    same amount at all N positions, and the first normalisation of (c) is a softmax over the
    positions of each unit, which a constant shift along its axis does not change; F enters
    nothing but the logits. So b_1 changes no output and gets a zero gradient (tested; up to
    rounding). It is kept because the official ``conv1`` has it (``nn.Conv2d(c, c, 1)``), so
    that the official weights load one to one.

    Numerical care: the double normalisation runs in float32 for float16/bfloat16 inputs
    (:class:`DoubleNormalise`); the result, a convex combination of M_v's rows, is cast back.

    Shapes: input ``(B, C, H, W)`` → output ``(B, C, H, W)``, any H, W ≥ 1. ``attention(x)``
    returns A, ``(B, 1, H*W, S)`` with positions in ``(h w)`` order, each row summing to 1 (up to
    ε): the weights forward applies, which pass through ``gate``
    (``Gate(DoubleNormalise(eps), kind="attention")``). The multi-head form (the paper's MHEA,
    ``multi_head_attention_torch.py`` in the official repository, for the EAMLP transformer) is
    not implemented here.
    """

    def __init__(
        self,
        channels: int,
        *,
        memory_units: int = 64,
        eps: float = EA_EPS,
        relu: bool = True,
        zero_init: bool = False,
    ) -> None:
        super().__init__()
        self.channels = check_channels(self, channels)
        self.memory_units = check_positive_int(self, "memory_units", memory_units)
        if not (isinstance(eps, (int, float)) and not isinstance(eps, bool) and eps > 0):
            raise ValueError(f"{type(self).__name__} expected eps to be a number > 0, got {eps!r}")
        check_choice(self, "relu", relu, (True, False))
        check_choice(self, "zero_init", zero_init, (True, False))
        self.eps, self.relu, self.zero_init = float(eps), bool(relu), bool(zero_init)
        c, s = self.channels, self.memory_units
        self.conv1 = nn.Conv2d(c, c, 1)  # W_1, b_1: the first 1×1 convolution
        self.m_k = nn.Parameter(torch.empty(s, c))  # M_k ∈ R^{S×C}
        self.m_v = nn.Parameter(torch.empty(s, c))  # M_v ∈ R^{S×C}
        self.gate = Gate(DoubleNormalise(self.eps), kind="attention")  # Norm of (a): eq. (c)
        self.conv2 = nn.Conv2d(c, c, 1, bias=False)  # W_2
        self.bn = nn.BatchNorm2d(c)
        std = math.sqrt(2.0 / c)  # the official normal_(0, sqrt(2/n)), n = output channels
        nn.init.normal_(self.conv1.weight, 0.0, std)
        nn.init.normal_(self.conv2.weight, 0.0, std)
        nn.init.normal_(self.m_k, 0.0, std)
        with torch.no_grad():
            self.m_v.copy_(self.m_k)  # M_v = M_k (the official tie, in the paper's layout): a copy, not tied
        nn.init.constant_(self.bn.weight, 0.0 if self.zero_init else 1.0)
        nn.init.zeros_(self.bn.bias)

    def _attention(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A of eq. (a) as ``(B, 1, N, S)`` and the tokens' map ``W_1 x + b_1``."""
        f = self.conv1(x)  # W_1 x + b_1: (B, C, H, W)
        m_k = self.m_k.expand(f.shape[0], -1, -1)  # (B, S, C): one M_k for every sample, no copy
        logits = torch.bmm(m_k, rearrange(f, "b c h w -> b c (h w)"))  # (F M_kᵀ)ᵀ: (B, S, N)
        a = self.gate(rearrange(logits, "b s n -> b 1 n s"))  # A = Norm(F M_kᵀ), eqs. (a), (c): (B, 1, N, S)
        return a, f

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        """A, ``(B, 1, H*W, S)``: each position's weights over the S memory units (rows sum to 1)."""
        check_input(self, x, self.channels)
        return self._attention(x)[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(self, x, self.channels)
        a, f = self._attention(x)
        m_v = self.m_v.t().expand(x.shape[0], -1, -1)  # (B, C, S)
        out = torch.bmm(m_v, rearrange(a, "b 1 n s -> b s n"))  # F_out = A M_v, eq. (b), as (B, C, N)
        out = self.bn(self.conv2(out.view_as(f)))  # BN(W_2 F_out)
        out = x + out  # the residual
        # ReLU as a threshold at 0: the same values and backward kernel as F.relu, but its backward
        # keeps its input, not its output, so an in-place op after the module (TinyNet's
        # ReLU(inplace=True)) cannot invalidate it
        return F.threshold(out, 0.0, 0.0) if self.relu else out

    def extra_repr(self) -> str:
        return (
            f"channels={self.channels}, memory_units={self.memory_units}, eps={self.eps}, "
            f"relu={self.relu}, zero_init={self.zero_init}"
        )
