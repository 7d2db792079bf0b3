"""CrissCrossAttention (CCNet): the paper's criss-cross pass, computed three ways, and its recurrence."""

import pytest
import torch
import torch.nn.functional as F

import attncourse
from attncourse.cost import count_flops, count_parameters
from attncourse.selfattn.ccnet import CrissCrossAttention


def _random(m, seed=0, gamma=None):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(0.5 * torch.randn(p.shape, generator=g, dtype=p.dtype))
        if gamma is not None:
            m.gamma.fill_(gamma)
    return m


def _qkv(m, x):
    return m.query(x), m.key(x), m.value(x)


def naive_pass(m, x, *, centre_twice=False):
    """Eqs. (1)-(2) with loops: for each position u, its column (without u) and its row (with u)."""
    q, k, v = _qkv(m, x)
    B, C, H, W = x.shape
    out = torch.empty_like(x)
    for b in range(B):
        for h in range(H):
            for w in range(W):
                path = [(g, w) for g in range(H) if g != h or centre_twice] + [(h, j) for j in range(W)]
                d = torch.stack([q[b, :, h, w] @ k[b, :, i, j] for i, j in path])  # (1)
                a = torch.softmax(d, 0)
                agg = sum(a[n] * v[b, :, i, j] for n, (i, j) in enumerate(path))
                out[b, :, h, w] = m.gamma * agg + x[b, :, h, w]  # (2)
    return out


def cross_mask(H, W):
    r = torch.arange(H * W) // W
    c = torch.arange(H * W) % W
    return (r[:, None] == r[None, :]) | (c[:, None] == c[None, :])


def masked_full_pass(m, x):
    """Full N x N attention with -inf off the criss-cross, one softmax per query."""
    q, k, v = (t.flatten(2) for t in _qkv(m, x))  # (B, ., N)
    logits = torch.einsum("bcn,bcm->bnm", q, k).masked_fill(~cross_mask(*x.shape[2:]), float("-inf"))
    a = torch.softmax(logits, -1)
    return m.gamma * torch.einsum("bnm,bcm->bcn", a, v).view_as(x) + x, a


@pytest.mark.parametrize("c", [8, 16, 64, 256])
def test_parameters_formula(c):
    m = CrissCrossAttention(c)
    assert count_parameters(m) == 1.25 * c * c + 1.25 * c + 1
    assert count_parameters(CrissCrossAttention(c, recurrence=5)) == count_parameters(m)  # shared


def test_parameters_when_8_does_not_divide_c():
    m = CrissCrossAttention(12)  # C' = 1
    assert m.inner == 1 and count_parameters(m) == 2 * (12 + 1) + 144 + 12 + 1


def test_create_and_defaults():
    m = attncourse.create("ccnet", 64)
    assert isinstance(m, CrissCrossAttention) and m.inner == 8 and m.recurrence == 2 and m.gamma.item() == 0


@pytest.mark.parametrize("recurrence", [1, 2, 3])
def test_identity_at_initialisation(recurrence):
    m = CrissCrossAttention(16, recurrence=recurrence).double()
    _random(m, gamma=0.0)
    x = torch.randn(2, 16, 5, 7, dtype=torch.float64)
    assert torch.equal(m(x), x)
    fresh = CrissCrossAttention(16)
    y = torch.randn(1, 16, 3, 4)
    assert torch.equal(fresh(y), y)


@pytest.mark.parametrize("shape", [(2, 16, 4, 6), (1, 16, 5, 3), (1, 16, 1, 4), (1, 16, 3, 1)])
def test_one_pass_equals_naive_loop_and_masked_full_attention(shape):
    m = _random(CrissCrossAttention(16).double(), gamma=0.7)
    x = torch.randn(shape, dtype=torch.float64)
    expected = naive_pass(m, x)
    torch.testing.assert_close(m.single_pass(x), expected)
    full, a = masked_full_pass(m, x)
    torch.testing.assert_close(full, expected)
    torch.testing.assert_close(m.attention(x)[:, 0], a)


def test_recurrence_is_the_same_pass_applied_twice():
    m = _random(CrissCrossAttention(16).double(), gamma=0.7)
    x = torch.randn(2, 16, 4, 5, dtype=torch.float64)
    torch.testing.assert_close(m(x), naive_pass(m, naive_pass(m, x)))
    m3 = CrissCrossAttention(16, recurrence=3).double()
    m3.load_state_dict(m.state_dict())
    torch.testing.assert_close(m3(x), m.single_pass(m(x)))


def test_naive_reference_can_fail():
    """Counting the centre twice (no -inf), or two separate softmaxes, gives other numbers."""
    m = _random(CrissCrossAttention(16).double(), gamma=0.7)
    x = torch.randn(1, 16, 4, 5, dtype=torch.float64)
    assert not torch.allclose(naive_pass(m, x, centre_twice=True), m.single_pass(x))
    q, k, v = _qkv(m, x)
    e_col = torch.einsum("bchw,bcgw->bhwg", q, k).masked_fill(torch.eye(4, dtype=torch.bool)[:, None], float("-inf"))
    e_row = torch.einsum("bchw,bchv->bhwv", q, k)
    two = torch.einsum("bhwg,bcgw->bchw", e_col.softmax(-1), v) + torch.einsum("bhwv,bchv->bchw", e_row.softmax(-1), v)
    assert not torch.allclose(m.gamma * two + x, m.single_pass(x))


