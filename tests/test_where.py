"""The "where" task (``data.side_by_side``) and the circular padding its network uses: the
claims of the task's docstring, checked."""

from __future__ import annotations

import pytest
import torch

from attncourse.data import SHAPES, side_by_side
from attncourse.nets import TinyNet


def _stamp(size, corner, shape="plus"):
    s = torch.zeros(size, size)
    s[:3, :3] = SHAPES[shape]
    return torch.roll(s, shifts=tuple(int(v) for v in corner), dims=(0, 1))


@pytest.mark.parametrize("size, distance", [(24, 12), (18, 9)])  # the default; the "where" protocol's
def test_two_copies_distance_apart_along_the_labelled_axis(size, distance):
    split, corners = side_by_side(300, 200, noise=0.0, seed=4, size=size, distance=distance, return_positions=True)
    x = torch.cat([split.x_train, split.x_test])
    y = torch.cat([split.y_train, split.y_test])
    assert x.shape == (500, 1, size, size) and corners.shape == (500, 2, 2)
    assert 0.4 < y.float().mean() < 0.6  # balanced labels (a fair coin per image)
    step = (corners[:, 1] - corners[:, 0]) % size
    step = torch.where(step > size // 2, step - size, step)  # signed, the nearer way round
    along, across = step.abs().unbind(1)  # rows, columns
    side = y == 1
    assert (across[side] == distance).all() and (along[side] <= 2).all()  # side by side: distance columns apart
    assert (along[~side] == distance).all() and (across[~side] <= 2).all()  # one above the other
    for i in range(500):  # the image is the two stamps (on the torus), nothing else
        assert torch.equal(x[i, 0], _stamp(size, corners[i, 0]) + _stamp(size, corners[i, 1]))


def test_the_protocols_split_is_balanced_and_its_own():
    from attncourse.experiments import protocol

    p = protocol("where")
    split = p.data()
    assert split.x_train.shape == (1500, 1, 18, 18) and split.x_test.shape == (1000, 1, 18, 18)
    for y in (split.y_train, split.y_test):
        assert 0.45 < y.float().mean() < 0.55
    assert torch.equal(p.data().x_test, split.x_test)  # deterministic


def test_every_place_is_alike_and_the_labels_do_not_depend_on_where_one_shape_is():
    _, corners = side_by_side(4000, 0, noise=0.0, seed=1, return_positions=True)
    split = side_by_side(4000, 0, noise=0.0, seed=1)
    first = corners[:, 0]
    # the first copy is uniform over the torus for both labels: its row and column tell nothing
    for label in (0, 1):
        rows = torch.bincount(first[split.y_train == label, 0], minlength=24).float()
        assert rows.min() > 0.5 * rows.mean() and rows.max() < 1.5 * rows.mean()
    # the copies are far apart both ways round the torus: no 10 x 10 window holds a pixel of each
    step = (corners[:, 1] - corners[:, 0]) % 24
    gap = torch.minimum(step, 24 - step).amax(1)  # the axis they are apart along, the nearer way
    assert (gap == 12).all()  # nearest pixels 9 apart: a window with one of each spans 11 pixels


def test_deterministic_per_seed_and_different_across_seeds():
    a, b, c = side_by_side(50, 20, seed=2), side_by_side(50, 20, seed=2), side_by_side(50, 20, seed=3)
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test)
    assert not torch.equal(a.x_train, c.x_train)


@pytest.mark.parametrize("kwargs", [{"distance": 13}, {"distance": 2}, {"jitter": 10}, {"shape": "star"}])
def test_impossible_settings_are_refused(kwargs):
    with pytest.raises(ValueError, match="side_by_side"):
        side_by_side(10, 10, **kwargs)


def test_moving_one_copy_from_beside_to_below_keeps_every_statistic_over_positions():
    """The docstring's argument: a pair side by side and the same pair one above the other hold
    the same local patterns, so a network with circular padding, no attention and global pooling
    gives both the same pooled features (so would any statistic over positions), though the
    labels differ. Noise-free, so that the moved copy's surroundings are alike exactly; the moved
    copy keeps its row's and column's parity, so the 2 x 2 pooling sees it the same way."""
    torch.manual_seed(0)
    beside = _stamp(24, (5, 3)) + _stamp(24, (5, 15))  # label 1: 12 columns apart
    below = _stamp(24, (5, 3)) + _stamp(24, (17, 3))  # label 0: 12 rows apart
    net = TinyNet(1, 2, widths=(16, 32, 32), pool_every=2, padding_mode="circular").eval()
    with torch.no_grad():
        pooled = [net.pool(net.features(img[None, None])) for img in (beside, below)]
    torch.testing.assert_close(pooled[0], pooled[1], atol=1e-5, rtol=1e-5)
    zeros = TinyNet(1, 2, widths=(16, 32, 32), pool_every=2).eval()
    zeros.load_state_dict(net.state_dict())
    near_edge = _stamp(24, (5, 1)) + _stamp(24, (5, 13)), _stamp(24, (5, 1)) + _stamp(24, (17, 1))
    with torch.no_grad():  # with zero padding a copy next to the border is seen apart from one inside
        again = [zeros.pool(zeros.features(img[None, None])) for img in near_edge]
    assert (again[0] - again[1]).abs().max() > 1e-3


def test_circular_padding_makes_the_blocks_equivariant_to_circular_shifts():
    torch.manual_seed(0)
    net = TinyNet(1, 2, widths=(8, 8), padding_mode="circular").eval()
    x = torch.randn(2, 1, 12, 10)
    with torch.no_grad():
        torch.testing.assert_close(net.features(torch.roll(x, (3, 7), (2, 3))), torch.roll(net.features(x), (3, 7), (2, 3)))
    with pytest.raises(ValueError, match="TinyNet expected padding_mode"):
        TinyNet(1, 2, padding_mode="reflect")
