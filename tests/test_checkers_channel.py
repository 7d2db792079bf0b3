"""The exercise checkers of Part I and the einops primer: every typical mistake gets its own message.

One table per exercise: (wrong answer, a fragment of the message it must get). For each table the
test checks (with the shared ``check_table``) that every mistake is refused with its fragment, that
no two mistakes get the same message, that the right answer passes and that a blank answer is "not
attempted" without raising, naming the placeholder the cell holds. The checkers of former
exercises, kept for older copies of the chapters, keep their tables.
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
from checker_tables import check_table


def _check_table(check, right, mistakes, blank=None):
    """``mistakes``: a list of (wrong answer, fragment); the blank answers are check_table's."""
    check_table(check, right, {f"{i}: {fragment}": (wrong, fragment) for i, (wrong, fragment) in enumerate(mistakes)})


# ---------------------------------------------------------------- SE

def _se(c, r, bias=True):
    return 2 * c * c // r + ((c // r + c) if bias else 0)


def _hidden(c, d, bias=True):
    return 2 * c * d + ((d + c) if bias else 0)


SE_FLOOR = [                                        # C = 96, r = 16, d = max(6, 8) = 8
    (_hidden(96, 6), "d = C/r = 6"),
    (_hidden(96, 14), "not C/r + 8 = 14"),
    (_hidden(96, 12), "not C/8 = 12"),
    (_hidden(96, 8, bias=False), "without their biases"),
    (2 * 96 * 8 + 8, "W2's C biases are missing"),
    (2 * 96 * 8 + 96, "W1's d biases are missing"),
    (2 * 96 * 8 + 2 * 96, "so d biases, not C"),
    (96 * 8 + 8 + 96, "only one weight matrix"),
]


def test_se_floor_parameters():
    from attncourse import SqueezeExcite
    from attncourse.cost import count_parameters

    right = _hidden(96, 8)
    assert right == 1640 == count_parameters(SqueezeExcite(96, reduction=12))     # 96 / 12 = 8 hidden units
    _check_table(ex_se.check_floor_parameters, right, SE_FLOOR)


