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
from attncourse.exercises import scse as ex_scse

from checker_tables import check_table as _check_table


# --- CBAM -------------------------------------------------------------------------------------

def test_cbam_unshared_parameters():
    mlp = 2 * 256 * 16 + 16 + 256
    right = 2 * mlp + 99
    _check_table(ex_cbam.check_unshared_parameters, right, {
        "shared MLP (cbam_parameters(256))": (mlp + 99, "count the MLP twice"),
        "no biases at all": (2 * 2 * 256 * 16 + 98, "no biases at all, eqs. (2)"),
        "shared, no biases (8,290)": (8_290, "one shared MLP and no biases"),
        "r forgotten": (2 * (2 * 256 * 256 + 512) + 99, "as if r were 1"),
        "shared, r forgotten (131,683)": (131_683, "(r forgotten)"),
        "no MLP biases": (2 * 2 * 256 * 16 + 99, "The MLPs' biases are missing"),
        "one MLP's biases": (mlp + 2 * 256 * 16 + 99, "biases of one MLP only"),
        "no W0 biases": (2 * (2 * 256 * 16 + 256) + 99, "W0's biases"),
        "no W1 biases": (2 * (2 * 256 * 16 + 16) + 99, "W1's biases"),
        "no conv bias": (right - 1, "convolution's bias is missing"),
        "official form": (right + 1, "official code's spatial gate"),
        "BN buffers counted": (right + 3, "buffers"),
        "spatial gate twice": (right + 99, "one spatial gate"),
        "channel gate only": (2 * mlp, "only the channel gate"),
        "one map": (2 * mlp + 50, "2·7·7 weights, not 7·7"),
        "conv over C channels": (2 * mlp + 49 * 256 + 1, "not the C channels"),
        "conv over 2C channels": (2 * mlp + 2 * 49 * 256 + 1, "not 2C channels"),
        "k = 3": (2 * mlp + 19, "kernel_size"),
    })
    from attncourse.hybrid.cbam import ChannelAttention, SpatialAttention

    assert count_parameters(attncourse.create("cbam", 256)) == mlp + 99                  # the shared module
    assert 2 * count_parameters(ChannelAttention(256)) + count_parameters(SpatialAttention()) == right


def _pool_last(f, how, axis=-1):
    avg, mx = f.mean(axis, keepdim=True), f.amax(axis, keepdim=True)
    return {"avg-max": [avg, mx], "max-avg": [mx, avg], "avg-avg": [avg, avg], "max-max": [mx, mx],
            "sum-max": [f.sum(axis, keepdim=True), mx]}[how]


def _spatial_last(how="avg-max", *, pad=None, bias=True, act="sigmoid", flip=False, out="map", layout="right"):
    """A spatial_map_last with one mistake: f is (B, H, W, C)."""
    def fn(f, weight, bias_):
        w = weight.flip(-1, -2) if flip else weight
        p = weight.shape[-1] // 2 if pad is None else pad
        if layout == "axis 1":                                  # PyTorch's channel axis, H here
            x = torch.cat(_pool_last(f, how, axis=1), 1)       # (B, 2, W, C)
            return F.conv2d(x, w, bias_, padding=p).sigmoid()
        if layout == "stacked first":                           # the two maps on a new leading axis
            x = torch.stack([f.mean(-1), f.amax(-1)])          # (2, B, H, W)
            return rearrange(F.conv2d(x, w, bias_, padding=p).sigmoid(), "b 1 h w -> b h w 1")
        if layout == "stacked last":                            # channels-last maps straight into conv2d
            x = torch.cat(_pool_last(f, how), -1)               # (B, H, W, 2)
            return F.conv2d(x, w, bias_, padding=p).sigmoid()
        pattern = {"right": "b h w two -> b two h w", "swapped": "b h w two -> b two w h",
                   "transposed": "b h w two -> b two w h", "first": "b h w two -> b two h w"}[layout]
        x = rearrange(torch.cat(_pool_last(f, how), -1), pattern)
        logits = F.conv2d(x, w, bias_ if bias else None, padding=p)
        m = {"sigmoid": torch.sigmoid, "none": lambda t: t,
             "softmax": lambda t: torch.softmax(t.flatten(2), -1).view_as(t)}[act](logits)
        if layout == "first":
            return m                                            # (B, 1, H, W), PyTorch's layout
        back = "b 1 w h -> b h w 1" if layout == "transposed" else "b 1 h w -> b h w 1"
        m = rearrange(m, back)                                  # "swapped" leaves it (B, W, H, 1)
        return {"map": lambda: m, "squeezed": lambda: m[..., 0], "product": lambda: m * f}[out]()
    return fn


