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


def _variant_parameters(k_rotated, k_spatial):
    """The variant of exercise 1, built from the package's branches: two rotated ones and branch 3."""
    from attncourse.hybrid.triplet import TripletBranch
    branches = [TripletBranch(kernel_size=k_rotated), TripletBranch(kernel_size=k_rotated),
                TripletBranch(kernel_size=k_spatial)]
    return sum(count_parameters(b) for b in branches)


def test_triplet_parameters():
    C = 256
    right = 2 * (2 * 9 + 2) + (2 * 49 + 2)
    assert right == _variant_parameters(3, 7) == 140
    assert _variant_parameters(7, 7) == count_parameters(TripletAttention(C)) == 300
    _check_table(ex.check_triplet_parameters, right, {
        "k = 7 everywhere": (300, "the module's default"),
        "k = 3 everywhere": (_variant_parameters(3, 3), "branch 3, the H × W gate, keeps k = 7"),
        "kernels swapped": (_variant_parameters(7, 3), "other way round"),
        "branch 3 forgotten": (2 * (2 * 9 + 2), "rotated branches only"),
        "one rotated branch": ((2 * 9 + 2) + (2 * 49 + 2), "One rotated branch is missing"),
        "no batch norm": (2 * 18 + 98, "Only the convolutions"),
        "running stats": (right + 3 * 2, "running mean and variance"),
        "all buffers": (right + 3 * 3, "batch counter"),
        "conv bias": (right + 3, "no bias"),
        "gamma only": (right - 3, "one is missing"),
        "one input map": (2 * (9 + 2) + (49 + 2), "2k² weights, not k²"),
        "C input channels": (2 * (9 * C + 2) + (49 * C + 2), "does not depend on C"),
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
    z = torch.stack([rotated.amax(1), rotated.mean(1)], 1)              # the Z-pool of its leading axis, H
    torch.testing.assert_close(m.cw(z), capture_gates(m, x)["cw.gate"])


def _z(order=("max", "mean"), layout="b c w", stack=1, pool="mean", only=None, positions=False):
    """A z_pool_cw answer for a channels-last t (B, H, W, C), right or with one mistake."""
    def fn(t):
        if positions:
            return torch.stack([reduce(t, "b h w c -> b c", "max"), reduce(t, "b h w c -> b c", "mean")], 1)
        maps = {how: reduce(t, f"b h w c -> {layout}", how if how == "max" else pool) for how in ("max", "mean")}
        if only:
            return maps[only].unsqueeze(1)
        return torch.stack([maps[o] for o in order], dim=stack)

    return fn


def test_z_pool():
    _check_table(ex.check_z_pool, _z(), {
        "plane W x C": (_z(layout="b w c"), "the plane is W × C"),
        "mean first": (_z(order=("mean", "max")), "[mean; max]"),
        "sum": (_z(pool="sum"), "a sum over H"),
        "max only": (_z(only="max"), "only the max map"),
        "mean only": (_z(only="mean"), "only the mean map"),
        # pooled over W: branch 1's Z-pool, which is also what the channels-first pattern gives here
        "channels-first pattern": (lambda t: torch.stack([reduce(t, "b c h w -> b c w", "max"),
                                                          reduce(t, "b c h w -> b c w", "mean")], 1),
                                   "branch 1's Z-pool"),
        "over C (branch 3)": (_z(layout="b h w"), "branch 3's Z-pool"),
        "stacked first": (_z(stack=0), "new first axis"),
        "stacked last": (_z(stack=3), "on the last axis"),
        "over positions": (_z(positions=True), "CBAM's channel descriptors"),
        "a tuple": (lambda t: (t.amax(1), t.mean(1)), "expected a torch.Tensor"),
        "something else": (lambda t: torch.stack([reduce(t, "b h w c -> b c w", "min"),
                                                  reduce(t, "b h w c -> b c w", "mean")], 1), "differ"),
        "raises": (lambda t: t.foo(), "raised AttributeError"),
    })


def test_z_pool_over_w_is_the_channels_first_pattern():
    t = torch.randn(3, 4, 5, 6)
    assert torch.equal(_z(layout="b h c")(t), torch.stack([reduce(t, "b c h w -> b c w", "max"),
                                                          reduce(t, "b c h w -> b c w", "mean")], 1))


def test_z_pool_agrees_with_the_module():
    """The exercise's right answer, on the channels-last copy of x, is what the module's branch 2 (cw)
    feeds its convolution."""
    m = TripletAttention(6).eval()
    x = torch.randn(3, 6, 5, 7)
    seen = {}
    m.cw.conv.register_forward_hook(lambda mod, inp, out: seen.update(z=inp[0]))
    m(x)
    torch.testing.assert_close(seen["z"], _z()(rearrange(x, "b c h w -> b h w c")))


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
        "H x W map forgotten": (1536, "H × W map, 14 · 10, is missing"),
        "counted twice": (3352, "twice the answer"),
        "H and W swapped in branch 2": (1932, "swapped in branch 2's map"),
        "H and W swapped in branch 1": (1420, "swapped in branch 1's map"),
    })