R50_INPUTS = [64, 256, 256, 256, 512, 512, 512, 512, 1024, 1024, 1024, 1024, 1024, 1024, 2048, 2048]
SE_INPUTS = [
    (sum(n * _se(c, 16) for c, n in [(256, 3), (512, 4), (1024, 6), (2048, 3)]), "SE on every block's output"),
    (sum(n * _se(f, 16) for f, n in zip((64, 256, 512, 1024), (3, 4, 6, 3))), "Only the first block of a stage"),
    (sum(_se(c, 16) for c in [256, *R50_INPUTS[1:]]), "the stem's 64 channels"),
    (sum(_se(c, 16, bias=False) for c in R50_INPUTS), "leaves out the biases"),
    (sum(n * _se(c // 4, 16) for c, n in [(256, 3), (512, 4), (1024, 6), (2048, 3)]), "inner 3x3 widths"),
    (sum(_se(f, 16) for f in (64, 256, 512, 1024)), "Every bottleneck has its own"),
]


def test_se_input_placement():
    from attncourse import SqueezeExcite
    from attncourse.cost import count_parameters

    # the inputs of ResNet-50's bottlenecks: the stem's 64, then each block's input is the previous output
    outputs = [c for c, n in [(256, 3), (512, 4), (1024, 6), (2048, 3)] for _ in range(n)]
    assert R50_INPUTS == [64, *outputs[:-1]]
    right = sum(count_parameters(SqueezeExcite(c)) for c in R50_INPUTS)
    _check_table(ex_se.check_input_placement_parameters, right, SE_INPUTS)


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
    _check_table(ex_se.check_se_function, _se_fn(), SE_FUNCTION)


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
    (_se_tok(pool="sum"), "summed the tokens"),
    (_se_tok(gate=lambda t: t), "sigmoid σ of the excitation is missing"),
    (_se_tok(act=lambda t: t), "ReLU δ between the two layers"),
    (_se_tok(bias=False), "biases b1 and b2 are missing"),
    (_se_tok(weights_only=True), "returned the weights s"),
    (lambda x, w1, b1, w2, b2: x * torch.sigmoid(torch.relu(x.mean(1) @ w1 + b1) @ w2 + b2)[:, None, :], "z @ w1.T"),
    (lambda x, w1, b1, w2, b2: torch.sigmoid(torch.relu(x.mean(1) @ w1.T + b1) @ w2.T + b2), "shape (B, C)"),
]


def test_se_tokens():
    _check_table(ex_se.check_se_tokens, _se_tok(), SE_TOKENS)


def test_se_function_reports_a_crash_without_raising():
    fb = ex_se.check_se_function(lambda u, *w: u @ u)
    assert not fb and fb.attempted and "raised RuntimeError" in fb.message


# ---------------------------------------------------------------- ECA

ECA_GROWTH = [                                      # t = 3 at C = 32, t = 9 at C = 512: (γ, b) = (2/3, −3)
    ((-3, 2 / 3), "order (γ, b)"),
    ((2 / 3, 3), "sign of b is flipped"),
    ((1.5, -4.5), "γ·log2 C + b"),
    ((2 / 3, -4.5), "b is divided by γ too"),
    ((math.log(16) / 6, 3 * math.log(16) / 6 - math.log(32)), "natural logarithm"),
    ((80, 208), "uses C itself"),
    ((2, 1), "paper's γ = 2, b = 1"),
    ((1, -2), "(5 + b)/γ = 3"),
    ("two thirds", "expected a pair"),
]


def test_eca_kernel_growth():
    from attncourse.channel.eca import eca_kernel_size

    assert eca_kernel_size(32, gamma=2 / 3, beta=-3) == 3 and eca_kernel_size(512, gamma=2 / 3, beta=-3) == 9
    _check_table(ex_eca.check_kernel_growth, (2 / 3, -3), ECA_GROWTH)
    assert ex_eca.check_kernel_growth([0.6667, -3.0])                     # a list, rounded to 4 digits, is fine


R50_ECA = [(256, 3, 3), (512, 4, 5), (1024, 6, 5), (2048, 3, 7)]        # (width, blocks, released k)
ECA_NS = [
    (80, "ECA's 80"),
    (sum(n * k * c for (c, n, _), k in zip(R50_ECA, (5, 5, 5, 7))), "formula's kernels"),
    (sum(k * c for c, _, k in R50_ECA), "one module per stage"),
    (sum(n * (k + 1) * c for c, n, k in R50_ECA), "has no bias"),
    (sum(n * k * c // 4 for c, n, k in R50_ECA), "inner 3x3 widths"),
    (sum(n * k * k * c for c, n, k in R50_ECA), "not k x k"),
    (sum(n * c * c for c, n, _ in R50_ECA), "SE-Var3"),
]


def test_eca_ns_parameters():
    right = sum(n * k * c for c, n, k in R50_ECA)
    assert right == 86_272
    _check_table(ex_eca.check_eca_ns_parameters, right, ECA_NS)


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


def _band(w, C, *, flip=False, circular=False, shift=False, diagonal=False, pad_one=False):
    k, p = len(w), (len(w) - 1) // 2
    p = 1 if pad_one else p
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
    (lambda w, C: _band(w, C, pad_one=True), "offset by 1"),
    (lambda w, C: _band(w, C)[:, :-1], "the shape is"),
]


def test_eca_kernel_size():
    _check_table(ex_eca.check_kernel_size, 9, ECA_KERNEL)


def test_eca_resnet101():
    _check_table(ex_eca.check_resnet101_eca_parameters, 165, ECA_RESNET101)


def test_eca_band_matrix():
    _check_table(ex_eca.check_band_matrix, _band, ECA_BAND)


# ---------------------------------------------------------------- SK

def _sk(C, M=2, G=32, r=16, L=32):
    d = max(C // r, L)
    return M * (9 * C * C // G + 2 * C) + C * d + 2 * d + M * C * d


SK_RIGHT = _sk(192, 3, 16)
SK_VARIANT_RIGHT = SK_RIGHT - 64 + 32 + 3 * 192     # no BN on z (−2d), a bias on W (+d) and on A (+M·C)
SK_VARIANT = [
    (SK_RIGHT, "SelectiveKernel as it is"),
    (SK_RIGHT - 64 + 32, "select layer's bias is missing"),
    (SK_RIGHT - 64 + 3 * 192, "W's bias is missing"),
    (SK_RIGHT + 32 + 3 * 192, "no batch norm on z"),
    (SK_RIGHT - 64 + 32 + 192, "576, not C"),
    (SK_RIGHT - 64 + 32 + 3, "576, not M"),
    (SK_RIGHT - 64 + 192 + 3 * 192, "d = 32 entries"),
    (SK_VARIANT_RIGHT + 3 * 192, "branch convolutions still have no bias"),
    (SK_VARIANT_RIGHT - 3 * 2 * 192, "each branch keeps its batch norm"),
]


def test_sk_variant_parameters():
    from torch import nn

    from attncourse.channel.sk import SelectiveKernel
    from attncourse.cost import count_parameters

    m = SelectiveKernel(192, branches=3, groups=16)     # build the variant and count it
    m.bn = nn.Identity()
    m.fc = nn.Linear(192, 32, bias=True)
    m.select = nn.Linear(32, 3 * 192, bias=True)
    assert count_parameters(m) == SK_VARIANT_RIGHT == 88_544
    _check_table(ex_sk.check_variant_parameters, SK_VARIANT_RIGHT, SK_VARIANT)
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
    _check_table(ex_sk.check_select, _select(), SK_SELECT)


def _two(weight=torch.sigmoid, combine="both"):
    def fn(u1, u2, delta):
        a = rearrange(weight(delta), "b c -> b c 1 1")
        if combine == "swap":
            return (1 - a) * u1 + a * u2
        if combine == "first":
            return a * u1
        if combine == "mean":
            return (u1 + u2) / 2
        if combine == "same":
            return a * (u1 + u2)
        if combine == "stack":
            return torch.stack([a * u1, (1 - a) * u2], 1)
        return a * u1 + (1 - a) * u2
    return fn


SK_SELECT_TWO = [
    (_two(combine="swap"), "the branches are swapped"),
    (_two(combine="first"), "b_c · U_2 is missing"),
    (_two(combine="same"), "both branches are weighted by σ(Δ)"),
    (_two(combine="stack"), "you stacked the weighted branches"),
    (_two(weight=lambda d: d), "the sigmoid is missing"),
    (_two(weight=lambda d: d.softmax(1)), "softmax over the channels"),
    (_two(combine="mean"), "averaged the branches"),
    (_two(weight=torch.exp), "e^Δ is not a weight"),
    (lambda u1, u2, delta: torch.sigmoid(delta), "the shape is"),
]


def test_sk_select_two():
    _check_table(ex_sk.check_select_two, _two(), SK_SELECT_TWO)


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
    (_sig(4 / 12 + 0.5), "M = 3, the side of the map"),
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
    (_tokens(dims=(1, 2)), "over the whole sequence"),
    (_tokens(n_minus=0), "divided by N"),
    (_tokens(half=0.0), "+ 1/2 is missing"),
    (_tokens(out="gate"), "that is the gate"),
    (_tokens(out="inv"), "inverse energy 1/E"),
    (_tokens(lam_on=False), "λ is missing"),
]


def test_simam_tokens():
    _check_table(ex_simam.check_simam_tokens, _tokens(), SIMAM_TOKENS)


def _exact(x, lam, sign=1.0, b_sign=1.0, plus=True, stats="others", n_minus=1, lam_on=True, order="wb"):
    m = x.shape[2] * x.shape[3]
    if stats == "channel":
        mu = reduce(x, "b c h w -> b c 1 1", "mean")
        var = reduce((x - mu) ** 2, "b c h w -> b c 1 1", "sum") / (m - 1)
    else:
        mu = (reduce(x, "b c h w -> b c 1 1", "sum") - x) / (m - 1)
        var = (reduce(x**2, "b c h w -> b c 1 1", "sum") - x**2 - (m - 1) * mu**2) / (m - n_minus)
    lam = lam if lam_on else 0.0
    w = sign * 2 * (x - mu) / ((x - mu) ** 2 + 2 * var + 2 * lam)
    b = -0.5 * b_sign * ((x + mu) if plus else (x - mu)) * w
    return (w, b) if order == "wb" else (b, w)


SIMAM_EXACT = [
    (lambda x, lam: _exact(x, lam, sign=-1.0), "swapped labels"),
    (lambda x, lam: _exact(x, lam, b_sign=-1.0), "b_t has the wrong sign"),
    (lambda x, lam: _exact(x, lam, plus=False), "b_t uses t − μ_t"),
    (lambda x, lam: _exact(x, lam, stats="channel"), "official code's statistics"),
    (lambda x, lam: _exact(x, lam, n_minus=2), "divided by M − 2"),
    (lambda x, lam: _exact(x, lam, lam_on=False), "λ is missing"),
    (lambda x, lam: _exact(x, lam, order="bw"), "the pair is (b, w)"),
    (lambda x, lam: _exact(x, lam)[0], "returned one tensor"),
    (lambda x, lam: tuple(t.mean((2, 3)) for t in _exact(x, lam)), "one w_t and one b_t per neuron"),
]


def test_simam_exact_weights():
    _check_table(ex_simam.check_exact_weights, _exact, SIMAM_EXACT)


def test_simam_exact_weights_are_the_minimiser():
    """The checker's reference is the minimum of the energy (2): its gradient vanishes there."""
    torch.manual_seed(0)
    x, lam = torch.randn(2, 3, 4, 5, dtype=torch.float64), 0.05
    w, b = ex_simam._exact_weights(x, lam)
    flat = rearrange(x, "b c h w -> (b c) (h w)")
    for row, (wr, br) in enumerate(zip(rearrange(w, "b c h w -> (b c) (h w)"), rearrange(b, "b c h w -> (b c) (h w)"))):
        for t in range(flat.shape[1]):
            others = torch.cat([flat[row, :t], flat[row, t + 1:]])
            wt, bt = wr[t].clone().requires_grad_(True), br[t].clone().requires_grad_(True)
            e = ((-1 - (wt * others + bt)) ** 2).mean() + (1 - (wt * flat[row, t] + bt)) ** 2 + lam * wt**2
            gw, gb = torch.autograd.grad(e, (wt, bt))
            assert abs(gw) < 1e-10 and abs(gb) < 1e-10


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
    _check_table(ex_simam.check_leave_one_out_energy, _loo, SIMAM_LOO)


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


RIGHT_SHUFFLE = {"se": True, "eca": True, "sk": False, "simam": True}
SUMMARY_SHUFFLE = [
    ({"se": True, "eca": True, "sk": True, "simam": True}, "SK: its branches are 3×3 convolutions"),
    ({"se": True, "eca": False, "sk": False, "simam": True}, "ECA: its 1-D convolution runs along the channel"),
    ({"se": False, "eca": True, "sk": False, "simam": True}, "SE: the squeeze is the mean over all positions"),
    ({"se": True, "eca": True, "sk": False, "simam": False}, "SimAM: the mean and the variance of a channel"),
    ({"se": True, "eca": True}, "expected a dict with keys"),
]


def test_summary_spatial_shuffle():
    _check_table(ex_summary.check_spatial_shuffle, RIGHT_SHUFFLE, SUMMARY_SHUFFLE)


def test_summary_spatial_shuffle_answer_is_what_the_modules_do():
    import attncourse

    torch.manual_seed(0)
    x, order = torch.randn(3, 64, 5, 6), torch.randperm(30)
    shuffle = lambda t: rearrange(rearrange(t, "b c h w -> b c (h w)")[..., order], "b c (h w) -> b c h w", h=5)
    for name, commutes in RIGHT_SHUFFLE.items():
        m = attncourse.create(name, 64)
        assert torch.allclose(m(shuffle(x)), shuffle(m(x)), atol=1e-5) == commutes, name


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
    (_windows("b c (h p1) (w p2) -> b (h w) (p1 p2) c"), "merge the windows into the batch"),
    (_windows("b c (h p1) (w p2) -> (b h w) (p1 p2 c)"), "flattened into one vector"),
    (_windows("b c (h p1) (w p2) -> b (h w) (p1 p2 c)"), "patch layout of the chapter's ViT"),
    (_windows("b c (h p1) (w p2) -> (b h w) c (p1 p2)"), "the channels come before the tokens"),
]


def test_einops_window_tokens():
    _check_table(ex_ep.check_window_tokens, _windows("b c (h p1) (w p2) -> (b h w) (p1 p2) c"), EP_WINDOWS)


EP_HEADS = [
    (lambda x, n: rearrange(x, "b (d n) h w -> b n (h w) d", n=n), "(d heads)"),
    (lambda x, n: rearrange(x, "b (n d) h w -> b n (w h) d", n=n), "(w h) order"),
    (lambda x, n: rearrange(x, "b (n d) h w -> b n d (h w)", n=n), "(B, heads, d, H·W)"),
    (lambda x, n: rearrange(x, "b (n d) h w -> b n h w d", n=n), "not flattened"),
    (lambda x, n: rearrange(x, "b (n d) h w -> b (h w) n d", n=n), "(B, H·W, heads, d)"),
    (lambda x, n: rearrange(x, "b c h w -> b (h w) c"), "not split into heads"),
]


def test_einops_map_heads():
    _check_table(ex_ep.check_map_heads, lambda x, n: rearrange(x, "b (n d) h w -> b n (h w) d", n=n), EP_HEADS)


def _unpatch(pattern, rows_as="h"):
    return lambda t, p, rows: rearrange(t, pattern, **{rows_as: rows}, p1=p, p2=p)


EP_UNPATCH = [
    (_unpatch("b (h w) (c p1 p2) -> b c (h p1) (w p2)"), "(c p1 p2)"),
    (_unpatch("b (h w) (p1 p2 c) -> b c (p1 h) (p2 w)"), "swapped"),
    (_unpatch("b (h w) (p1 p2 c) -> b c (h p1) (w p2)", rows_as="w"), "number of patch rows"),
]


def _conv_unpatch(pattern, rows_as="h"):
    return lambda t, p, rows: rearrange(t, pattern, **{rows_as: rows}, p1=p, p2=p)


EP_CONV_UNPATCH = [
    (_conv_unpatch("b (h w) (p1 p2 c) -> b c (h p1) (w p2)"), "read as (p1 p2 c)"),
    (_conv_unpatch("b (h w) (c p2 p1) -> b c (h p1) (w p2)"), "read as (p2 p1)"),
    (_conv_unpatch("b (w h) (c p1 p2) -> b c (h p1) (w p2)"), "column by column"),
    (_conv_unpatch("b (h w) (c p1 p2) -> b c (p1 h) (p2 w)"), "swapped"),
    (_conv_unpatch("b (h w) (c p1 p2) -> b c (h p1) (w p2)", rows_as="w"), "number of patch rows"),
]


def test_einops_conv_unpatchify():
    right = _conv_unpatch("b (h w) (c p1 p2) -> b c (h p1) (w p2)")
    _check_table(ex_ep.check_conv_unpatchify, right, EP_CONV_UNPATCH)
    # the layout is a strided convolution's: its weight (D, C, p, p) flattened is a linear map on these patches
    img, conv = torch.randn(2, 3, 8, 12), torch.nn.Conv2d(3, 5, 4, stride=4, bias=False)
    patches = rearrange(img, "b c (h p1) (w p2) -> b (h w) (c p1 p2)", p1=4, p2=4)
    torch.testing.assert_close(patches @ conv.weight.reshape(5, -1).T,
                               rearrange(conv(img), "b d h w -> b (h w) d"))
    torch.testing.assert_close(right(patches, 4, 2), img)


def test_einops_unpatchify():
    _check_table(ex_ep.check_unpatchify, _unpatch("b (h w) (p1 p2 c) -> b c (h p1) (w p2)"), EP_UNPATCH)


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
    (lambda q, k: einsum(q, k, "b h i d, b j d -> b i j") / q.shape[-1] ** 0.5, "head axis is missing"),
]


def test_einops_shared_key_scores():
    _check_table(ex_ep.check_shared_key_scores, _scores(), EP_SCORES)


# ---------------------------------------------------------------- the former exercises, kept for old copies

def test_former_checkers_still_accept_their_answers_of_this_revision():
    assert ex_se.check_se_parameters(_se(256, 16)) and ex_se.check_resnet101_se_parameters(sum(n * _se(c, 16) for c, n in R101))
    assert ex_eca.check_kernel_size(9) and ex_eca.check_resnet101_eca_parameters(165)
    assert ex_sk.check_parameters(SK_RIGHT) and ex_summary.check_eca_resnet152_parameters(256)
    assert ex_simam.check_leave_one_out_energy(ex_simam.leave_one_out_energy)
    assert ex_ep.check_unpatchify(_unpatch("b (h w) (p1 p2 c) -> b c (h p1) (w p2)"))


def test_former_checkers_still_accept_their_answers():
    assert ex_se.check_resnet50_se_parameters(2_530_992)
    assert "bias-free" in ex_se.check_resnet50_se_parameters(2_514_944).message
    assert ex_summary.check_eca_resnet50_parameters(86)
    assert ex_summary.check_cross_channel({"se": True, "eca": False, "simam": False})
    assert ex_ep.check_to_tokens(lambda x: rearrange(x, "b c h w -> b (h w) c"))
    assert ex_ep.check_split_heads(lambda x, h: rearrange(x, "b n (h d) -> b h n d", h=h))
    assert ex_ep.check_patchify(lambda x, p: rearrange(x, "b c (h p1) (w p2) -> b (h w) (p1 p2 c)", p1=p, p2=p))
    assert ex_ep.check_attention_scores(lambda q, k: q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5)


@pytest.mark.parametrize("check", [ex_se.check_floor_parameters, ex_se.check_input_placement_parameters,
                                   ex_eca.check_eca_ns_parameters, ex_sk.check_variant_parameters,
                                   ex_sk.check_dilation_saving, ex_simam.check_max_gate,
                                   ex_se.check_se_parameters, ex_eca.check_kernel_size, ex_sk.check_parameters,
                                   ex_summary.check_eca_resnet152_parameters])
def test_a_number_checker_refuses_text_without_raising(check):
    fb = check("twelve")
    assert not fb and fb.attempted and "expected a number" in fb.message
