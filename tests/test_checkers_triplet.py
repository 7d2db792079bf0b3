"""The Triplet chapter's exercise checkers: each typical mistake gets its own message, the right
answer passes, a blank answer is "not attempted" without raising.

One table per exercise: (wrong answer, a fragment of the message it must get). The mistakes are
the ones listed above each checker in ``attncourse/exercises/triplet.py``.
"""

from __future__ import annotations

import torch
from einops import rearrange, reduce

from attncourse.cost import count_parameters
from attncourse.exercises import triplet as ex
from attncourse.hybrid.triplet import TripletAttention
from attncourse.plot import capture_gates

from checker_tables import check_table as _check_table


def test_triplet_parameters():
    k, C = 5, 256
    right = 2 * (2 * k * k + 2)
    assert right == count_parameters(TripletAttention(C, kernel_size=k, no_spatial=True)) == 104
    _check_table(ex.check_triplet_parameters, right, {
        "three branches": (3 * (2 * k * k + 2), "drops branch 3"),
        "k = 7": (2 * (2 * 7 * 7 + 2), "the default"),
        "no batch norm": (2 * 2 * k * k, "Only the convolutions"),
        "running stats": (2 * (2 * k * k + 4), "running mean and variance"),
        "all buffers": (2 * (2 * k * k + 5), "batch counter"),
        "conv bias": (2 * (2 * k * k + 3), "no bias"),
        "gamma only": (2 * (2 * k * k + 1), "one is missing"),
        "one input map": (2 * (k * k + 2), "2k² weights, not k²"),
        "C input channels": (2 * (k * k * C + 2), "does not depend on C"),
    })


def test_rotation():
    right = ("b h w c -> b h c w", "b h c w -> b h w c")
    # a swap is its own inverse: the same pattern twice is right too, and names are only positions
    assert ex.check_rotation(("b h w c -> b h c w", "b h w c -> b h c w"))
    assert ex.check_rotation(["n y x k -> n y k x", "n y k x -> n y x k"])
    _check_table(ex.check_rotation, right, {
        "channels-first pattern copied": (("b c h w -> b h c w", "b h c w -> b c h w"), "channels-first pattern"),
        "identity": (("b h w c -> b h w c", "b h w c -> b h w c"), "already leads with H"),
        "to channels-first": (("b h w c -> b c h w", "b c h w -> b h w c"), "branch 3's input"),
        "batch moved": (("b h w c -> h b c w", "h b c w -> b h w c"), "batch axis"),
        "merged axes": (("b h w c -> b h (c w)", "b h (c w) -> b h w c"), "no axes merged"),
        "other order": (("b h w c -> b c w h", "b c w h -> b h w c"), "(B, H, C, W) = (2, 4, 3, 5)"),
        "einops refuses": (("b h w c -> b h c", "b h c -> b h w c"), "einops could not apply rotate"),
        "back refused": (("b h w c -> b h c w", "b h c -> b c h"), "einops could not apply back"),
        "back is the identity": (("b h w c -> b h c w", "b h c w -> b h c w"), "unchanged"),
        "back to channels-first": (("b h w c -> b h c w", "b h c w -> b c h w"), "back gives channels-first"),
        "back does not invert": (("b h w c -> b h c w", "b h c w -> b w h c"), "does not undo rotate"),
        "not a pair": ("b h w c -> b h c w", "two patterns"),
        "not strings": ((1, 2), "pattern string"),
    })
    for blank in [(..., ...), ("b h w c -> b h c w", ...), [None, None]]:
        fb = ex.check_rotation(blank)
        assert not fb and not fb.attempted


def test_rotation_gives_the_modules_cw_map():
    """Branch 2's map from the exercise's rotation of a channels-last tensor is the module's cw gate."""
    m = TripletAttention(4).eval()
    x = torch.randn(2, 4, 5, 6)
    rotated = rearrange(rearrange(x, "b c h w -> b h w c"), "b h w c -> b h c w")
    torch.testing.assert_close(m.cw(_z()(rotated)), capture_gates(m, x)["cw.gate"])


def _z(order=("max", "mean"), dim=1, stack=1, pool="mean", only=None, positions=False):
    def fn(x):
        if positions:
            return torch.stack([reduce(x, "b l p q -> b l", "max"), reduce(x, "b l p q -> b l", "mean")], 1)
        maps = {"max": x.amax(dim), "mean": reduce(x, "b l p q -> b p q", pool) if dim == 1 else x.mean(dim)}
        if only:
            return maps[only].unsqueeze(1)
        return torch.stack([maps[o] for o in order], dim=stack)

    return fn


def test_z_pool():
    _check_table(ex.check_z_pool, _z(), {
        "mean first": (_z(order=("mean", "max")), "[mean; max]"),
        "sum": (_z(pool="sum"), "a sum over the leading axis"),
        "max only": (_z(only="max"), "only the max map"),
        "mean only": (_z(only="mean"), "only the mean map"),
        "along H": (_z(dim=2), "along the height"),
        "along W": (_z(dim=3), "along the width"),
        "stacked first": (_z(stack=0), "new first axis"),
        "over positions": (_z(positions=True), "CBAM's channel descriptors"),
        "a tuple": (lambda x: (x.amax(1), x.mean(1)), "expected a torch.Tensor"),
        "something else": (lambda x: torch.stack([x.amin(1), x.mean(1)], 1), "differ"),
        "raises": (lambda x: x.foo(), "raised AttributeError"),
    })


def test_z_pool_agrees_with_the_module():
    """The exercise's right answer is what the module's branch 3 feeds its convolution."""
    m = TripletAttention(6).eval()
    x = torch.randn(2, 6, 5, 7)
    seen = {}
    m.hw.conv.register_forward_hook(lambda mod, inp, out: seen.update(z=inp[0]))
    m(x)
    torch.testing.assert_close(seen["z"], _z()(x))


def test_gate_sizes():
    C, H, W = 64, 14, 10
    right = H * C + C * W + H * W
    assert right == 1676
    g = capture_gates(TripletAttention(C), torch.randn(1, C, H, W))
    assert sum(v.numel() for v in g.values()) == right
    _check_table(ex.check_gate_sizes, right, {
        "three H x W": (3 * H * W, "three H × W maps"),
        "broadcast": (C * H * W, "the broadcast gate"),
        "three broadcast": (3 * C * H * W, "after broadcasting"),
        "H x C only": (H * C, "branch 1's (H, C) map only"),
        "C x W only": (C * W, "branch 2's (C, W) map only"),
        "H x W only": (H * W, "branch 3's (H, W) map only"),
    })
