"""Checkers for the exercises of the linear-attention chapter (Part IV, Katharopoulos et al. 2020).

Above each checker, a comment lists the mistakes a learner typically makes on that exercise;
each one gets its own message (``tests/test_checkers_linear.py`` tries every one of them).
"""

from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F

from . import Feedback, check_number, compare_tensors, failed, judge_tensor, passed, run_answer

__all__ = ["check_causal_block", "check_flop_ratio", "check_state_bytes"]

EPS = 1e-6


def _phi(t: torch.Tensor) -> torch.Tensor:
    return F.elu(t) + 1


def _block(fq: torch.Tensor, fk: torch.Tensor, v: torch.Tensor, s: torch.Tensor, z: torch.Tensor, *,
           mask: str = "tril", state: str = "both", normalise: str = "causal", phi_again: bool = False,
           eps: float = EPS) -> torch.Tensor:
    """The outputs of one causal block given the state (S, Z) of the earlier positions, and the
    typical wrong versions: the block's own keys through a masked n x n product, the earlier ones
    through the state."""
    if phi_again:
        fq, fk = _phi(fq), _phi(fk)
    sim = fq @ fk.transpose(-2, -1)  # (..., n, n): φ(Q_i)ᵀ φ(K_j) inside the block
    n = sim.shape[-1]
    keep = {
        "tril": torch.ones(n, n).tril(),  # j <= i: the right mask
        "strict": torch.ones(n, n).tril(-1),  # j < i: the diagonal missing
        "triu": torch.ones(n, n).triu(),  # j >= i: the future instead of the past
        "none": torch.ones(n, n),  # every key of the block
    }[mask].to(sim.dtype)
    masked = sim * keep
    num, den = masked @ v, (sim if normalise == "all" else masked).sum(-1)
    if state in ("both", "num"):
        num = num + fq @ s  # φ(Q_i)ᵀ S: the earlier positions
    if state in ("both", "den"):
        den = den + (fq * z[..., None, :]).sum(-1)  # φ(Q_i)ᵀ Z
    if normalise == "none":
        return num
    return num / (den[..., None] + eps)


def _cumsum_block(fq, fk, v, s, z, *, s_axis: int, z_axis: int) -> torch.Tensor:
    """The running-sum form with the cumulative sums along the given axes (-3 and -2 are right)."""
    kv = fk[..., :, :, None] * v[..., :, None, :]  # (..., n, d, e): φ(K_j) V_jᵀ
    s_i = s[..., None, :, :] + kv.cumsum(s_axis)
    z_i = z[..., None, :] + fk.cumsum(z_axis)
    return (fq[..., None, :] @ s_i)[..., 0, :] / ((fq * z_i).sum(-1, keepdim=True) + EPS)


def _softmax_block(fq, fk, v, *, masked: bool, scaled: bool) -> torch.Tensor:
    """Softmax attention of the block's queries over its own keys: no state can carry a softmax."""
    scores = fq @ fk.transpose(-2, -1) / (fq.shape[-1] ** 0.5 if scaled else 1.0)
    if masked:
        n = scores.shape[-1]
        scores = scores.masked_fill(~torch.ones(n, n, dtype=torch.bool).tril(), float("-inf"))
    return torch.softmax(scores, dim=-1) @ v


def _cases() -> list[tuple[torch.Tensor, ...]]:
    """(fq, fk, v, s, z): a block of 5 positions after 7 earlier ones, then one single new token (the
    RNN's step). No two axes have the same size, so a sum or a cumsum over a wrong axis cannot pass."""
    g = torch.Generator().manual_seed(5)
    cases = []
    for b, h, n_before, n, d, e in [(2, 3, 7, 5, 4, 6), (3, 2, 9, 1, 5, 4)]:
        fq, fk = (_phi(torch.randn(b, h, n, d, generator=g, dtype=torch.float64)) for _ in range(2))
        v = torch.randn(b, h, n, e, generator=g, dtype=torch.float64)
        fk0 = _phi(torch.randn(b, h, n_before, d, generator=g, dtype=torch.float64))
        v0 = torch.randn(b, h, n_before, e, generator=g, dtype=torch.float64)
        cases.append((fq, fk, v, fk0.transpose(-2, -1) @ v0, fk0.sum(-2)))  # S, Z of the earlier positions
    return cases


