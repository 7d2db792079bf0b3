"""Checkers for the exercises of the linear-attention chapter (Part IV, Katharopoulos et al. 2020).

Above each checker, a comment lists the mistakes a learner typically makes on that exercise;
each one gets its own message (``tests/test_checkers_linear.py`` tries every one of them).
"""

from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F

from . import Feedback, check_number, failed, judge_tensor, passed, run_answer

__all__ = ["check_causal_three_ways", "check_flop_ratio", "check_state_bytes"]

EPS = 1e-6


def _causal(fq: torch.Tensor, fk: torch.Tensor, v: torch.Tensor, *, mask: str = "tril", normalise: str = "causal",
            phi_again: bool = False) -> torch.Tensor:
    """Causal kernel attention and its typical mistakes, from the N x N similarities."""
    if phi_again:
        fq, fk = F.elu(fq) + 1, F.elu(fk) + 1
    sim = fq @ fk.transpose(-2, -1)
    n = sim.shape[-1]
    keep = {
        "tril": torch.ones(n, n).tril(),  # j <= i: the right mask
        "strict": torch.ones(n, n).tril(-1),  # j < i: the diagonal missing (S_{i-1} read before the update)
        "triu": torch.ones(n, n).triu(),  # j >= i: the future instead of the past
        "none": torch.ones(n, n),  # every key: the non-causal form
    }[mask].to(sim.dtype)
    masked = sim * keep
    num = masked @ v
    if normalise == "none":
        return num
    den = {"causal": masked, "all": sim}[normalise].sum(-1, keepdim=True)
    return num / (den + EPS)


# Exercise 1: the causal form three ways (running-sum loop, cumsum, masked N x N), each
# (fq, fk, v) -> (B, h, N, e), eqs. (10)-(12) with ε = 1e-6 in the denominator.
# Typical mistakes (each form can make any of them):
#   - no mask / a sum over all positions: the non-causal form (every query sees every key)
#   - the diagonal missing: j < i (a strict mask, or the state read before it is updated)
#   - the future instead of the past: an upper-triangular mask, or a cumsum over reversed positions
#   - no normaliser (the numerator φ(Q_i)ᵀ S_i only)
#   - the normaliser from all keys (Z = Σ_j φ(K_j) over the whole sequence) with a causal numerator
#   - φ applied again to inputs that are already features
#   - cumsum along the wrong axis (the feature axis instead of the positions): caught as a value
#     mismatch, named by compare_tensors
def check_causal_three_ways(loop: Callable[..., Any], cumsum: Callable[..., Any], masked: Callable[..., Any]) -> Feedback:
    """Exercise 1: three causal linear-attention functions, each equal to eqs. (10)-(12)."""
    g = torch.Generator().manual_seed(5)
    cases = []
    for shape_qk, e in [((2, 3, 7, 4), 5), ((1, 2, 9, 3), 2)]:
        fq = F.elu(torch.randn(shape_qk, generator=g, dtype=torch.float64)) + 1
        fk = F.elu(torch.randn(shape_qk, generator=g, dtype=torch.float64)) + 1
        v = torch.randn(*shape_qk[:-1], e, generator=g, dtype=torch.float64)
        cases.append((fq, fk, v))
    blank = 0
    for name, fn in (("causal_loop", loop), ("causal_cumsum", cumsum), ("causal_masked", masked)):
        what = f"Your {name}"
        for fq, fk, v in cases:
            expected = _causal(fq, fk, v)
            got, fb = run_answer(fn, fq.clone(), fk.clone(), v.clone(), what=what)
            if fb is not None:
                if not fb.attempted:
                    blank += 1
                    break
                return fb

            def ref(**kw: Any) -> torch.Tensor:
                return _causal(fq, fk, v, **kw)

            known = {
                "every query sees every key: that is the non-causal form; query i may use keys j <= i only":
                    ref(mask="none"),
                "the diagonal is missing: query i must see its own key j = i (S_i includes φ(K_i) V_iᵀ; "
                "update the state before reading it, and keep the diagonal in the mask)": ref(mask="strict"),
                "query i sees the future keys j >= i instead of the past j <= i (an upper-triangular mask, "
                "or the sums taken from the end)": ref(mask="triu"),
                "the normaliser is missing: divide φ(Q_i)ᵀ S_i by φ(Q_i)ᵀ Z_i + ε": ref(normalise="none"),
                "the denominator uses Z over the whole sequence; it must be the running Z_i = Σ_{j<=i} φ(K_j), "
                "like the numerator's S_i": ref(normalise="all"),
                "φ was applied again: fq and fk are already the features φ(Q), φ(K)": ref(phi_again=True),
            }
            fb = judge_tensor(got, expected, known, what=what, atol=1e-9, rtol=1e-7)
            if fb is not None:
                return fb
    if blank == 3:
        return Feedback(False, "Exercise 1: not attempted yet. Write the three functions and run the cell again.",
                        attempted=False)
    if blank:
        return failed(f"Exercise 1: {3 - blank} of the three forms are right; write the other "
                      f"{'one' if blank == 1 else 'two'} (they raise NotImplementedError).")
    return passed("The three forms agree with eqs. (10)-(12): running sums, cumsum and the masked N × N form.")


