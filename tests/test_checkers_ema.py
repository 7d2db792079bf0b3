"""The EMA chapter's exercise checkers: each typical mistake gets its own message, the right answer
passes, a blank answer is "not attempted" without raising.

One table per exercise: (wrong answer, a fragment of the message it must get). The mistakes are
the ones listed above each checker in ``attncourse/exercises/ema.py``.
"""

from __future__ import annotations

import torch
from einops import einsum, rearrange, reduce
from torch import nn

from attncourse.cost import count_parameters
from attncourse.exercises import ema as ex
from attncourse.hybrid.ema import EMA

from checker_tables import check_table as _check_table


def test_ema_parameters():
    c, C, G = 16, 512, 32
    right = (c * c + c) + (9 * c + c) + 2 * c
    depthwise = EMA(C)
    depthwise.conv3x3 = nn.Conv2d(c, c, 3, padding=1, groups=c)   # the exercise's variant
    assert right == count_parameters(depthwise) == 464
    assert count_parameters(EMA(C)) == 10 * c * c + 4 * c
    _check_table(ex.check_ema_parameters, right, {
        "dense 3x3": (10 * c * c + 4 * c, "EMA(512) itself"),
        "1x1 depthwise too": (2 * c + 10 * c + 2 * c, "still maps c channels to c"),
        "no depthwise bias": (right - c, "has a bias too"),
        "one shared filter": (right - 9 * c + 9, "not one filter shared"),
        "taps forgotten": (right - 8 * c, "9 weights per channel"),
        "C instead of c": ((C * C + C) + (9 * C + C) + 2 * C, "c = C/G = 16"),
        "weights per group": (G * right, "share"),
        "GN forgotten": (right - 2 * c, "γ and β (c each) are missing"),
        "GN over C": (right - 2 * c + 2 * C, "not on all C"),
    })


def _cross(layout="b (g c) h w", pool="mean", norm="softmax", swap=True, sigmoid=False, over="group", fold=False,
           where="channels"):
    """A cross_spatial_grouped answer, right or with one mistake."""
    def fn(x1, x2, groups):
        t1, t2 = (rearrange(t, f"{layout} -> (b g) c h w", g=groups) for t in (x1, x2))
        if where == "positions":
            s1 = torch.softmax(t1.flatten(2), dim=2).reshape(t1.shape)
            s2 = torch.softmax(t2.flatten(2), dim=2).reshape(t2.shape)
            m = (s1 * t2).sum(1) + (s2 * t1).sum(1)
        else:
            p1, p2 = reduce(t1, "n c h w -> n c", pool), reduce(t2, "n c h w -> n c", pool)
            if norm == "softmax" and over == "all":     # softmax over all C channels of an image
                p1, p2 = (rearrange(rearrange(p, "(b g) c -> b (g c)", g=groups).softmax(1), "b (g c) -> (b g) c",
                                    g=groups) for p in (p1, p2))
            elif norm == "softmax":
                p1, p2 = p1.softmax(1), p2.softmax(1)
            elif norm == "sigmoid":
                p1, p2 = p1.sigmoid(), p2.sigmoid()
            a, b = (t2, t1) if swap else (t1, t2)
            m = einsum(p1, a, "n c, n c h w -> n h w") + einsum(p2, b, "n c, n c h w -> n h w")
        if sigmoid:
            m = m.sigmoid()
        return m if fold else rearrange(m, "(b g) h w -> b g h w", g=groups)

    return fn


def test_cross_spatial():
    _check_table(ex.check_cross_spatial, _cross(), {
        "softmax over all C": (_cross(over="all"), "over all C channels of the image"),
        "interleaved groups": (_cross(layout="b (c g) h w"), "every G-th channel"),
        "groups left folded": (_cross(fold=True), "still folded into the batch axis"),
        "one map per image": (lambda x1, x2, g: _cross()(x1, x2, 1)[:, 0], "one map per image"),
        "own descriptor": (_cross(swap=False), "own descriptor"),
        "no softmax": (_cross(norm="none"), "without the softmax"),
        "sigmoid weights": (_cross(norm="sigmoid"), "a sigmoid replaces the softmax"),
        "softmax over positions": (_cross(where="positions"), "softmax runs over the positions"),
        "max pooling": (_cross(pool="max"), "maxima"),
        "sum pooling": (_cross(pool="sum"), "sums over H × W"),
        "gate returned": (_cross(sigmoid=True), "that is σ(m)"),
        "something else": (lambda x1, x2, g: rearrange(x1, "b (g c) h w -> b g c h w", g=g).sum(2), "differ"),
        "crashes": (lambda x1, x2, g: x1 @ x2, "raised"),
    })


def test_cross_spatial_agrees_with_the_module():
    """The exercise's right answer, on the module's two branches, is the map the module gates with."""
    m = EMA(8, factor=2).double()
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn_like(p))
    x = torch.randn(3, 8, 5, 6, dtype=torch.float64)
    seen = {}
    m.gate.register_forward_hook(lambda mod, inp, out: seen.update(logits=inp[0]))
    g = x.reshape(6, 4, 5, 6)
    z_h, z_w = g.mean(3, keepdim=True), g.mean(2, keepdim=True).transpose(2, 3)
    a = m.conv1x1(torch.cat([z_h, z_w], 2))
    x1 = m.gn(g * a[:, :, :5].sigmoid() * a[:, :, 5:].transpose(2, 3).sigmoid())
    x2 = m.conv3x3(g)
    m(x)
    unfold = lambda t: rearrange(t, "(b g) c h w -> b (g c) h w", g=2)   # noqa: E731
    torch.testing.assert_close(rearrange(seen["logits"], "(b g) 1 h w -> b g h w", g=2),
                               _cross()(unfold(x1), unfold(x2), 2))


def test_input_dependent():
    B, C, H, W, G = 5, 48, 7, 6, 4
    c = C // G
    right = B * G * c
    assert right == 240
    m = EMA(C, factor=G)
    with torch.no_grad():
        m.gn.bias.copy_(torch.randn(c))
    seen = []
    m.softmax.register_forward_hook(lambda mod, inp, out: seen.append(out))
    for _ in range(2):
        m(torch.randn(B, C, H, W))
    s1_a, s2_a, s1_b, s2_b = seen                       # the module computes s1 first, then s2
    assert s1_a.numel() == s2_a.numel() == right
    assert torch.allclose(s1_a, s1_b) and (s2_a - s2_b).abs().flatten().gt(1e-6).sum() == right
    _check_table(ex.check_input_dependent, right, {
        "s1 counted": (2 * right, "counts s1 too"),
        "none": (0, "s2 is the softmax"),
        "one image": (G * c, "That is one image (G · c"),
        "one image, both": (2 * G * c, "one image's s1 and s2"),
        "one per group": (B * G, "one number per image and group"),
        "two per group": (2 * B * G, "one number per descriptor"),
        "one group": (c, "one group's s2"),
        "the gate": (B * G * H * W, "the gate σ(m)"),
        "the output": (B * C * H * W, "the size of the output"),
    })
