"""The exercise checkers of Part I and the einops primer: every typical mistake gets its own message.

One table per exercise: (wrong answer, a fragment of the message it must get). For each table the
test checks that every mistake is refused with its fragment, that no two mistakes get the same
message, that the right answer passes and that a blank answer is "not attempted" without raising.
"""

from __future__ import annotations

import math

import pytest
import torch
from einops import einsum, rearrange, reduce

from attncourse.exercises import channel_summary as ex_summary
from attncourse.exercises import eca as ex_eca
from attncourse.exercises import einops_primer as ex_ep
from attncourse.exercises import se as ex_se
from attncourse.exercises import simam as ex_simam
from attncourse.exercises import sk as ex_sk


def _blank(*args):
    raise NotImplementedError


def _check_table(check, right, mistakes, blank=...):
    messages = []
    for wrong, fragment in mistakes:
        fb = check(wrong)
        assert not fb and fb.attempted, f"{fragment!r}: accepted or not attempted: {fb!r}"
        assert fragment in fb.message, f"expected {fragment!r} in {fb.message!r}"
        messages.append(fb.message)
    assert len(set(messages)) == len(messages), "two mistakes got the same message"
    assert check(right), repr(check(right))
    fb = check(blank)
    assert not fb and not fb.attempted and "not attempted" in fb.message


# ---------------------------------------------------------------- SE

def _se(c, r, bias=True):
    return 2 * c * c // r + ((c // r + c) if bias else 0)