# Exercise 2: softmax's two products over linear attention's two, 56 × 56 map, C = 256, h = 4.
RATIO_SIDE, RATIO_C, RATIO_HEADS = 56, 256, 4


# Typical mistakes:
#   - inverted (linear over softmax: d / N)
#   - C instead of d = C / h (N / C)
#   - the side 56 instead of N = 56² (side / d)
#   - N / d² or N² / d² (a square too many)
#   - the heads multiplied into one side only (h N / d; N / (h d) is N / C, above)
def check_flop_ratio(answer: Any) -> Feedback:
    """Exercise 2: softmax's 4N²d over linear's 4Nd² per head: N / d."""
    n, h = RATIO_SIDE**2, RATIO_HEADS
    d = RATIO_C // h
    return check_number(
        answer,
        n / d,
        what="The FLOP ratio",
        hints={
            d / n: "That is linear over softmax; the question asks how many times more softmax costs.",
            n / RATIO_C: "That uses C = 256 (or h · d, which is C); each head works with its own "
            "d = C / h = 64 channels, and the heads appear on both sides and cancel.",
            RATIO_SIDE / d: "N is the number of positions, 56 × 56 = 3,136, not the side.",
            n / d**2: "Per head softmax is 4N²d and linear 4Nd²: the ratio is N / d, not N / d².",
            n**2 / d**2: "Per head softmax is 4N²d and linear 4Nd²: one N and one d cancel, N / d remains.",
            h * n / d: "The heads appear on both sides (h · 4N²d against h · 4Nd²) and cancel.",
        },
    )


# Exercise 3: bytes of the recurrent state of one causal layer, C = 512, h = 8, float32, one sequence.
STATE_C, STATE_HEADS = 512, 8


# Typical mistakes:
#   - Z forgotten (only S: h d² numbers)
#   - one head only
#   - C² instead of h d² (one d × d state per head, not one C × C)
#   - numbers, not bytes (× 4 forgotten)
#   - 2 bytes a number (float16)
#   - the KV cache of softmax attention instead (depends on N: not asked)
#   - S counted as d × N or Z as N (the state does not grow with N): cannot be given a number, skipped
def check_state_bytes(answer: Any) -> Feedback:
    """Exercise 3: h (d² + d) numbers of 4 bytes."""
    h = STATE_HEADS
    d = STATE_C // h
    right = h * (d * d + d) * 4
    return check_number(
        answer,
        right,
        what="The state's bytes",
        hints={
            h * d * d * 4: "That is S alone; the normaliser's state Z_i (d numbers per head) is kept too.",
            (d * d + d) * 4: "That is one head; each of the h = 8 heads keeps its own S and Z.",
            (STATE_C**2 + STATE_C) * 4: "That is a C × C state; each head keeps a d × d one, d = C / h = 64.",
            h * (d * d + d): "That is the number of values; each float32 takes 4 bytes.",
            h * (d * d + d) * 2: "That is in 2-byte numbers (float16); the question asks for float32.",
            h * (d * d + d) * 8: "That is in 8-byte numbers (float64); the question asks for float32.",
        },
    )