def test_spatial_map_last():
    _check_table(ex_cbam.check_spatial_map_last, _spatial_last(), {
        "no padding": (_spatial_last(pad=0), "shrank"),
        "padding 3 for every k": (_spatial_last(pad=3), "grew"),
        "PyTorch's layout": (_spatial_last(layout="first"), "channels-first layout"),
        "channel axis dropped": (_spatial_last(out="squeezed"), "keep the map's channel axis"),
        "H and W swapped": (_spatial_last(layout="swapped"), "H and W are swapped"),
        "kernel transposed": (_spatial_last(layout="transposed"), "acted transposed"),
        "product returned": (_spatial_last(out="product"), "not the product"),
        "pooled over axis 1": (_spatial_last(layout="axis 1"), "pooled over axis 1"),
        "maps stacked on a new first axis": (_spatial_last(layout="stacked first"), "stack the mean and the max"),
        "channels-last maps into conv2d": (_spatial_last(layout="stacked last"), "conv2d reads its input"),
        "max-avg order": (_spatial_last("max-avg"), "[max; avg]"),
        "no sigmoid": (_spatial_last(act="none"), "sigmoid σ of eq. (3) is missing"),
        "softmax": (_spatial_last(act="softmax"), "softmax"),
        "no bias": (_spatial_last(bias=False), "bias is missing"),
        "sum over channels": (_spatial_last("sum-max"), "summed over the channels"),
        "mean twice": (_spatial_last("avg-avg"), "both stacked maps are the mean"),
        "max twice": (_spatial_last("max-max"), "both stacked maps are the max"),
        "flipped kernel": (_spatial_last(flip=True), "flipped"),
    })


def _bn_eval(t, bn, how="eval"):
    mu, v, gamma, beta = bn
    if how == "batch":
        mu, v = t.mean((0, 2, 3)), t.var((0, 2, 3), unbiased=False)
    if how == "var":
        return gamma * (t - mu) / (v + 1e-5) + beta
    return gamma * (t - mu) / torch.sqrt(v + (0.0 if how == "no-eps" else 1e-5)) + beta


