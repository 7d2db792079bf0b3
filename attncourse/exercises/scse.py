"""Checkers for the exercises of the scSE chapter (concurrent spatial and channel SE).

Above each checker, a comment lists the mistakes a learner typically makes on that exercise;
each one gets its own message (``tests/test_checkers_hybrid.py`` tries every one of them).
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from ..hybrid.scse import SpatialSE
from . import Feedback, check_number, compare_tensors, failed, match_mistake, passed, run_answer

__all__ = ["check_scse_parameters", "check_sse_function", "check_max_out_value"]


def _scse_params(c: int, r: int) -> int:
    h = c // r
    return 2 * c * h + h + c + c + 1


# Exercise 1, SCSE(256) with the paper's r = 2.
# Typical mistakes:
#   - cSE alone (the sSE branch forgotten)
#   - the sSE convolution's bias forgotten
#   - the biases of W1 and W2 forgotten / every bias forgotten
#   - SE's usual r = 16 instead of scSE's r = 2
#   - no reduction at all (W1 of size C × C)
#   - a parameter-carrying aggregation or a second 1×1 conv added
def check_scse_parameters(answer: Any) -> Feedback:
    """Exercise 1: parameters of scSE at C = 256 with the paper's r = 2."""
    c, r = 256, 2
    h = c // r
    return check_number(
        answer,
        _scse_params(c, r),
        what="Parameters of scSE at C = 256, r = 2",
        hints={
            2 * c * h + h + c: "That is cSE alone: add the sSE branch, a 1×1 conv with C weights and 1 bias.",
            2 * c * h + h + c + c: "The sSE 1×1 convolution has a bias too (+1).",
            2 * c * h + c: "No biases at all: W1 has C/r, W2 has C and the sSE convolution 1 (official code: all three).",
            2 * c * h + c + 1: "You counted sSE but not the biases of W1 and W2 (C/r + C).",
            2 * c * (c // 16) + c // 16 + c + c + 1: "scSE uses r = 2, not SE's 16.",
            2 * c * c + c + c + c + 1: "W1 is (C/r) x C: the reduction divides the hidden width by r = 2.",
            _scse_params(c, r) + c + 1: "The max-out or sum adds no parameters, and sSE has one 1×1 conv, not two.",
        },
    )


# Exercise 2, sse_function(u, w_sq, b_sq) = Û_sSE of eqs. (3)-(4).
# Typical mistakes:
#   - the bias b_sq forgotten / added after the sigmoid
#   - a mean over channels instead of the learned 1×1 convolution
#   - the wrong axis squeezed: the positions (cSE's squeeze) instead of the channels
#   - the weighted channels not summed (a gate per element, σ(w_k u_k + b))
#   - the gate returned (broadcast, or with its (B, 1, H, W) shape) instead of u rescaled by it
#   - the sigmoid forgotten / a softmax over positions instead of the sigmoid
def check_sse_function(fn: Callable[..., Any]) -> Feedback:
    """Exercise 2: a functional sSE ``fn(u, w_sq, b_sq)`` that equals :class:`SpatialSE`.

    ``u`` is ``(B, C, H, W)``, ``w_sq`` is ``(C,)`` and ``b_sq`` is a 0-d tensor.
    """
    what = "Your sse_function"
    g = torch.Generator().manual_seed(5)
    m = SpatialSE(6).double()
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64))
    w, b = m.squeeze.weight[0, :, 0, 0].detach(), m.squeeze.bias[0].detach()
    for shape in [(2, 6, 5, 7), (1, 6, 3, 2)]:
        u = torch.randn(shape, generator=g, dtype=torch.float64)
        got, fb = run_answer(fn, u, w, b, what=what)
        if fb is not None:
            return fb
        with torch.no_grad():
            expected = m(u)
        if isinstance(got, torch.Tensor) and got.shape == expected.shape:
            got = got.detach().to(torch.float64)
            q = torch.einsum("bchw,c->bhw", u, w)[:, None]
            per_channel = torch.einsum("bchw,c->bc", u, w)[:, :, None, None] / (shape[2] * shape[3])
            known = {
                "the bias b_sq of the 1×1 convolution is missing: q = W_sq ⋆ U + b": u * torch.sigmoid(q),
                "the bias b_sq is added after the sigmoid; it belongs inside, q = W_sq ⋆ U + b": u * (torch.sigmoid(q) + b),
                "you averaged over channels; sSE's squeeze is a learned 1×1 conv (weights w_sq), not a mean":
                    u * torch.sigmoid(u.mean(1, keepdim=True)),
                "you squeezed the positions (h w), which is cSE's squeeze; sSE squeezes the channels, "
                "one value q_{i,j} per position": u * torch.sigmoid(per_channel + b),
                "the weighted channels are not summed: q_{i,j} = Σ_k w_k u_k(i, j) + b is one number per position, "
                "shared by all channels": u * torch.sigmoid(u * w[None, :, None, None] + b),
                "you returned the gate σ(q) broadcast to u's shape; multiply it with u": torch.sigmoid(q + b).expand_as(u),
                "the sigmoid σ is missing, so the weights are not in (0, 1)": u * (q + b),
                "sSE gates each position independently with a sigmoid, not a softmax over positions":
                    u * torch.softmax((q + b).flatten(2), -1).view_as(q),
            }
            fb = match_mistake(got, known, what=what, end=".")
            if fb is not None:
                return fb
        if isinstance(got, torch.Tensor) and got.shape == (shape[0], 1, shape[2], shape[3]):
            return failed(f"{what}: the shape is {tuple(got.shape)}, the gate's shape; return u rescaled by it, {tuple(expected.shape)}.")
        bad = compare_tensors(got, expected, what=what)
        if bad is not None:
            return bad
    return passed(f"{what} equals SpatialSE on random weights and inputs.")


# Exercise 3, the max-out output at one element with u = -2, σ(ẑ_c) = 0.2, σ(q) = 0.9.
# Typical mistakes:
#   - the larger gate times u (-1.8): comparing the gates instead of the features
#   - a gate returned instead of a feature (0.9 or 0.2)
#   - the MICCAI sum (-2.2) or the multiplication aggregation (0.72)
#   - both gates applied one after the other, (0.2 · 0.9) · u (-0.36)
#   - the sign lost (0.4)
#   - the input itself (-2), as if the gates were 1
def check_max_out_value(answer: Any) -> Feedback:
    """Exercise 3: the max-out output at one element with u = -2, σ(ẑ_c) = 0.2, σ(q) = 0.9."""
    u, s_c, s_s = -2.0, 0.2, 0.9
    return check_number(
        answer,
        max(s_c * u, s_s * u),
        what="Max-out scSE output for u = -2, σ(ẑ_c) = 0.2, σ(q) = 0.9",
        rel=1e-6,
        hints={
            s_s * u: "That takes the larger gate, 0.9. Max-out compares the recalibrated features Û_cSE and Û_sSE "
            "(each a gate times u), not the gates.",
            s_s: "That is the larger gate itself; the block outputs a feature: the gate times u, then the maximum.",
            s_c: "That is a gate, not a feature: multiply it with u first.",
            s_c * u + s_s * u: "That is the MICCAI sum; the question is about max-out.",
            s_c * u * s_s * u: "That is the multiplication aggregation; the question is about max-out.",
            s_c * s_s * u: "That applies both gates to u one after the other (as CBAM does); scSE recalibrates u "
            "twice in parallel and then takes the maximum of the two results.",
            -s_c * u: "The sign is lost: a gate in (0, 1) times a negative u stays negative.",
            u: "That is u unchanged; each branch multiplies u by its gate before the maximum.",
        },
    )
