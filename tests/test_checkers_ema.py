"""The EMA chapter's exercise checkers: each typical mistake gets its own message, the right answer
passes, a blank answer is "not attempted" without raising.

One table per exercise: (wrong answer, a fragment of the message it must get). The mistakes are
the ones listed above each checker in ``attncourse/exercises/ema.py``.
"""

from __future__ import annotations

import torch
from einops import einsum, reduce

from attncourse.cost import count_parameters
from attncourse.exercises import ema as ex
from attncourse.hybrid.ema import EMA

from checker_tables import check_table as _check_table


def test_ema_parameters():
    c, C, G = 16, 512, 32
    right = 10 * c * c + 4 * c
    assert right == count_parameters(EMA(512)) == 2624
    _check_table(ex.check_ema_parameters, right, {
        "C instead of c": (10 * C * C + 4 * C, "c = C/G = 16"),
        "weights per group": (G * right, "share"),
        "3x3 as c^2": (2 * c * c + 4 * c, "9 taps"),
        "2c missing": (10 * c * c + 2 * c, "2c are missing"),
        "weights only": (10 * c * c, "Only the weights"),
        "GN over C": (10 * c * c + 2 * c + 2 * C, "not on all C"),
    })


def _cross(pool="mean", norm="softmax", swap=True, sigmoid=False, keep=False, where="channels"):
    def fn(x1, x2):
        if where == "positions":
            s1 = torch.softmax(x1.flatten(2), dim=2).reshape(x1.shape)
            s2 = torch.softmax(x2.flatten(2), dim=2).reshape(x2.shape)
            return (s1 * x2).sum(1) + (s2 * x1).sum(1)
        p1 = reduce(x1, "n c h w -> n c", pool)
        p2 = reduce(x2, "n c h w -> n c", pool)
        if norm == "softmax":
            p1, p2 = p1.softmax(1), p2.softmax(1)
        elif norm == "sigmoid":
            p1, p2 = p1.sigmoid(), p2.sigmoid()
        a, b = (x2, x1) if swap else (x1, x2)
        m = einsum(p1, a, "n c, n c h w -> n h w") + einsum(p2, b, "n c, n c h w -> n h w")
        if sigmoid:
            m = m.sigmoid()
        return m[:, None] if keep else m

    return fn


def test_cross_spatial():
    _check_table(ex.check_cross_spatial, _cross(), {
        "own descriptor": (_cross(swap=False), "own descriptor"),
        "no softmax": (_cross(norm="none"), "without the softmax"),
        "sigmoid weights": (_cross(norm="sigmoid"), "a sigmoid replaces the softmax"),
        "softmax over positions": (_cross(where="positions"), "softmax runs over the positions"),
        "max pooling": (_cross(pool="max"), "maxima"),
        "sum pooling": (_cross(pool="sum"), "sums over H × W"),
        "gate returned": (_cross(sigmoid=True), "that is σ(m)"),
        "channel axis kept": (_cross(keep=True), "(n, 1, H, W)"),
        "something else": (lambda x1, x2: x1.sum(1), "differ"),
    })


def test_cross_spatial_agrees_with_the_module():
    """The exercise's right answer is the map the module gates with."""
    m = EMA(8, factor=2).double()
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn_like(p))
    x = torch.randn(2, 8, 5, 6, dtype=torch.float64)
    seen = {}
    m.gate.register_forward_hook(lambda mod, inp, out: seen.update(logits=inp[0]))
    g = x.reshape(4, 4, 5, 6)
    z_h, z_w = g.mean(3, keepdim=True), g.mean(2, keepdim=True).transpose(2, 3)
    a = m.conv1x1(torch.cat([z_h, z_w], 2))
    x1 = m.gn(g * a[:, :, :5].sigmoid() * a[:, :, 5:].transpose(2, 3).sigmoid())
    x2 = m.conv3x3(g)
    m(x)
    torch.testing.assert_close(seen["logits"][:, 0], _cross()(x1, x2))


def test_map_size():
    B, C, H, W, G = 4, 64, 7, 5, 8
    right = B * G * H * W
    assert right == 1120
    from attncourse.plot import capture_gates
    assert capture_gates(EMA(C, factor=G), torch.randn(B, C, H, W))["gate"].numel() == right
    _check_table(ex.check_map_size, right, {
        "per channel": (B * C * H * W, "the output's size"),
        "per image": (B * H * W, "one map per image"),
        "row and column gates": (B * C * (H + W), "row and column gates"),
        "per group": (B * G, "one weight per group"),
        "per channel, no space": (B * C, "a channel gate"),
        "no batch": (G * H * W, "multiply by the batch size"),
    })