def _judge_out(got: Any, fq, fk, v, s, z, *, what: str) -> Feedback | None:
    expected = _block(fq, fk, v, s, z)
    if not isinstance(got, torch.Tensor) or got.shape != expected.shape:  # the type and the shape first
        return compare_tensors(got, expected, what=what)
    g = got.detach().to(expected.dtype)
    if torch.isnan(g).any():
        return failed(
            f"{what}: the output holds NaN at {int(torch.isnan(g).sum())} of {g.numel()} entries, where eqs. "
            "(10)-(12) give finite numbers. A kernel's similarities are masked by setting them to 0; a mask "
            "filled with -inf, as softmax attention does, gives -inf · v and inf - inf = NaN in the sums."
        )
    tight = {"rtol": 1e-11, "atol": 1e-14}
    no_eps = _block(fq, fk, v, s, z, eps=0.0)
    if torch.allclose(g, no_eps, **tight) and not torch.allclose(g, expected, **tight):
        return failed(
            f"{what}: the ε is missing: your output is φ(Q_i)ᵀS_i / φ(Q_i)ᵀZ_i exactly, without the + ε = 1e-6 "
            f"in the denominator. Here that changes the output by at most {(g - expected).abs().max().item():.1e}, "
            "but it is not rounding: a query whose features are all 0 (ReLU features can be) gets 0/0 = NaN "
            "without it."
        )
    known = {
        "the incoming state (s, z) is ignored: that is the causal form of a sequence that starts with this "
        "block. Query i must also see every earlier position: add φ(Q_i)ᵀ S to the numerator and φ(Q_i)ᵀ Z "
        "to the denominator": _block(fq, fk, v, s, z, state="none"),
        "the incoming S is in the numerator but Z is missing from the denominator: add φ(Q_i)ᵀ Z":
            _block(fq, fk, v, s, z, state="num"),
        "the incoming Z is in the denominator but S is missing from the numerator: add φ(Q_i)ᵀ S":
            _block(fq, fk, v, s, z, state="den"),
        "every query sees every key of the block: inside the block, query i may use keys j <= i only "
        "(a lower-triangular mask)": _block(fq, fk, v, s, z, mask="none"),
        "the diagonal is missing: query i must see its own key j = i (S_i includes φ(K_i) V_iᵀ; keep the "
        "diagonal in the mask)": _block(fq, fk, v, s, z, mask="strict"),
        "query i sees the block's future keys j >= i instead of the past j <= i (an upper-triangular mask, "
        "or sums taken from the end)": _block(fq, fk, v, s, z, mask="triu"),
        "the normaliser is missing: divide φ(Q_i)ᵀ S_i by φ(Q_i)ᵀ Z_i + ε": _block(fq, fk, v, s, z, normalise="none"),
        "the denominator sums over every key of the block; it must be the running Z_i = Z + Σ_{j<=i} φ(K_j), "
        "like the numerator's S_i": _block(fq, fk, v, s, z, normalise="all"),
        "φ was applied again: fq and fk are already the features φ(Q), φ(K)": _block(fq, fk, v, s, z, phi_again=True),
    }
    for s_axis, z_axis in [(-3, -1), (-2, -2), (-2, -1), (-1, -2), (-1, -1)]:
        where = [f"S's over the {'positions' if s_axis == -3 else 'feature axis d' if s_axis == -2 else 'value axis e'}",
                 f"Z's over the {'positions' if z_axis == -2 else 'feature axis d'}"]
        known[f"a cumsum runs over the wrong axis ({', '.join(where)}): the running sums S_i, Z_i accumulate over "
              "the positions, the axis n of (B, h, n, d), which is -3 of φ(K_j) V_jᵀ (B, h, n, d, e) and -2 of "
              "φ(K) (B, h, n, d)"] = _cumsum_block(fq, fk, v, s, z, s_axis=s_axis, z_axis=z_axis)
    for masked in (True, False):
        for scaled in (True, False):
            known["that is softmax attention over the block's keys (a softmax of the scores φ(Q_i)ᵀφ(K_j)"
                  f"{' / √d' if scaled else ''}{', masked' if masked else ''}), and it cannot use the state. "
                  "Linear attention's weights are the similarities φ(Q_i)ᵀφ(K_j) themselves, divided by their "
                  "sum (eq. (12)): that is what lets the earlier positions enter through S and Z"] = \
                _softmax_block(fq, fk, v, masked=masked, scaled=scaled)
    return judge_tensor(got, expected, known, what=what, atol=1e-9, rtol=1e-7)