def test_attention_is_what_forward_applies():
    m = _random(CrissCrossAttention(16).double(), gamma=0.7)
    x = torch.randn(2, 16, 4, 6, dtype=torch.float64)
    seen = []
    handle = m.gate.register_forward_hook(lambda mod, inp, out: seen.append(out))
    m(x)
    handle.remove()
    assert len(seen) == 2 and seen[0].shape == (2, 4, 6, 4 + 6)
    a = m.attention(x)
    assert a.shape == (2, 1, 24, 24)
    dense = a[:, 0].view(2, 4, 6, 4, 6)
    for h in range(4):
        for w in range(6):
            col = dense[:, h, w, :, w].clone()
            col[:, h] = 0  # the centre's weight comes from the row path
            torch.testing.assert_close(col, seen[0][:, h, w, :4])
            torch.testing.assert_close(dense[:, h, w, h, :], seen[0][:, h, w, 4:])
    assert torch.all(seen[0][..., :4].diagonal(dim1=1, dim2=3) == 0)  # -inf on the column diagonal
    torch.testing.assert_close(a.sum(-1), torch.ones(2, 1, 24, dtype=torch.float64))
    assert torch.all(a[:, 0][~cross_mask(4, 6).expand(2, -1, -1)] == 0)
    assert torch.all((a[:, 0] > 0).sum(-1) == 4 + 6 - 1)


def test_one_by_one_map_attends_to_itself():
    m = _random(CrissCrossAttention(16, recurrence=1).double(), gamma=0.7)
    x = torch.randn(3, 16, 1, 1, dtype=torch.float64)
    torch.testing.assert_close(m(x), x + 0.7 * m.value(x))
    torch.testing.assert_close(m.attention(x), torch.ones(3, 1, 1, 1, dtype=torch.float64))


def test_two_passes_reach_every_position():
    m = _random(CrissCrossAttention(8).double(), gamma=1.0)
    x = torch.randn(1, 8, 5, 7, dtype=torch.float64)
    dx = torch.zeros_like(x)
    dx[0, :, 1, 2] = 1.0
    one = (m.single_pass(x + dx) - m.single_pass(x)).abs().sum(1)[0] > 1e-12
    two = (m(x + dx) - m(x)).abs().sum(1)[0] > 1e-12
    assert torch.equal(one, cross_mask(5, 7).view(5, 7, 5, 7)[1, 2])
    assert two.all()


def test_flops_formula():
    c, h, w, b = 64, 6, 10, 2
    m = CrissCrossAttention(c)
    n = h * w
    per_pass = 2 * n * c * (2 * (c // 8) + c) + 2 * n * (c // 8) * (h + w) + 2 * n * c * (h + w)
    assert count_flops(m, torch.randn(b, c, h, w)) == b * 2 * per_pass


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"reduction": 16}, ["CrissCrossAttention", "at least 1", "channels=8", "reduction=16"]),
        ({"reduction": 0}, ["CrissCrossAttention", "reduction"]),
        ({"recurrence": 0}, ["CrissCrossAttention", "recurrence"]),
        ({"recurrence": 1.5}, ["CrissCrossAttention", "recurrence"]),
    ],
)
def test_bad_hyperparameters(kwargs, words):
    with pytest.raises(ValueError) as info:
        CrissCrossAttention(8, **kwargs)
    for word in words:
        assert word in str(info.value)


def test_gradcheck():
    m = _random(CrissCrossAttention(8).double(), gamma=0.5)
    x = torch.randn(1, 8, 3, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(m, (x,))


def test_bad_input_names_the_module():
    with pytest.raises(ValueError, match="CrissCrossAttention"):
        CrissCrossAttention(8).single_pass(torch.randn(1, 4, 3, 3))
    with pytest.raises(ValueError, match="CrissCrossAttention"):
        CrissCrossAttention(8).attention(torch.randn(1, 8, 3))


@pytest.mark.parametrize("recurrence", [1, 2])
def test_key_bias_changes_nothing_and_gets_zero_gradient(recurrence):
    """Q_u · b_k is the same for every position of u's path (one softmax over column and row): cancelled."""
    m = _random(CrissCrossAttention(16, recurrence=recurrence).double(), gamma=0.7)
    x = torch.randn(2, 16, 5, 6, dtype=torch.float64)
    (m(x) * torch.randn_like(x)).sum().backward()
    assert m.key.bias.grad.abs().max() < 1e-12 * m.key.weight.grad.abs().max()
    assert m.query.bias.grad.abs().max() > 1e-3 and m.key.weight.grad.abs().max() > 1e-3
    y = m(x)
    with torch.no_grad():
        m.key.bias.add_(3 * torch.randn_like(m.key.bias))
    torch.testing.assert_close(m(x), y, rtol=1e-12, atol=1e-12)
    with torch.no_grad():
        m.query.bias.add_(1.0)  # the contrast: the query's bias is not cancelled
    assert (m(x) - y).abs().max() > 1e-3
