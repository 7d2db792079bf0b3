"""Part II's exercise checkers: each typical mistake gets its own message, the right answer passes,
a blank answer is "not attempted" without raising.

One table per exercise: (wrong answer, a fragment of the message it must get). The mistakes are
the ones listed above each checker in ``attncourse/exercises/<chapter>.py``.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from einops import einsum, rearrange, reduce

import attncourse
from attncourse.cost import count_parameters
from attncourse.exercises import bam as ex_bam
from attncourse.exercises import cbam as ex_cbam
from attncourse.exercises import coord as ex_coord
from attncourse.exercises import hybrid_summary as ex_sum
from attncourse.exercises import scse as ex_scse

from checker_tables import check_table as _check_table


# --- CBAM -------------------------------------------------------------------------------------

def test_cbam_parameters():
    mlp = 2 * 256 * 16 + 16 + 256
    _check_table(ex_cbam.check_cbam_parameters, mlp + 99, {
        "paper without bias": (mlp + 98, "without a bias"),
        "official form": (mlp + 100, "official code's spatial gate"),
        "BN buffers counted": (mlp + 102, "buffers"),
        "MLP counted twice": (2 * mlp + 99, "count it once"),
        "no MLP biases": (2 * 256 * 16 + 99, "add C/r + C"),
        "no W0 bias": (2 * 256 * 16 + 256 + 99, "W0's bias"),
        "no W1 bias": (2 * 256 * 16 + 16 + 99, "W1's bias"),
        "channel gate only": (mlp, "only the channel gate"),
        "one map": (mlp + 50, "2·7·7 weights, not 7·7"),
        "conv over C channels": (mlp + 49 * 256 + 1, "not the C channels"),
        "conv over 2C channels": (mlp + 2 * 49 * 256 + 1, "not 2C channels"),
        "k = 3": (mlp + 19, "kernel_size"),
    })
    assert count_parameters(attncourse.create("cbam", 256)) == mlp + 99


def _pool(f, how):
    avg, mx = f.mean(1, keepdim=True), f.amax(1, keepdim=True)
    return torch.cat({"avg-max": [avg, mx], "max-avg": [mx, avg], "avg-avg": [avg, avg], "max-max": [mx, mx],
                      "sum-max": [f.sum(1, keepdim=True), mx]}[how], 1)


def _spatial(how="avg-max", *, pad=None, bias=True, act="sigmoid", flip=False, out="map"):
    def fn(f, weight, bias_):
        w = weight.flip(-1, -2) if flip else weight
        p = weight.shape[-1] // 2 if pad is None else pad
        logits = F.conv2d(_pool(f, how), w, bias_ if bias else None, padding=p)
        m = {"sigmoid": torch.sigmoid, "none": lambda t: t,
             "softmax": lambda t: torch.softmax(t.flatten(2), -1).view_as(t)}[act](logits)
        return {"map": lambda: m, "squeezed": lambda: m[:, 0], "product": lambda: m * f}[out]()
    return fn


def test_spatial_map():
    _check_table(ex_cbam.check_spatial_map, _spatial(), {
        "no padding": (_spatial(pad=0), "shrank"),
        "padding 3 for every k": (_spatial(pad=3), "grew"),
        "channel axis dropped": (_spatial(out="squeezed"), "keep the map's channel axis"),
        "product returned": (_spatial(out="product"), "not the product"),
        "max-avg order": (_spatial("max-avg"), "[max; avg]"),
        "no sigmoid": (_spatial(act="none"), "sigmoid σ of eq. (3) is missing"),
        "softmax": (_spatial(act="softmax"), "softmax"),
        "no bias": (_spatial(bias=False), "bias is missing"),
        "sum over channels": (_spatial("sum-max"), "summed over the channels"),
        "mean twice": (_spatial("avg-avg"), "both stacked maps are the mean"),
        "max twice": (_spatial("max-max"), "both stacked maps are the max"),
        "flipped kernel": (_spatial(flip=True), "flipped"),
    })


def _cbam_fn(channel="paper", arrangement="channel-spatial", order="avg-max", spatial=True):
    def fn(f, w0, b0, w1, b1, kw, kb):
        def mlp(d, biases=True, relu=True):
            hidden = d @ w0.T + (b0 if biases else 0)
            return (torch.relu(hidden) if relu else hidden) @ w1.T + (b1 if biases else 0)

        def mc(x):
            avg, mx = reduce(x, "b c h w -> b c", "mean"), reduce(x, "b c h w -> b c", "max")
            s = {"paper": lambda: torch.sigmoid(mlp(avg) + mlp(mx)),
                 "avg-only": lambda: torch.sigmoid(mlp(avg)),
                 "max-only": lambda: torch.sigmoid(mlp(mx)),
                 "sum-first": lambda: torch.sigmoid(mlp(avg + mx)),
                 "sigmoid-each": lambda: torch.sigmoid(mlp(avg)) + torch.sigmoid(mlp(mx)),
                 "bias-once": lambda: torch.sigmoid(                   # W1 applied once to the summed hidden units
                     (torch.relu(avg @ w0.T + b0) + torch.relu(mx @ w0.T + b0)) @ w1.T + b1),
                 "no-bias": lambda: torch.sigmoid(mlp(avg, biases=False) + mlp(mx, biases=False)),
                 "no-relu": lambda: torch.sigmoid(mlp(avg, relu=False) + mlp(mx, relu=False))}[channel]()
            return rearrange(s, "b c -> b c 1 1")

        def ms(x):
            return torch.sigmoid(F.conv2d(_pool(x, order), kw, kb, padding=kw.shape[-1] // 2))

        if arrangement == "channel-spatial":
            f1 = mc(f) * f
            return ms(f1) * f1 if spatial else f1
        if arrangement == "spatial-channel":
            f1 = ms(f) * f
            return mc(f1) * f1
        if arrangement == "parallel":
            return mc(f) * ms(f) * f
        return ms(f) * f                                  # "spatial only"
    return fn


def test_cbam_function():
    _check_table(ex_cbam.check_cbam_function, _cbam_fn(), {
        "plain SE": (_cbam_fn("avg-only", spatial=False), "plain SE"),
        "SE channel gate + spatial": (_cbam_fn("avg-only"), "only average pooling"),
        "max only": (_cbam_fn("max-only"), "only max pooling"),
        "spatial first": (_cbam_fn(arrangement="spatial-channel"), "spatial map first"),
        "parallel": (_cbam_fn(arrangement="parallel"), "parallel"),
        "descriptors summed first": (_cbam_fn("sum-first"), "before the MLP"),
        "sigmoid on each": (_cbam_fn("sigmoid-each"), "sigmoid of each MLP output"),
        "b1 once": (_cbam_fn("bias-once"), "b1 is added once"),
        "no biases": (_cbam_fn("no-bias"), "biases b0 and b1 are missing"),
        "no ReLU": (_cbam_fn("no-relu"), "ReLU"),
        "max-avg spatial": (_cbam_fn(order="max-avg"), "[max; avg]"),
        "no spatial gate": (_cbam_fn(spatial=False), "F' only"),
        "spatial only": (_cbam_fn(arrangement="spatial only"), "spatial gate alone"),
    })


# --- BAM --------------------------------------------------------------------------------------

def test_bam_parameters():
    c, h = 128, 8
    ch, sp = 2 * c * h + h + c, c * h + h + 2 * (9 * h * h + h) + h + 1
    right = ch + sp + 2 * c + 2
    assert count_parameters(attncourse.create("bam", c)) == right
    _check_table(ex_bam.check_bam_parameters, right, {
        "no BN": (ch + sp, "no batch norm at all"),
        "channel BN only": (ch + sp + 2 * c, "spatial branch ends in a BN too"),
        "spatial BN only": (ch + sp + 2, "for each of the C channels"),
        "official layout": (ch + sp + 8 * h, "official code's layout"),
        "BN buffers": (right + 2 * c + 2, "buffers"),
        "channel branch only": (ch + 2 * c, "only the channel branch"),
        "spatial branch only": (sp + 2, "only the spatial branch"),
        "one dilated conv": (right - 9 * h * h - h, "One dilated 3×3 convolution is missing"),
        "9x9 kernels": (right + 2 * 72 * h * h, "dilation spreads them"),
        "no biases": (right - (4 * h + c + 1), "biases are missing"),
    })


def test_spatial_inputs():
    _check_table(ex_bam.check_spatial_inputs, 25, {
        "dense span": (289, "span of the receptive field"),
        "paths": (81, "counts paths"),
        "taps added": (18, "do not add their taps"),
        "one conv": (9, "one dilated 3×3 conv"),
        "side of the span": (17, "side of the span"),
        "one axis": (5, "one axis"),
    })


def _refine(how):
    def fn(f, mc, ms):
        a, b = rearrange(mc, "b c -> b c 1 1"), rearrange(ms, "b h w -> b 1 h w")
        return {
            "right": lambda: f + f * torch.sigmoid(a + b),
            "no residual": lambda: f * torch.sigmoid(a + b),
            "product": lambda: f + f * torch.sigmoid(a * b),
            "no sigmoid": lambda: f + f * (a + b),
            "attention": lambda: torch.sigmoid(a + b).expand_as(f),
            "sigmoid each, summed": lambda: f + f * (torch.sigmoid(a) + torch.sigmoid(b)),
            "sigmoid each, multiplied": lambda: f + f * torch.sigmoid(a) * torch.sigmoid(b),
            "added": lambda: f + torch.sigmoid(a + b),
            "no reshape": lambda: f + f * torch.sigmoid(mc + ms),
        }[how]()
    return fn


def test_bam_refine():
    _check_table(ex_bam.check_bam_refine, _refine("right"), {
        "no residual": (_refine("no residual"), "residual form"),
        "product": (_refine("product"), "with a product"),
        "no sigmoid": (_refine("no sigmoid"), "sigmoid σ of eq. (2) is missing"),
        "attention returned": (_refine("attention"), "you returned the attention"),
        "sigmoid per branch, summed": (_refine("sigmoid each, summed"), "sigmoid of each branch"),
        "sigmoid per branch, multiplied": (_refine("sigmoid each, multiplied"), "as CBAM does"),
        "added to F": (_refine("added"), "multiplies it in"),
        "not reshaped": (_refine("no reshape"), "rearrange(mc, 'b c -> b c 1 1')"),
    })


# --- scSE -------------------------------------------------------------------------------------

def test_scse_parameters():
    c, h = 256, 128
    right = 2 * c * h + h + c + c + 1
    assert count_parameters(attncourse.create("scse", c)) == right
    _check_table(ex_scse.check_scse_parameters, right, {
        "cSE alone": (2 * c * h + h + c, "cSE alone"),
        "sSE without bias": (2 * c * h + h + 2 * c, "has a bias too"),
        "no biases at all": (2 * c * h + c, "No biases at all"),
        "no MLP biases": (2 * c * h + c + 1, "not the biases of W1 and W2"),
        "r = 16": (2 * c * 16 + 16 + 2 * c + 1, "not SE's 16"),
        "no reduction": (2 * c * c + 3 * c + 1, "divides the hidden width"),
        "extra conv": (right + c + 1, "one 1×1 conv, not two"),
    })


def _sse(how):
    def fn(u, w, b):
        q = einsum(u, w, "b c h w, c -> b h w")
        gate = lambda t: rearrange(t, "b h w -> b 1 h w")  # noqa: E731
        return {
            "right": lambda: u * gate(torch.sigmoid(q + b)),
            "no bias": lambda: u * gate(torch.sigmoid(q)),
            "bias after sigmoid": lambda: u * gate(torch.sigmoid(q) + b),
            "channel mean": lambda: u * torch.sigmoid(reduce(u, "b c h w -> b 1 h w", "mean")),
            "positions squeezed": lambda: u * torch.sigmoid(rearrange(einsum(reduce(u, "b c h w -> b c", "mean"), w, "b c, c -> b c") + b, "b c -> b c 1 1")),
            "not summed": lambda: u * torch.sigmoid(u * rearrange(w, "c -> c 1 1") + b),
            "gate broadcast": lambda: gate(torch.sigmoid(q + b)).expand_as(u),
            "gate shape": lambda: gate(torch.sigmoid(q + b)),
            "no sigmoid": lambda: u * gate(q + b),
            "softmax": lambda: u * gate(torch.softmax((q + b).flatten(1), -1).view_as(q)),
        }[how]()
    return fn


def test_sse_function():
    _check_table(ex_scse.check_sse_function, _sse("right"), {
        "no bias": (_sse("no bias"), "bias b_sq of the 1×1 convolution is missing"),
        "bias after sigmoid": (_sse("bias after sigmoid"), "after the sigmoid"),
        "channel mean": (_sse("channel mean"), "averaged over channels"),
        "positions squeezed": (_sse("positions squeezed"), "cSE's squeeze"),
        "channels not summed": (_sse("not summed"), "not summed"),
        "gate broadcast": (_sse("gate broadcast"), "broadcast to u's shape"),
        "gate's shape": (_sse("gate shape"), "the gate's shape"),
        "no sigmoid": (_sse("no sigmoid"), "sigmoid σ is missing"),
        "softmax": (_sse("softmax"), "softmax"),
    })


def test_max_out_value():
    _check_table(ex_scse.check_max_out_value, -0.4, {
        "larger gate": (-1.8, "takes the larger gate"),
        "a gate (0.9)": (0.9, "larger gate itself"),
        "a gate (0.2)": (0.2, "multiply it with u first"),
        "sum": (-2.2, "MICCAI sum"),
        "product": (0.72, "multiplication aggregation"),
        "sequential": (-0.36, "one after the other"),
        "sign lost": (0.4, "sign is lost"),
        "u": (-2, "u unchanged"),
    })


# --- Coordinate Attention ---------------------------------------------------------------------

def test_coord_parameters():
    c, m = 128, 8
    right = 3 * c * m + 3 * m + 2 * c
    assert count_parameters(attncourse.create("coord", c)) == right
    _check_table(ex_coord.check_coord_parameters, right, {
        "no floor": (3 * c * 4 + 3 * 4 + 2 * c, "m = C/r = 4"),
        "no BN": (right - 2 * m, "batch norm after F1 is missing"),
        "BN buffers": (right + 2 * m, "buffers"),
        "BN over C": (right - 2 * m + 2 * c, "not on the C input channels"),
        "no biases": (right - m - 2 * c, "biases are missing"),
        "one output conv": (2 * c * m + 3 * m + c, "two separate 1×1 convolutions"),
        "SE": (2 * c * m + m + c, "SE block"),
    })


def _strips(how):
    def fn(x):
        z_h, z_w = reduce(x, "b c h w -> b c h", "mean"), reduce(x, "b c h w -> b c w", "mean")
        return {
            "right": lambda: torch.cat([z_h, z_w], dim=2),
            "tuple": lambda: (z_h, z_w),
            "trailing 1": lambda: torch.cat([z_h, z_w], dim=2)[..., None],
            "wrong axis": lambda: torch.cat([x.mean(2), x.mean(3)], dim=2),
            "sums": lambda: torch.cat([x.sum(3), x.sum(2)], dim=2),
            "maxima": lambda: torch.cat([x.amax(3), x.amax(2)], dim=2),
            "SE": lambda: reduce(x, "b c h w -> b c", "mean"),
        }[how]()
    return fn


def test_pool_strips():
    _check_table(ex_coord.check_pool_strips, _strips("right"), {
        "tuple": (_strips("tuple"), "pieces"),
        "trailing 1": (_strips("trailing 1"), "drop the trailing 1"),
        "wrong axis / swapped": (_strips("wrong axis"), "column means come first"),
        "sums": (_strips("sums"), "these are sums"),
        "maxima": (_strips("maxima"), "these are maxima"),
        "SE's squeeze": (_strips("SE"), "SE's squeeze"),
    })


def test_split_bn_values():
    B, H, W = 4, 7, 5
    _check_table(ex_coord.check_split_bn_values, B * W, {
        "shared BN": (B * (H + W), "module's shared batch norm"),
        "rows": (B * H, "f^h's part"),
        "one image": (W, "one image; in training"),
        "one image's rows": (H, "one image's rows"),
        "full map": (B * H * W, "full H × W map"),
        "SE's vector": (B, "SE's pooled vector"),
        "all channels": (B * W * 8, "each of the m hidden channels"),
    })


# --- Part II side by side ---------------------------------------------------------------------

def test_cheapest():
    counts = {n: count_parameters(attncourse.create(n, 128)) for n in ["cbam", "bam", "scse", "coord"]}
    assert min(counts, key=counts.get) == "cbam" and counts["cbam"] == 2283
    _check_table(ex_sum.check_cheapest, ("cbam", 2283), {
        "not a pair": ("cbam", "expected a tuple"),
        "not a string": ((3, 2283), "should be a string"),
        "capitalised": (("CBAM", 2283), "registered name"),
        "class name": (("CoordAttention", 3352), "'coord' for Coordinate Attention"),
        "SE": (("se", 2184), "channel-only baseline"),
        "coord": (("coord", 3352), "floor m = max(8, C // 32) = 8"),
        "bam": (("bam", 4651), "dilated 3×3"),
        "scse": (("scse", 16705), "r = 2"),
        "unknown": (("eca", 3), "is not one of"),
        "official count": (("cbam", 2284), "official form"),
        "no conv bias": (("cbam", 2282), "has a bias"),
        "no MLP biases": (("cbam", 2283 - 8 - 128), "C/16 + C"),
        "channel gate only": (("cbam", 2283 - 99), "channel gate alone"),
        "other count": (("cbam", 2000), "recount"),
    })