# Exercise 1: causal_block(fq, fk, v, s, z) -> (out, s, z): the outputs of a block of n new positions
# given the state S (B, h, d, e) and Z (B, h, d) of every earlier position, and the state after the
# block; chained over blocks, it is the chunked form of eqs. (10)-(12), ε = 1e-6 in the denominator.
# No cell of the chapter starts from a state other than 0: its causal_masked, causal_recurrent and
# causal_cumsum are the mistake "the incoming state is ignored".
# Typical mistakes (each with its own message):
#   - the incoming state ignored (a copy of the chapter's causal forms); S without Z, or Z without S
#   - no mask inside the block / the diagonal missing (j < i) / the future (j >= i)
#   - no normaliser; the denominator over every key of the block; φ applied again
#   - ε forgotten: a difference of ~1e-7, which reads as rounding; named on its own
#   - NaN in the output (a mask filled with -inf, as for softmax)
#   - a cumsum over the wrong axis (d or e instead of the positions, for S or for Z)
#   - softmax in place of the kernel (masked or not, with or without 1/√d)
#   - one tensor returned instead of (out, s, z); the state returned unchanged, or only the block's sums,
#     or with the last position only
def check_causal_block(fn: Callable[..., Any]) -> Feedback:
    """Exercise 1: one block of causal linear attention that starts from the state of the earlier
    positions and returns the state after it."""
    what = "Your causal_block"
    for fq, fk, v, s, z in _cases():
        got, fb = run_answer(fn, fq.clone(), fk.clone(), v.clone(), s.clone(), z.clone(), what=what)
        if fb is not None:
            return fb
        if isinstance(got, torch.Tensor):
            return failed(f"{what}: it returned one tensor; return the tuple (out, s, z): the outputs and the "
                          "state after the block, from which the next block starts.")
        if not isinstance(got, (tuple, list)) or len(got) != 3:
            return failed(f"{what}: expected the tuple (out, s, z), got {type(got).__name__}"
                          + (f" of length {len(got)}" if isinstance(got, (tuple, list)) else ""))
        out, s_new, z_new = got
        fb = _judge_out(out, fq, fk, v, s, z, what=f"{what}'s out")
        if fb is not None:
            return fb
        kv = fk.transpose(-2, -1) @ v  # the block's Σ_j φ(K_j) V_jᵀ
        for name, new, old, block, last in [("S", s_new, s, kv, fk[..., -1, :, None] * v[..., -1, None, :]),
                                            ("Z", z_new, z, fk.sum(-2), fk[..., -1, :])]:
            fb = judge_tensor(new, old + block, {
                f"the returned {name} is the incoming one: add the block's "
                f"{'Σ_j φ(K_j) V_jᵀ' if name == 'S' else 'Σ_j φ(K_j)'}, or the next block misses these positions":
                    old,
                f"the returned {name} holds only this block's sums: add the incoming {name} (the earlier positions)":
                    block,
                f"the returned {name} adds only the block's last position; add every position of the block":
                    old + last,
            }, what=f"{what}'s new {name}", atol=1e-9, rtol=1e-7)
            if fb is not None:
                return fb
    # chained from S = 0, Z = 0 over blocks of 3, 3 and 2 positions: the causal form of the whole sequence
    g = torch.Generator().manual_seed(7)
    fq, fk = (_phi(torch.randn(2, 3, 8, 4, generator=g, dtype=torch.float64)) for _ in range(2))
    v = torch.randn(2, 3, 8, 6, generator=g, dtype=torch.float64)
    s, z, outs = fq.new_zeros(2, 3, 4, 6), fq.new_zeros(2, 3, 4), []
    for lo, hi in [(0, 3), (3, 6), (6, 8)]:
        got, fb = run_answer(fn, fq[..., lo:hi, :].clone(), fk[..., lo:hi, :].clone(), v[..., lo:hi, :].clone(), s, z,
                             what=what)
        if fb is not None:
            return fb
        out, s, z = got
        outs.append(out)
    fb = compare_tensors(torch.cat(outs, dim=-2), _block(fq, fk, v, fq.new_zeros(2, 3, 4, 6), fq.new_zeros(2, 3, 4)),
                         what=f"{what}, chained over blocks of 3, 3 and 2 positions from S = 0, Z = 0,", atol=1e-9,
                         rtol=1e-7)
    if fb is not None:
        return fb
    return passed(f"{what} continues from the state of the earlier positions and hands on the state after the "
                  "block: chained over blocks, it is the causal form of eqs. (10)-(12).")


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