SE_PARAMETERS = [
    (_se(256, 16, bias=False), "without their biases"),
    (256 * 256 // 16, "only one of the two layers"),
    (256 * 256 // 16 + 16 + 256, "only one weight matrix"),
    (2 * 256 * 256, "forgets the reduction"),
    (2 * 256 * 256 + 512, "(and has C/r biases)"),
    (2 * 256 * 256 // 16 + 256, "One bias is missing"),
    (2 * 256 * 256 // 16 + 512, "C/r biases, not C"),
]

R101 = [(256, 3), (512, 4), (1024, 23), (2048, 3)]
SE_RESNET101 = [
    (sum(n * _se(c, 16, bias=False) for c, n in R101), "bias-free formula"),
    (sum(n * _se(c // 4, 16) for c, n in R101), "inner 3 x 3 width"),
    (sum(_se(c, 16) for c, _ in R101), "Every bottleneck has its own"),
    (2_530_992, "That is ResNet-50"),
    (sum(n * 2 * c * c for c, n in R101), "forgets the reduction"),
    (sum(n * c * c // 16 for c, n in R101), "one layer per block"),
]


def _se_fn(pool="mean", act=torch.relu, gate=torch.sigmoid, bias=True, scale=True):
    def fn(u, w1, b1, w2, b2):
        z = reduce(u, "b c h w -> b c", pool)
        s = gate(act(z @ w1.T + (b1 if bias else 0)) @ w2.T + (b2 if bias else 0))
        s = rearrange(s, "b c -> b c 1 1")
        return u * s if scale else s.expand_as(u)
    return fn


SE_FUNCTION = [
    (_se_fn(pool="max"), "squeezed with a maximum"),
    (_se_fn(gate=lambda t: t), "sigmoid σ of eq. (3) is missing"),
    (_se_fn(act=lambda t: t), "ReLU δ between the two layers"),
    (_se_fn(act=torch.sigmoid), "used a sigmoid between the two layers"),
    (_se_fn(bias=False), "biases b1 and b2 are missing"),
    (_se_fn(scale=False), "returned the weights s"),
    (lambda u, w1, b1, w2, b2: u * torch.sigmoid(torch.relu(u.mean((2, 3)) @ w1 + b1) @ w2 + b2)[..., None, None],
     "compute z @ w1.T"),
]


def test_se_parameters():
    _check_table(ex_se.check_se_parameters, _se(256, 16), SE_PARAMETERS)


def test_se_resnet101():
    _check_table(ex_se.check_resnet101_se_parameters, sum(n * _se(c, 16) for c, n in R101), SE_RESNET101)


def test_se_function():
    _check_table(ex_se.check_se_function, _se_fn(), SE_FUNCTION, blank=_blank)


def _se_tok(pool="mean", axis="n", act=torch.relu, gate=torch.sigmoid, bias=True, scale="b 1 c", weights_only=False):
    def fn(x, w1, b1, w2, b2):
        z = reduce(x, "b n c -> b c" if axis == "n" else "b n c -> b n", pool)
        s = gate(act(z @ w1.T + (b1 if bias else 0)) @ w2.T + (b2 if bias else 0))
        s = rearrange(s, f"b c -> {scale}")
        return s.expand_as(x) if weights_only else x * s
    return fn


SE_TOKENS = [
    (_se_tok(axis="c", scale="b c 1"), "squeeze runs over the channel axis"),
    (_se_tok(scale="b c 1"), "scale the tokens, not the channels"),
    (_se_tok(pool="max"), "squeezed with a maximum"),
    (_se_tok(gate=lambda t: t), "sigmoid σ of the excitation is missing"),
    (_se_tok(act=lambda t: t), "ReLU δ between the two layers"),
    (_se_tok(bias=False), "biases b1 and b2 are missing"),
    (_se_tok(weights_only=True), "returned the weights s"),
    (lambda x, w1, b1, w2, b2: x * torch.sigmoid(torch.relu(x.mean(1) @ w1 + b1) @ w2 + b2)[:, None, :], "z @ w1.T"),
]


def test_se_tokens():
    _check_table(ex_se.check_se_tokens, _se_tok(), SE_TOKENS, blank=_blank)


def test_se_function_reports_a_crash_without_raising():
    fb = ex_se.check_se_function(lambda u, *w: u @ u)
    assert not fb and fb.attempted and "raised RuntimeError" in fb.message


# ---------------------------------------------------------------- ECA

ECA_KERNEL = [
    (8, "is even"),
    (7, "breaks the tie upwards"),
    (5, "forgets b"),
    (13, "without dividing by γ"),
    (11, "b is divided by γ too"),
    (3, "paper's γ = 2, b = 1"),
]

ECA_RESNET101 = [
    (20, "one ECA module per stage"),
    (171, "ψ(C) on the widths"),
    (99, "k = 3 everywhere"),
    (198, "has no bias"),
    (80, "ResNet-50's count"),
    (3 * 9 + 4 * 25 + 23 * 25 + 3 * 49, "k x k"),
    (3 * 3 * 256 + 4 * 5 * 512 + 23 * 5 * 1024 + 3 * 7 * 2048, "ECA-NS"),
]


def _band(w, C, *, flip=False, circular=False, shift=False, diagonal=False):
    k, p = len(w), (len(w) - 1) // 2
    W = torch.zeros(C, C, dtype=w.dtype)
    for i in range(C):
        if diagonal:
            W[i, i] = w[p]
            continue
        for j in range(k):
            col = i + j if shift else i + j - p
            wj = w[k - 1 - j] if flip else w[j]
            if 0 <= col < C:
                W[i, col] = wj
            elif circular and not shift:
                W[i, col % C] += wj
    return W


ECA_BAND = [
    (lambda w, C: _band(w, C, flip=True), "runs the wrong way"),
    (lambda w, C: _band(w, C, circular=True), "wraps around"),
    (lambda w, C: _band(w, C, shift=True), "not centred"),
    (lambda w, C: _band(w, C, diagonal=True), "diagonal matrix"),
    (lambda w, C: _band(w, C)[:, :-1], "the shape is"),
]


def test_eca_kernel_size():
    _check_table(ex_eca.check_kernel_size, 9, ECA_KERNEL)


def test_eca_resnet101():
    _check_table(ex_eca.check_resnet101_eca_parameters, 165, ECA_RESNET101)


def test_eca_band_matrix():
    _check_table(ex_eca.check_band_matrix, _band, ECA_BAND, blank=_blank)


# ---------------------------------------------------------------- SK

def _sk(C, M=2, G=32, r=16, L=32):
    d = max(C // r, L)
    return M * (9 * C * C // G + 2 * C) + C * d + 2 * d + M * C * d


SK_RIGHT = _sk(192, 3, 16)
SK_PARAMETERS = [
    (SK_RIGHT + 32 + 3 * 192, "two linear layers"),
    (SK_RIGHT + 3 * 192, "branch convolutions have no biases"),
    (SK_RIGHT + 2 * 3 * 192 + 32, "Neither the convolutions nor the linear layers"),
    (SK_RIGHT - 3 * 2 * 192 - 64, "left out the batch norms"),
    (SK_RIGHT - 3 * 2 * 192, "branches' batch norms"),
    (SK_RIGHT - 64, "batch norm on z"),
    (SK_RIGHT - 3 * 9 * 192 * 192 // 16 + 3 * 9 * 192 * 192, "full convolutions"),
    (_sk(192, 3, 16, L=1), "not C/r = 12"),
    (SK_RIGHT - 2 * 192 * 32, "one A_m"),
    (SK_RIGHT - 3 * (9 * 192 * 192 // 16 + 2 * 192), "only what the attention adds"),
    (_sk(192, 2, 16), "M = 2 branches"),
    (_sk(192, 3, 32), "G = 32 groups"),
    (SK_RIGHT + (16 + 40) * 192 * 192 // 16, "not 25 and 49"),
]


def test_sk_parameters_right_answer_is_the_module_count():
    from attncourse.channel.sk import SelectiveKernel
    from attncourse.cost import count_parameters

    assert count_parameters(SelectiveKernel(192, branches=3, groups=16)) == SK_RIGHT == 88_000


def test_sk_parameters():
    _check_table(ex_sk.check_parameters, SK_RIGHT, SK_PARAMETERS)


def _select(weights=lambda a: a.softmax(1), layout="m c", combine="weighted"):
    def fn(u, logits):
        a = weights(rearrange(logits, f"b ({layout}) -> b m c", m=u.shape[1]))
        if combine == "mean":
            return u.mean(1)
        if combine == "sum":
            return u.sum(1)
        if combine == "unsummed":
            return a[..., None, None] * u
        return einsum(a, u, "b m c, b m c h w -> b c h w")
    return fn


def _select_fixed_two(u, logits):
    a = rearrange(logits, "b (m c) -> b m c", m=2).softmax(1)
    return einsum(a, u[:, :2], "b m c, b m c h w -> b c h w")


SK_SELECT = [
    (_select(weights=lambda a: a.softmax(2)), "runs over the channels"),
    (_select(weights=lambda a: a.softmax(0)), "runs over the batch"),
    (_select(layout="c m"), "read as (c m)"),
    (_select(weights=torch.sigmoid), "sigmoid per branch"),
    (_select(weights=torch.exp), "without dividing by their sum"),
    (_select(combine="mean"), "averaged the branches"),
    (_select(combine="sum"), "summed the branches"),
    (_select(combine="unsummed"), "did not sum them over m"),
    (_select_fixed_two, "with M = 2 it was right"),
]


def test_sk_select():
    _check_table(ex_sk.check_select, _select(), SK_SELECT, blank=_blank)


def _two(weight=torch.sigmoid, combine="both"):
    def fn(u1, u2, delta):
        a = rearrange(weight(delta), "b c -> b c 1 1")
        if combine == "swap":
            return (1 - a) * u1 + a * u2
        if combine == "first":
            return a * u1
        if combine == "mean":
            return (u1 + u2) / 2
        return a * u1 + (1 - a) * u2
    return fn


SK_SELECT_TWO = [
    (_two(combine="swap"), "the branches are swapped"),
    (_two(combine="first"), "b_c · U_2 is missing"),
    (_two(weight=lambda d: d), "the sigmoid is missing"),
    (_two(weight=lambda d: d.softmax(1)), "softmax over the channels"),
    (_two(combine="mean"), "averaged the branches"),
    (_two(weight=torch.exp), "e^δ is not a weight"),
    (lambda u1, u2, delta: torch.stack([u1, u2], 1), "the shape is"),
]


def test_sk_select_two():
    _check_table(ex_sk.check_select_two, _two(), SK_SELECT_TWO, blank=_blank)


SK_DILATION = [
    (16 * 128 * 128, "Remember the groups"),
    (25 * 128 * 128 // 32, "what a 5×5 grouped convolution costs"),
    (9 * 128 * 128 // 32, "what the dilated 3×3 costs"),
    (4 * 128 * 128 // 32, "not (5 − 3)² = 4"),
    (16 * 128 // 32, "Count all C output channels"),
    (2 * 16 * 128 * 128 // 32, "Only the second branch changes"),
]


def test_sk_dilation_saving():
    _check_table(ex_sk.check_dilation_saving, 16 * 128 * 128 // 32, SK_DILATION)


# ---------------------------------------------------------------- SimAM

def _sig(v):
    return 1 / (1 + math.exp(-v))


SIMAM_MAX_GATE = [
    (_sig(2 + 0.5), "divides the variance by M = 9"),
    (_sig(64 / 36), "+ 1/2 is missing"),
    (64 / 36 + 0.5, "That is 1/e_t*"),
    (1.0, "exact minimum of (2)"),
    (_sig(0.5), "smallest gate"),
    (_sig(9 / 4 + 0.5), "t − μ_t"),
]


def test_simam_max_gate():
    _check_table(ex_simam.check_max_gate, _sig(64 / 36 + 0.5), SIMAM_MAX_GATE)


def _tokens(dims=1, n_minus=1, half=0.5, lam_on=True, out="x"):
    def fn(x, lam):
        m = 1
        for d in ([dims] if isinstance(dims, int) else dims):
            m *= x.shape[d]
        d = (x - x.mean(dims, keepdim=True)) ** 2
        inv = d / (4 * (d.sum(dims, keepdim=True) / (m - n_minus) + (lam if lam_on else 0))) + half
        return {"x": x * torch.sigmoid(inv), "gate": torch.sigmoid(inv), "inv": inv}[out]
    return fn


SIMAM_TOKENS = [
    (_tokens(dims=2), "over the channel axis C"),
    (_tokens(dims=(0, 1)), "include the batch"),
    (_tokens(n_minus=0), "divided by N"),
    (_tokens(half=0.0), "+ 1/2 is missing"),
    (_tokens(out="gate"), "that is the gate"),
    (_tokens(out="inv"), "inverse energy 1/E"),
    (_tokens(lam_on=False), "λ is missing"),
]


def test_simam_tokens():
    _check_table(ex_simam.check_simam_tokens, _tokens(), SIMAM_TOKENS, blank=_blank)


def _loo(x, lam):
    return ex_simam.leave_one_out_energy(x, lam)


SIMAM_LOO = [
    (lambda x, lam: 1 / ex_simam._inverse_energy(x, lam), "official code's energy"),
    (lambda x, lam: 1 / ex_simam._inverse_energy(x, lam, n_minus=0), "(divided by M)"),
    (lambda x, lam: 1 / _loo(x, lam), "return the energy e_t* itself"),
    (lambda x, lam: _loo(x, 0.0), "λ is missing"),
    (lambda x, lam: torch.sigmoid(1 / _loo(x, lam)), "that is the gate"),
]


def test_simam_leave_one_out():
    _check_table(ex_simam.check_leave_one_out_energy, _loo, SIMAM_LOO, blank=_blank)


def test_simam_leave_one_out_knows_the_m_minus_2_variance():
    def unbiased(x, lam):
        m = x.shape[2] * x.shape[3]
        mu = (x.sum((2, 3), keepdim=True) - x) / (m - 1)
        ss = (x**2).sum((2, 3), keepdim=True) - x**2 - (m - 1) * mu**2
        return 4 * (ss / (m - 2) + lam) / ((x - mu) ** 2 + 2 * ss / (m - 2) + 2 * lam)

    assert "M − 2" in ex_simam.check_leave_one_out_energy(unbiased).message


# ---------------------------------------------------------------- Part I side by side

SUMMARY_ECA = [
    (250, "released ECA-ResNet-50's kernels"),
    (22, "Every bottleneck has its own ECA"),
    (306, "has no bias"),
    (86, "That is ResNet-50"),
    (244, "inner 3×3"),
    (150, "k = 3 everywhere"),
]


def test_summary_eca_resnet152():
    _check_table(ex_summary.check_eca_resnet152_parameters, 256, SUMMARY_ECA)


RIGHT_PERMUTATION = {"se": False, "eca": False, "simam": True}
SUMMARY_PERMUTATION = [
    ({"se": True, "eca": False, "simam": True}, "W1 and W2 are tied to the channel order"),
    ({"se": False, "eca": True, "simam": True}, "the kernel is shared, but the neighbourhood"),
    ({"se": False, "eca": False, "simam": False}, "depend only on that channel's own values"),
    ({"se": True, "eca": True}, "expected a dict with keys"),
]


def test_summary_permutation():
    _check_table(ex_summary.check_permutation, RIGHT_PERMUTATION, SUMMARY_PERMUTATION)


def test_summary_permutation_answer_is_what_the_modules_do():
    import attncourse

    torch.manual_seed(0)
    x, order = torch.randn(2, 64, 5, 6), torch.randperm(64)
    for name, equivariant in RIGHT_PERMUTATION.items():
        m = attncourse.create(name, 64)
        assert torch.allclose(m(x[:, order]), m(x)[:, order], atol=1e-6) == equivariant, name


# ---------------------------------------------------------------- einops primer

def _windows(pattern):
    return lambda x, p: rearrange(x, pattern, p1=p, p2=p)


EP_WINDOWS = [
    (_windows("b c (p1 h) (p2 w) -> (b h w) (p1 p2) c"), "strided samples"),
    (lambda x, p: rearrange(x, "b c (h p1) (w p2) -> (b h w) c (p1 p2)", p1=p, p2=p).reshape(-1, p * p, x.shape[1]),
     "the channels are not last"),
    (_windows("b c (h p1) (w p2) -> (b w h) (p1 p2) c"), "(w h) order"),
    (_windows("b c (h p1) (w p2) -> (h w b) (p1 p2) c"), "batch axis is inside"),
    (_windows("b c (h p1) (w p2) -> (b h w) (p2 p1) c"), "(p2 p1) order"),
    (_windows("b c (h p1) (w p2) -> (b h w) p1 p2 c"), "the shape is"),
]


def test_einops_window_tokens():
    _check_table(ex_ep.check_window_tokens, _windows("b c (h p1) (w p2) -> (b h w) (p1 p2) c"), EP_WINDOWS, blank=_blank)


EP_HEADS = [
    (lambda x, n: rearrange(x, "b (d n) h w -> b n (h w) d", n=n), "(d heads)"),
    (lambda x, n: rearrange(x, "b (n d) h w -> b n (w h) d", n=n), "(w h) order"),
    (lambda x, n: rearrange(x, "b (n d) h w -> b n d (h w)", n=n), "(B, heads, d, H·W)"),
    (lambda x, n: rearrange(x, "b (n d) h w -> b n h w d", n=n), "not flattened"),
]


def test_einops_map_heads():
    _check_table(ex_ep.check_map_heads, lambda x, n: rearrange(x, "b (n d) h w -> b n (h w) d", n=n), EP_HEADS,
                 blank=_blank)


def _unpatch(pattern, rows_as="h"):
    return lambda t, p, rows: rearrange(t, pattern, **{rows_as: rows}, p1=p, p2=p)


EP_UNPATCH = [
    (_unpatch("b (h w) (c p1 p2) -> b c (h p1) (w p2)"), "(c p1 p2)"),
    (_unpatch("b (h w) (p1 p2 c) -> b c (p1 h) (p2 w)"), "swapped"),
    (_unpatch("b (h w) (p1 p2 c) -> b c (h p1) (w p2)", rows_as="w"), "number of patch rows"),
]


def test_einops_unpatchify():
    _check_table(ex_ep.check_unpatchify, _unpatch("b (h w) (p1 p2 c) -> b c (h p1) (w p2)"), EP_UNPATCH, blank=_blank)


def _scores(scale=lambda q: q.shape[-1] ** 0.5, softmax=False, transpose=False):
    def fn(q, k):
        s = einsum(q, k, "b h i d, b j d -> b h i j") / scale(q)
        s = s.softmax(-1) if softmax else s
        return s.transpose(-1, -2) if transpose else s
    return fn


EP_SCORES = [
    (_scores(scale=lambda q: 1.0), "scale is missing"),
    (_scores(scale=lambda q: q.shape[-1]), "divided by d"),
    (_scores(softmax=True), "applied the softmax"),
    (_scores(transpose=True), "(B, heads, N_k, N_q)"),
    (_scores(scale=lambda q: (q.shape[1] * q.shape[-1]) ** 0.5), "uses heads·d"),
]


def test_einops_shared_key_scores():
    _check_table(ex_ep.check_shared_key_scores, _scores(), EP_SCORES, blank=_blank)


# ---------------------------------------------------------------- the former exercises, kept for old copies

def test_former_checkers_still_accept_their_answers():
    assert ex_se.check_resnet50_se_parameters(2_530_992)
    assert "bias-free" in ex_se.check_resnet50_se_parameters(2_514_944).message
    assert ex_summary.check_eca_resnet50_parameters(86)
    assert ex_summary.check_cross_channel({"se": True, "eca": False, "simam": False})
    assert ex_ep.check_to_tokens(lambda x: rearrange(x, "b c h w -> b (h w) c"))
    assert ex_ep.check_split_heads(lambda x, h: rearrange(x, "b n (h d) -> b h n d", h=h))
    assert ex_ep.check_patchify(lambda x, p: rearrange(x, "b c (h p1) (w p2) -> b (h w) (p1 p2 c)", p1=p, p2=p))
    assert ex_ep.check_attention_scores(lambda q, k: q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5)


@pytest.mark.parametrize("check", [ex_se.check_se_parameters, ex_eca.check_kernel_size, ex_sk.check_parameters,
                                   ex_simam.check_max_gate, ex_summary.check_eca_resnet152_parameters])
def test_a_number_checker_refuses_text_without_raising(check):
    fb = check("twelve")
    assert not fb and fb.attempted and "expected a number" in fb.message
