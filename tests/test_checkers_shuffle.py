"""The Shuffle Attention chapter's exercise checkers: each typical mistake gets its own message, the
right answer passes, a blank answer is "not attempted" without raising.

One table per exercise: (wrong answer, a fragment of the message it must get). The mistakes are
the ones listed above each checker in ``attncourse/exercises/shuffle.py``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange

from attncourse.cost import count_parameters
from attncourse.exercises import shuffle as ex
from attncourse.hybrid.shuffle import ShuffleAttention

from checker_tables import check_table as _check_table

STAGES_101 = [(256, 3), (512, 4), (1024, 23), (2048, 3)]


def test_resnet101_parameters():
    right = sum(n * count_parameters(ShuffleAttention(c, groups=64)) for c, n in STAGES_101)
    assert right == 1524
    _check_table(ex.check_resnet101_parameters, right, {
        "no GN affine": (sum(n * count_parameters(ShuffleAttention(c, groups=64, norm_affine=False)) for c, n in STAGES_101),
                         "nn.GroupNorm(C/2G, C/2G)"),
        "ResNet-50": (708, "That is ResNet-50"),
        "per stage": (12 + 24 + 48 + 96, "one module per stage"),
        "per group": (64 * 1524, "its own weights"),
        "vectors of C/G": (2 * 1524, "not C/G"),
        "two vectors": (1524 // 3, "six vectors"),
    })


def _shuffle(x, groups):
    return rearrange(x, "b (g c) h w -> b (c g) h w", g=groups)


def test_channel_shuffle():
    _check_table(ex.check_channel_shuffle, _shuffle, {
        "transposed pattern": (lambda x, g: rearrange(x, "b (c g) h w -> b (g c) h w", g=g), "inverse permutation"),
        "identity": (lambda x, g: x, "input order"),
        "always two groups": (lambda x, g: _shuffle(x, 2), "whatever `groups` is"),
        "width axis": (lambda x, g: rearrange(x, "b c h (g w) -> b c h (w g)", g=g), "width axis"),
        "reversed": (lambda x, g: x.flip(1), "reverses"),
        "blocks swapped": (lambda x, g: torch.cat(list(x.chunk(g, dim=1))[::-1], dim=1), "as blocks"),
        "something else": (lambda x, g: x * 2, "differ"),
        "crashes": (lambda x, g: x.reshape(3, -1, 7), "raised"),
    })


def test_channel_shuffle_is_the_modules():
    """The exercise's right answer with 2 groups is the shuffle the module applies (gates fixed at 1)."""
    m = ShuffleAttention(24, groups=3).double()
    with torch.no_grad():
        m.cbias.fill_(50.0), m.sbias.fill_(50.0)
    x = torch.randn(2, 24, 3, 5, dtype=torch.float64)
    torch.testing.assert_close(m(x), _shuffle(x, 2))


def _spatial(norm="gn", gate_only=False, sigmoid=True):
    def fn(x2, w2, b2):
        if norm == "gn":
            z = F.group_norm(x2, x2.shape[1], eps=1e-5)
        elif norm == "gn1":
            z = F.group_norm(x2, 1, eps=1e-5)
        elif norm == "bn":
            z = F.batch_norm(x2, None, None, training=True, eps=1e-5)
        elif norm == "unbiased":
            z = (x2 - x2.mean((2, 3), keepdim=True)) / torch.sqrt(x2.var((2, 3), keepdim=True) + 1e-5)
        elif norm == "no eps":
            z = (x2 - x2.mean((2, 3), keepdim=True)) / x2.std((2, 3), keepdim=True, unbiased=False)
        elif norm == "centred":
            z = x2 - x2.mean((2, 3), keepdim=True)
        else:  # the channel half's global mean
            z = x2.mean((2, 3), keepdim=True)
        a = w2[:, None, None] * z + b2[:, None, None]
        a = a.sigmoid() if sigmoid else a
        return a if gate_only else a * x2

    return fn


def test_spatial_half():
    _check_table(ex.check_spatial_half, _spatial(), {
        "GN(1, K)": (_spatial("gn1"), "GroupNorm(1, K)"),
        "batch norm": (_spatial("bn"), "batch statistics"),
        "unbiased variance": (_spatial("unbiased"), "unbiased"),
        "no eps": (_spatial("no eps"), "ε is missing"),
        "not divided": (_spatial("centred"), "not divided"),
        "channel half": (_spatial("mean"), "channel half's formula"),
        "gate only": (_spatial(gate_only=True), "multiply it by X_k2"),
        "no sigmoid": (_spatial(sigmoid=False), "sigmoid is missing"),
        "something else": (lambda x2, w2, b2: x2, "differ"),
    })


def test_spatial_half_is_the_modules():
    """The exercise's right answer is the module's spatial half (without GN's affine)."""
    m = ShuffleAttention(16, groups=2, norm_affine=False).double()
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn_like(p))
    x = torch.randn(3, 16, 4, 5, dtype=torch.float64)
    seen = {}
    m.spatial_gate.register_forward_hook(lambda mod, inp, out: seen.update(gate=out))
    m(x)
    x2 = rearrange(x, "b (g t k) h w -> (b g) t k h w", g=2, t=2)[:, 1]
    gated = x2 * rearrange(seen["gate"], "b (g k) h w -> (b g) k h w", g=2)
    torch.testing.assert_close(gated, _spatial()(x2, m.sweight.reshape(-1), m.sbias.reshape(-1)))
