"""The Shuffle Attention chapter's exercise checkers: each typical mistake gets its own message, the
right answer passes, a blank answer is "not attempted" without raising.

One table per exercise: (wrong answer, a fragment of the message it must get). The mistakes are
the ones listed above each checker in ``attncourse/exercises/shuffle.py``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange

from attncourse.exercises import shuffle as ex
from attncourse.hybrid.shuffle import ShuffleAttention

from checker_tables import check_table as _check_table


def test_follow_channel():
    m = ShuffleAttention(24, groups=3).double()
    x = torch.randn(2, 24, 3, 5, dtype=torch.float64)
    y0 = m(x)
    bumped = x.clone()
    bumped[:, 16] += 1.0
    assert ((m(bumped) - y0).abs().amax(dim=(0, 2, 3)) > 0).nonzero().flatten().tolist() == [9]   # 16 -> 9
    assert rearrange(torch.arange(24), "(g t k) -> g t k", g=3, t=2)[2, 0, 0] == 16                 # channel half
    _check_table(ex.check_follow_channel, (16, "channel"), {
        "no shuffle": ((9, "channel"), "that is the channel before the shuffle"),
        "inverse permutation": ((18, "spatial"), "inverse permutation"),
        "G groups": ((3, "channel"), "a shuffle with G = 3 groups"),
        "from 1": ((17, "channel"), "counts channels from 0"),
        "other channel": ((5, "spatial"), "write 9 = 2q + p"),
        "(t g k) halves": ((16, "spatial"), "halves each group"),
        "bad half": ((16, "first"), "name the half"),
        "not a pair": (16, "expected a tuple"),
        "not a number": (("sixteen", "channel"), "should be a number"),
    })
    assert ex.check_follow_channel([16, "Channel half"])
    assert not ex.check_follow_channel((16, ...)).attempted


def _weight(how="right"):
    def fn(C):
        source = rearrange(torch.arange(C), "(p q) -> (q p)", p=2)
        w = torch.zeros(C, C)
        w[torch.arange(C), source] = 1.0
        w = {"right": w, "transposed": w.T, "identity": torch.eye(C), "reversed": torch.eye(C).flip(1),
             "blocks": torch.cat([torch.eye(C)[C // 2:], torch.eye(C)[:C // 2]]), "2d": w}[how]
        return w if how == "2d" else w[:, :, None, None]
    return fn


def test_shuffle_weight():
    x = torch.randn(3, 10, 4, 5)
    torch.testing.assert_close(F.conv2d(x, _weight()(10)), rearrange(x, "b (p q) h w -> b (q p) h w", p=2))
    _check_table(ex.check_shuffle_weight, _weight(), {
        "transposed": (_weight("transposed"), "inverse permutation"),
        "identity": (_weight("identity"), "no shuffle"),
        "no 1x1 axes": (_weight("2d"), "four axes"),
        "reversed": (_weight("reversed"), "reverses the channel order"),
        "blocks swapped": (_weight("blocks"), "as blocks"),
        "something else": (lambda C: torch.ones(C, C, 1, 1), "differ"),
        "crashes": (lambda C: torch.zeros(C, C)[C], "raised"),
    })


def test_shuffle_weight_is_the_modules_shuffle():
    """The exercise's right answer, as a 1×1 convolution, is the shuffle the module applies (gates fixed at 1)."""
    m = ShuffleAttention(24, groups=3).double()
    with torch.no_grad():
        m.cbias.fill_(50.0), m.sbias.fill_(50.0)
    x = torch.randn(2, 24, 3, 5, dtype=torch.float64)
    torch.testing.assert_close(m(x), F.conv2d(x, _weight()(24).double()))


def _shared(how="right"):
    """A spatial_half_shared answer, right or with one mistake."""
    def fn(x2, w2, b2):
        m = x2.amax(1, keepdim=True) if how == "max" else x2.mean(1, keepdim=True)
        if how == "per channel":
            z = F.group_norm(x2, x2.shape[1], eps=1e-5)
        elif how == "not standardised":
            z = m
        elif how == "centred":
            z = m - m.mean((2, 3), keepdim=True)
        elif how == "batch":
            z = F.batch_norm(m, None, None, training=True, eps=1e-5)
        elif how == "unbiased":
            z = (m - m.mean((2, 3), keepdim=True)) / torch.sqrt(m.var((2, 3), keepdim=True) + 1e-5)
        elif how == "no eps":
            z = (m - m.mean((2, 3), keepdim=True)) / m.std((2, 3), keepdim=True, unbiased=False)
        elif how == "channel half":
            z = x2.mean((2, 3), keepdim=True)
        else:
            z = F.group_norm(m, 1, eps=1e-5)                   # one map, standardised over its H x W
        a = rearrange(w2, "k -> k 1 1") * z + rearrange(b2, "k -> k 1 1")
        a = a if how == "no sigmoid" else a.sigmoid()
        return a if how == "gate only" else a * x2

    return fn


def test_spatial_half():
    _check_table(ex.check_spatial_half, _shared(), {
        "SA's own (per channel)": (_shared("per channel"), "SA's own spatial half"),
        "not standardised": (_shared("not standardised"), "not standardised"),
        "centred only": (_shared("centred"), "centred but not divided"),
        "batch statistics": (_shared("batch"), "batch statistics"),
        "unbiased variance": (_shared("unbiased"), "unbiased"),
        "no eps": (_shared("no eps"), "ε is missing"),
        "max over channels": (_shared("max"), "maximum over the channels"),
        "channel half": (_shared("channel half"), "channel half's formula"),
        "gate only": (_shared("gate only"), "multiply it by x2"),
        "no sigmoid": (_shared("no sigmoid"), "sigmoid is missing"),
        "something else": (lambda x2, w2, b2: x2, "differ"),
    })


def test_spatial_half_with_one_channel_is_the_modules():
    """With K = 1 channel per half, the shared map is the channel itself: the variant is SA's own spatial half."""
    m = ShuffleAttention(8, groups=4, norm_affine=False).double()
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn_like(p))
    assert m.half == 1
    x = torch.randn(3, 8, 4, 5, dtype=torch.float64)
    seen = {}
    m.spatial_gate.register_forward_hook(lambda mod, inp, out: seen.update(gate=out))
    m(x)
    x2 = rearrange(x, "b (g t k) h w -> (b g) t k h w", g=4, t=2)[:, 1]
    gated = x2 * rearrange(seen["gate"], "b (g k) h w -> (b g) k h w", g=4)
    torch.testing.assert_close(gated, _shared()(x2, m.sweight.reshape(-1), m.sbias.reshape(-1)))