def _spatial_first_fn(channel="paper", arrangement="spatial-channel", order="max-avg", bn="eval"):
    """A cbam_spatial_first with one mistake."""
    def fn(f, w0, b0, w1, b1, kw, stats):
        def mlp(d, relu=True):
            hidden = d @ w0.T + b0
            return (torch.relu(hidden) if relu else hidden) @ w1.T + b1

        def mc(x):
            avg, mx = reduce(x, "b c h w -> b c", "mean"), reduce(x, "b c h w -> b c", "max")
            s = {"paper": lambda: torch.sigmoid(mlp(avg) + mlp(mx)),
                 "avg-only": lambda: torch.sigmoid(mlp(avg)),
                 "max-only": lambda: torch.sigmoid(mlp(mx)),
                 "sum-first": lambda: torch.sigmoid(mlp(avg + mx)),
                 "sigmoid-each": lambda: torch.sigmoid(mlp(avg)) + torch.sigmoid(mlp(mx)),
                 "no-relu": lambda: torch.sigmoid(mlp(avg, relu=False) + mlp(mx, relu=False))}[channel]()
            return rearrange(s, "b c -> b c 1 1")

        def ms(x):
            avg, mx = x.mean(1, keepdim=True), x.amax(1, keepdim=True)
            t = F.conv2d(torch.cat([mx, avg] if order == "max-avg" else [avg, mx], 1), kw, padding=kw.shape[-1] // 2)
            return torch.sigmoid(t if bn is None else _bn_eval(t, stats, bn))

        if arrangement == "spatial-channel":
            f1 = ms(f) * f
            return mc(f1) * f1
        if arrangement == "channel-spatial":
            f1 = mc(f) * f
            return ms(f1) * f1
        if arrangement == "parallel":
            return mc(f) * ms(f) * f
        if arrangement == "spatial only":
            return ms(f) * f
        return mc(f) * f                                          # "channel only"
    return fn


def test_spatial_first():
    _check_table(ex_cbam.check_spatial_first, _spatial_first_fn(), {
        "channel first": (_spatial_first_fn(arrangement="channel-spatial"), "channel map first"),
        "parallel": (_spatial_first_fn(arrangement="parallel"), "parallel"),
        "avg-max order": (_spatial_first_fn(order="avg-max"), "stacked [avg; max]"),
        "no batch norm": (_spatial_first_fn(bn=None), "batch norm is missing"),
        "batch statistics": (_spatial_first_fn(bn="batch"), "batch's own mean"),
        "divided by the variance": (_spatial_first_fn(bn="var"), "divided by the variance"),
        "no eps": (_spatial_first_fn(bn="no-eps"), "ε is missing"),
        "SE channel gate": (_spatial_first_fn("avg-only"), "only average pooling"),
        "max only": (_spatial_first_fn("max-only"), "only max pooling"),
        "descriptors summed first": (_spatial_first_fn("sum-first"), "before the MLP"),
        "sigmoid on each": (_spatial_first_fn("sigmoid-each"), "sigmoid of each MLP output"),
        "no ReLU": (_spatial_first_fn("no-relu"), "ReLU"),
        "spatial gate only": (_spatial_first_fn(arrangement="spatial only"), "F' = M_s(F) ⊗ F only"),
        "channel gate only": (_spatial_first_fn(arrangement="channel only"), "channel gate alone"),
    })


# --- BAM --------------------------------------------------------------------------------------

def test_three_conv_parameters():
    c, m = 192, 12
    ch, sp = 2 * c * m + m + c, c * m + m + 3 * (9 * m * m + m) + m + 1
    right = ch + sp + 2 * c + 2
    two_convs = right - (9 * m * m + m)
    assert count_parameters(attncourse.create("bam", c)) == two_convs        # the module: two dilated convs
    _check_table(ex_bam.check_three_conv_parameters, right, {
        "two dilated convs (bam_parameters(192))": (two_convs, "bam_parameters(192)"),
        "third conv without bias": (right - m, "third dilated convolution has a bias"),
        "third conv as 9m": (two_convs + 9 * m + m, "9·m·m weights"),
        "no BN": (ch + sp, "no batch norm at all"),
        "channel BN only": (ch + sp + 2 * c, "spatial branch ends in a BN too"),
        "spatial BN only": (ch + sp + 2, "for each of the C channels"),
        "official layout": (ch + sp + 10 * m, "official code's layout"),
        "BN buffers": (right + 2 * c + 2, "buffers"),
        "channel branch only": (ch + 2 * c, "only the channel branch"),
        "spatial branch only": (sp + 2, "only the spatial branch"),
        "9x9 kernels": (right + 3 * 72 * m * m, "dilation spreads them"),
        "no biases": (right - (5 * m + c + 1), "biases are missing"),
        "r forgotten": (2 * c * c + c + c + c * c + c + 3 * (9 * c * c + c) + c + 1 + 2 * c + 2, "as if r were 1"),
    })


def test_border_inputs():
    _check_table(ex_bam.check_border_inputs, 12, {
        "far from the border": (25, "far from the border"),
        "no dilation": (20, "without dilation"),
        "span clipped": (150, "clipped to the map"),
        "span": (289, "span of the receptive field"),
        "paths": (81, "counts paths"),
        "one conv": (6, "one dilated 3×3 convolution"),
        "rows for both axes": (9, "row 1's count"),
        "columns for both axes": (16, "column 6's count"),
        "columns not clipped": (15, "but not the columns"),
        "axes added": (7, "multiply them"),
        "rows only": (3, "rows only"),
        "columns only": (4, "columns only"),
        "one axis": (5, "along one axis"),
        "side of the span": (17, "side of the span"),
    })


def _grad(how):
    """A spatial_grad with one mistake."""
    def fn(f, mc, ms, g, combine):
        a_mc, a_ms = rearrange(mc, "b c -> b c 1 1"), rearrange(ms, "b h w -> b 1 h w")
        s = torch.sigmoid(a_mc + a_ms if combine == "sum" else a_mc * a_ms)
        ds = s if how == "sigma" else s * (1 - s)
        factor = a_mc if (combine == "product" and how not in ("no mc", "ms")) or how == "always mc" else 1.0
        if how == "ms" and combine == "product":
            factor = a_ms
        per = g * (1 if how == "no f" else f) * ds * factor
        if how == "residual":
            per = g * (1 + f * ds) * factor
        return {"per channel": lambda: per, "positions": lambda: reduce(per, "b c h w -> b c", "sum"),
                "keepdim": lambda: reduce(per, "b c h w -> b 1 h w", "sum"),
                "mean": lambda: reduce(per, "b c h w -> b h w", "mean")}.get(how, lambda: reduce(per, "b c h w -> b h w", "sum"))()
    return fn


def test_spatial_grad():
    _check_table(ex_bam.check_spatial_grad, _grad("right"), {
        "not summed over channels": (_grad("per channel"), "not summed over the channels"),
        "summed over positions": (_grad("positions"), "summed over the positions"),
        "channel axis kept": (_grad("keepdim"), "drop the channel axis"),
        "mean over channels": (_grad("mean"), "mean over the channels"),
        "sigma for its derivative": (_grad("sigma"), "its derivative"),
        "no M_c for the product": (_grad("no mc"), "multiply by M_c"),
        "M_c for the sum": (_grad("always mc"), "belongs to the product only"),
        "M_s as the factor": (_grad("ms"), "not M_s"),
        "no F": (_grad("no f"), "factor F is missing"),
        "residual kept": (_grad("residual"), "residual's 1"),
    })


# --- scSE -------------------------------------------------------------------------------------

def test_concat_parameters():
    c, h = 256, 128
    base = 2 * c * h + h + c + c + 1
    assert count_parameters(attncourse.create("scse", c)) == base                    # sum / max / product
    proj = 2 * c * c + c
    right = base + proj
    assert right == base + count_parameters(torch.nn.Conv2d(2 * c, c, 1))
    _check_table(ex_scse.check_concat_parameters, right, {
        "no projection (scse_parameters(256))": (base, "scse_parameters(256)"),
        "projection without bias": (base + 2 * c * c, "projection's bias is missing"),
        "projection from C": (base + c * c + c, "not C: 2C·C weights"),
        "projection to 2C": (base + 4 * c * c + 2 * c, "maps back to C channels, not 2C"),
        "one weight per input channel": (base + 3 * c, "a weight for every pair"),
        "sSE forgotten": (right - c - 1, "sSE branch is missing"),
        "sSE without bias": (right - 1, "has a bias too"),
        "r = 16": (2 * c * 16 + 16 + c + c + 1 + proj, "not SE's 16"),
        "no reduction": (2 * c * c + 3 * c + 1 + proj, "divides the hidden width"),
        "no biases at all": (2 * c * h + c + 2 * c * c, "No biases at all"),
        "no MLP biases": (right - h - c, "biases of W1 and W2 are missing"),
    })


def _gsse(how):
    """A grouped_sse with one mistake."""
    def fn(u, w, b, groups):
        uu = rearrange(u, "b (k g) h w -> b g k h w" if how == "interleaved" else "b (g k) h w -> b g k h w", g=groups)
        ww = rearrange(w, "(k g) -> g k" if how == "interleaved" else "(g k) -> g k", g=groups)
        bb = rearrange(b, "g -> 1 g 1 1")
        if how == "all channels":
            q = rearrange(einsum(u, w, "b c h w, c -> b h w"), "b h w -> b 1 h w") + bb
        elif how == "mean":
            q = reduce(uu, "b g k h w -> b g h w", "mean") + bb
        else:
            q = einsum(uu, ww, "b g k h w, g k -> b g h w") + (0 if how == "no bias" else bb)
        gate = {"no sigmoid": lambda: q, "bias after": lambda: torch.sigmoid(q) + bb,
                "softmax": lambda: torch.softmax(q.flatten(2), -1).view_as(q)}.get(how, lambda: torch.sigmoid(q))()
        gate = rearrange(gate, "b g h w -> b g 1 h w")
        if how == "per channel":
            gate = torch.sigmoid(uu * rearrange(ww, "g k -> 1 g k 1 1") + rearrange(b, "g -> 1 g 1 1 1"))
        if how == "gates":
            return gate[:, :, 0]
        if how == "unmerged":
            return uu * gate
        out = gate.expand_as(uu) if how == "broadcast" else uu * gate
        return rearrange(out, "b g k h w -> b (k g) h w" if how == "interleaved" else "b g k h w -> b (g k) h w")
    return fn


def test_grouped_sse():
    _check_table(ex_scse.check_grouped_sse, _gsse("right"), {
        "interleaved groups": (_gsse("interleaved"), "interleaved"),
        "sum over all channels": (_gsse("all channels"), "sums over all C channels"),
        "mean per group": (_gsse("mean"), "averaged the channels of each group"),
        "not summed": (_gsse("per channel"), "not summed"),
        "no bias": (_gsse("no bias"), "bias b_g is missing"),
        "bias after sigmoid": (_gsse("bias after"), "after the sigmoid"),
        "no sigmoid": (_gsse("no sigmoid"), "sigmoid σ is missing"),
        "softmax": (_gsse("softmax"), "softmax"),
        "gates returned": (_gsse("gates"), "one gate per group"),
        "gates broadcast": (_gsse("broadcast"), "broadcast to u's shape"),
        "group axis kept": (_gsse("unmerged"), "merge the group axis"),
    })
    # with one group it is the chapter's SpatialSE
    from attncourse.hybrid.scse import SpatialSE

    m = SpatialSE(6).double()
    u = torch.randn(3, 6, 5, 4, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(_gsse("right")(u, m.squeeze.weight[0, :, 0, 0], m.squeeze.bias, 1), m(u))


def test_max_out_value():
    _check_table(ex_scse.check_max_out_value, -0.4, {
        "larger gate": (-1.8, "takes the larger gate"),
        "a gate (0.9)": (0.9, "larger gate itself"),
        "a gate (0.2)": (0.2, "multiply it with u first"),
        "gates multiplied": (0.18, "multiplies the two gates"),
        "sum": (-2.2, "MICCAI sum"),
        "product": (0.72, "multiplication aggregation"),
        "sequential": (-0.36, "one after the other"),
        "sign lost": (0.4, "sign is lost"),
        "u": (-2, "u unchanged"),
    })


# --- Coordinate Attention ---------------------------------------------------------------------

def test_coord_unshared_parameters():
    c, m = 128, 8
    shared = 3 * c * m + 3 * m + 2 * c
    assert count_parameters(attncourse.create("coord", c)) == shared
    right = shared + c * m + m + 2 * m
    ca = attncourse.create("coord", c)                     # one more F1 and one more BN than the module
    assert right == count_parameters(ca) + count_parameters(ca.conv1) + count_parameters(ca.bn)
    _check_table(ex_coord.check_unshared_parameters, right, {
        "shared module (coord_parameters(128))": (shared, "coord_parameters(128)"),
        "one shared BN": (right - 2 * m, "own batch norm too"),
        "one shared F1": (right - c * m - m, "own F1 too"),
        "no floor": (2 * (c * 4 + 4 + 8) + 2 * (4 * c + c), "m = C/r = 4"),
        "r forgotten": (2 * (c * c + c + 2 * c) + 2 * (c * c + c), "as if r were 1"),
        "no BN": (right - 4 * m, "batch norms are missing"),
        "BN buffers": (right + 4 * m, "buffers"),
        "BN over C": (right - 4 * m + 4 * c, "not on the C input"),
        "no biases": (right - 2 * m - 2 * c, "biases are missing"),
        "one output conv": (right - m * c - c, "two separate 1×1 convolutions"),
        "SE": (2 * c * m + m + c, "SE block"),
    })


def _band(how):
    """A band_strips with one mistake."""
    def fn(x, s):
        rows = "b c (s h) w -> b c h" if how == "interleaved" else "b c (h s) w -> b c h"
        cols = "b c h (s w) -> b c w" if how == "interleaved" else "b c h (w s) -> b c w"
        op = {"sums": "sum", "maxima": "max"}.get(how, "mean")
        if how == "no s":
            z_h, z_w = reduce(x, "b c h w -> b c h", "mean"), reduce(x, "b c h w -> b c w", "mean")
        elif how == "s bands":
            z_h = reduce(x, "b c (h k) w -> b c h", "mean", h=s)
            z_w = reduce(x, "b c h (w k) -> b c w", "mean", w=s)
        elif how == "subsampled":
            z_h, z_w = reduce(x[:, :, ::s], "b c h w -> b c h", "mean"), reduce(x[:, :, :, ::s], "b c h w -> b c w", "mean")
        else:
            z_h, z_w = reduce(x, rows, op, s=s), reduce(x, cols, op, s=s)
        out = torch.cat([z_w, z_h] if how == "swapped" else [z_h, z_w], dim=2)
        return {"tuple": lambda: (z_h, z_w), "trailing 1": lambda: out[..., None],
                "SE": lambda: reduce(x, "b c h w -> b c", "mean")}.get(how, lambda: out)()
    return fn


def test_band_strips():
    _check_table(ex_coord.check_band_strips, _band("right"), {
        "interleaved bands": (_band("interleaved"), "interleaved"),
        "s ignored": (_band("no s"), "the module's strip"),
        "s bands": (_band("s bands"), "you made s bands"),
        "one row per band": (_band("subsampled"), "one row (column) per band"),
        "columns first": (_band("swapped"), "column bands come first"),
        "sums": (_band("sums"), "these are sums"),
        "maxima": (_band("maxima"), "these are maxima"),
        "tuple": (_band("tuple"), "pieces"),
        "trailing 1": (_band("trailing 1"), "drop the trailing 1"),
        "SE's squeeze": (_band("SE"), "SE's squeeze"),
    })
    # with s = 1 it is the chapter's strip [z^h, z^w]
    x = torch.randn(3, 5, 8, 12, dtype=torch.float64)
    torch.testing.assert_close(_band("right")(x, 1), torch.cat([x.mean(3), x.mean(2)], dim=2))


def test_split_bn_values():
    B, H, W = 4, 7, 5
    _check_table(ex_coord.check_split_bn_values, B * W, {
        "shared BN": (B * (H + W), "module's shared batch norm"),
        "rows": (B * H, "f^h's part"),
        "one image": (W, "one image; in training"),
        "one image's rows": (H, "one image's rows"),
        "one image, all channels": (W * 8, "in all m hidden channels"),
        "full map": (B * H * W, "full H × W map"),
        "SE's vector": (B, "SE's pooled vector"),
        "all channels": (B * W * 8, "each of the m hidden channels"),
    })
