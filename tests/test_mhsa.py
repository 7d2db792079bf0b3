"""Multi-head self-attention on a feature map against eq. (1) of Vaswani et al. (NeurIPS 2017),
``torch.nn.MultiheadAttention``, DETR's 2-D sine position code (Carion et al., ECCV 2020), and the
course's learned relative position bias (in the style of Swin's); ``identity_init``."""

import math

import pytest
import torch
from torch import nn
from torch.export import Dim

import attncourse
from attncourse.cost import count_flops, count_parameters, peak_memory
from attncourse.plot import capture_gates
from attncourse.selfattn.mhsa import MultiHeadSelfAttention2d, sine_position_2d

from module_checks import assert_onnx_equals_eager, naive_sine

# ---------------------------------------------------------------- the naive derivation


def naive_relative_bias(table, h, w):
    """B[i, n, m] = table[i, y_m - y_n + H - 1, x_m - x_n + W - 1], one query-key pair at a time: (heads, N, N)."""
    heads = table.shape[0]
    b = torch.empty(heads, h * w, h * w, dtype=table.dtype)
    for i in range(heads):
        for yq in range(h):
            for xq in range(w):
                for yk in range(h):
                    for xk in range(w):
                        b[i, yq * w + xq, yk * w + xk] = table[i, yk - yq + h - 1, xk - xq + w - 1]
    return b


def naive_mhsa(x, wq, wk, wv, wo, bq, bk, bv, bo, heads, pos=None, scale=True, rel=None):
    """x + MultiHead(T, T, T), a loop over images, heads and queries; eq. (1) row by row (plus the
    relative bias ``rel``, (heads, N, N), on the logits if given)."""
    B, C, H, W = x.shape
    d = C // heads
    out = x.clone()
    for b in range(B):
        t = x[b].reshape(C, H * W).T  # tokens (N, C), row-major positions: (h w)
        tqk = t if pos is None else t + pos  # DETR: the code goes into queries and keys, not values
        heads_out = []
        for i in range(heads):
            sl = slice(i * d, (i + 1) * d)
            q, k, v = tqk @ wq[sl].T + bq[sl], tqk @ wk[sl].T + bk[sl], t @ wv[sl].T + bv[sl]
            rows = []
            for n in range(H * W):  # one query at a time
                logits = (k @ q[n]) / (math.sqrt(d) if scale else 1.0)  # q_n · k_m / sqrt(d)
                if rel is not None:
                    logits = logits + rel[i, n]  # + B[n, m] for every key m
                a = torch.exp(logits - logits.max())
                rows.append((a / a.sum()) @ v)  # softmax over the keys, then the weighted sum of values
            heads_out.append(torch.stack(rows))
        o = torch.cat(heads_out, dim=1) @ wo.T + bo  # Concat(heads) W^O
        out[b] += o.T.reshape(C, H, W)
    return out


def _random(m, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.5)
    return m


def _weights(m):
    c = m.channels
    w, b = m.qkv.weight.detach(), m.qkv.bias.detach() if m.bias else torch.zeros(3 * c, dtype=torch.float64)
    bo = m.proj.bias.detach() if m.bias else torch.zeros(c, dtype=torch.float64)
    return w[:c], w[c : 2 * c], w[2 * c :], m.proj.weight.detach(), b[:c], b[c : 2 * c], b[2 * c :], bo


# ---------------------------------------------------------------- equal to the derivation


@pytest.mark.parametrize("heads", [1, 2, 4])
@pytest.mark.parametrize("position", [None, "sine"])
@pytest.mark.parametrize("bias", [True, False])
def test_equals_the_naive_derivation(heads, position, bias):
    m = _random(MultiHeadSelfAttention2d(8, heads=heads, bias=bias, position=position).double())
    x = torch.randn(2, 8, 3, 5, dtype=torch.float64)
    pos = None if position is None else naive_sine(3, 5, 8)
    torch.testing.assert_close(m(x), naive_mhsa(x, *_weights(m), heads, pos))


def test_the_naive_derivation_can_fail():
    m = _random(MultiHeadSelfAttention2d(8, heads=2).double())
    x = torch.randn(1, 8, 3, 4, dtype=torch.float64)
    ref = naive_mhsa(x, *_weights(m), 2)
    assert not torch.allclose(naive_mhsa(x, *_weights(m), 2, scale=False), ref)  # without 1/sqrt(d)
    assert not torch.allclose(naive_mhsa(x, *_weights(m), 4), ref)  # wrong head split
    assert not torch.allclose(naive_mhsa(x, *_weights(m), 2, pos=naive_sine(3, 4, 8)), ref)


@pytest.mark.parametrize("bias", [True, False])
def test_equals_torch_multihead_attention(bias):
    c, heads = 16, 4
    m = _random(MultiHeadSelfAttention2d(c, heads=heads, bias=bias).double())
    ref = nn.MultiheadAttention(c, heads, bias=bias, batch_first=True).double()
    with torch.no_grad():
        ref.in_proj_weight.copy_(m.qkv.weight)
        ref.out_proj.weight.copy_(m.proj.weight)
        if bias:
            ref.in_proj_bias.copy_(m.qkv.bias)
            ref.out_proj.bias.copy_(m.proj.bias)
    assert count_parameters(ref) == count_parameters(m)
    x = torch.randn(2, c, 5, 3, dtype=torch.float64)
    t = x.flatten(2).transpose(1, 2)  # b c h w -> b (h w) c
    out, weights = ref(t, t, t, need_weights=True, average_attn_weights=False)
    torch.testing.assert_close(m(x), x + out.transpose(1, 2).reshape_as(x))
    torch.testing.assert_close(m.attention(x), weights)


@pytest.mark.parametrize("position", ["sine", "relative"])
def test_attention_is_what_forward_applies(position):
    size = (4, 7) if position == "relative" else None
    m = _random(MultiHeadSelfAttention2d(16, heads=4, position=position, size=size).double())
    x = torch.randn(2, 16, 4, 7, dtype=torch.float64)
    a = m.attention(x)
    assert a.shape == (2, 4, 28, 28)
    torch.testing.assert_close(a.sum(-1), torch.ones(2, 4, 28, dtype=torch.float64))
    _, _, v = m._qkv(x)
    o = (a @ v).transpose(1, 2).reshape(2, 28, 16)  # Concat(heads)
    torch.testing.assert_close(m(x), x + m.proj(o).transpose(1, 2).reshape_as(x))
    # the gate records what attention(x) returns; a plain forward (SDPA) passes no gate
    assert capture_gates(m, x) == {}


# ---------------------------------------------------------------- positions


def test_without_positions_permuting_the_positions_permutes_the_output():
    m = _random(MultiHeadSelfAttention2d(16, heads=4).double())
    x = torch.randn(2, 16, 5, 6, dtype=torch.float64)
    perm = torch.randperm(30, generator=torch.Generator().manual_seed(1))
    shuffle = lambda t: t.flatten(2)[:, :, perm].reshape_as(t)  # noqa: E731
    torch.testing.assert_close(m(shuffle(x)), shuffle(m(x)))
    a, a_perm = m.attention(x), m.attention(shuffle(x))
    torch.testing.assert_close(a_perm, a[:, :, perm][:, :, :, perm])


def test_with_positions_permuting_no_longer_permutes_the_output():
    m = _random(MultiHeadSelfAttention2d(16, heads=4, position="sine").double())
    x = torch.randn(2, 16, 5, 6, dtype=torch.float64)
    perm = torch.randperm(30, generator=torch.Generator().manual_seed(1))
    shuffle = lambda t: t.flatten(2)[:, :, perm].reshape_as(t)  # noqa: E731
    assert not torch.allclose(m(shuffle(x)), shuffle(m(x)))


def test_sine_code_is_detr_s_and_size_independent():
    for h, w, c in [(3, 5, 8), (4, 1, 12), (1, 1, 4)]:
        torch.testing.assert_close(sine_position_2d(h, w, c, dtype=torch.float64), naive_sine(h, w, c))
    big = sine_position_2d(7, 9, 16, dtype=torch.float64).reshape(7, 9, 16)
    small = sine_position_2d(3, 4, 16, dtype=torch.float64).reshape(3, 4, 16)
    torch.testing.assert_close(big[:3, :4], small)  # a position's code does not depend on H, W
    # a shift by one row rotates each (sin, cos) pair of the row half by the same angle everywhere
    p = big[..., :8].reshape(7, 9, 4, 2)
    s1, c1 = p[1:, :, :, 0], p[1:, :, :, 1]
    s0, c0 = p[:-1, :, :, 0], p[:-1, :, :, 1]
    torch.testing.assert_close(s1 * c0 - c1 * s0, (s1 * c0 - c1 * s0)[:1, :1].expand_as(s1))


# ---------------------------------------------------------------- the plug-in


def test_identity_at_initialisation_and_learns():
    m = attncourse.create("mhsa", 64)
    x = torch.randn(2, 64, 6, 5, requires_grad=True)
    y = m(x)
    assert torch.equal(y, x)
    y.square().sum().backward()
    assert m.proj.weight.grad.abs().sum() > 0  # W^O gets a gradient at once
    assert torch.equal(MultiHeadSelfAttention2d(16, heads=2, position="sine")(x[:, :16]), x[:, :16])
    rel = MultiHeadSelfAttention2d(16, heads=2, position="relative", size=(6, 5), identity_init=True)
    assert torch.equal(rel(x[:, :16]), x[:, :16])


@pytest.mark.parametrize("c, heads", [(64, 8), (32, 4), (128, 8), (256, 1)])
def test_parameter_count(c, heads):
    assert count_parameters(MultiHeadSelfAttention2d(c, heads=heads)) == 4 * c * c + 4 * c
    assert count_parameters(MultiHeadSelfAttention2d(c, heads=heads, bias=False)) == 4 * c * c
    assert count_parameters(MultiHeadSelfAttention2d(c, heads=heads, position="sine")) == 4 * c * c + 4 * c


def test_flops_count_the_projections_and_not_sdpa_on_cpu():
    c, h, w = 64, 7, 5
    n = h * w
    m = attncourse.create("mhsa", c)
    x = torch.randn(2, c, h, w)
    # FlopCounterMode has no formula for SDPA's CPU kernel: only 4 N C² multiply-adds per image count
    assert count_flops(m, x) == 2 * 2 * 4 * n * c * c


def test_sdpa_never_holds_the_n_by_n_matrix():
    m = _random(MultiHeadSelfAttention2d(16, heads=2))
    x = torch.randn(1, 16, 20, 20)
    n = 400
    assert peak_memory(lambda: m(x)) < 2 * n * n * 4  # the weights of both heads would be 2 N² floats
    assert peak_memory(lambda: m.attention(x)) >= 2 * n * n * 4


@pytest.mark.parametrize(
    "kwargs, words",
    [
        (dict(heads=3), ["MultiHeadSelfAttention2d", "channels=64", "heads=3"]),
        (dict(heads=0), ["MultiHeadSelfAttention2d", "heads"]),
        (dict(heads=2.0), ["MultiHeadSelfAttention2d", "heads"]),
        (dict(position="rope"), ["MultiHeadSelfAttention2d", "position"]),
        (dict(position="learned"), ["MultiHeadSelfAttention2d", "learned", "size"]),
        (dict(bias="yes"), ["MultiHeadSelfAttention2d", "bias"]),
        (dict(identity_init="yes"), ["MultiHeadSelfAttention2d", "identity_init"]),
        (dict(position="relative"), ["MultiHeadSelfAttention2d", "relative", "size"]),
        (dict(size=(3, 4)), ["MultiHeadSelfAttention2d", "size", "relative"]),
        (dict(position="sine", size=(3, 4)), ["MultiHeadSelfAttention2d", "size", "relative"]),
        (dict(position="relative", size=(0, 4)), ["MultiHeadSelfAttention2d", "size"]),
        (dict(position="relative", size=(3, 4, 5)), ["MultiHeadSelfAttention2d", "size"]),
        (dict(position="relative", size=4), ["MultiHeadSelfAttention2d", "size"]),
    ],
)
def test_impossible_hyperparameters(kwargs, words):
    with pytest.raises(ValueError) as info:
        MultiHeadSelfAttention2d(64, **kwargs)
    for w in words:
        assert w in str(info.value)


def test_sine_needs_channels_divisible_by_four():
    with pytest.raises(ValueError, match="MultiHeadSelfAttention2d.*divisible by 4"):
        MultiHeadSelfAttention2d(6, heads=2, position="sine")


def test_one_position_and_one_channel_per_head():
    m = _random(MultiHeadSelfAttention2d(4, heads=4, position="sine").double())
    x = torch.randn(1, 4, 1, 1, dtype=torch.float64)
    assert torch.equal(m.attention(x), torch.ones(1, 4, 1, 1, dtype=torch.float64))
    assert m(x).shape == x.shape


@pytest.mark.parametrize("position", [None, "sine", "relative"])
def test_gradcheck(position):
    size = (2, 3) if position == "relative" else None
    m = _random(MultiHeadSelfAttention2d(4, heads=2, position=position, size=size).double())
    x = torch.randn(1, 4, 2, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(m, (x,))


def test_export_with_sine_keeps_h_and_w_dynamic():
    m = _random(MultiHeadSelfAttention2d(16, heads=2, position="sine")).eval()
    x = torch.randn(2, 16, 6, 5)
    dims = {0: Dim("B", min=1, max=64), 2: Dim("H", min=1, max=256), 3: Dim("W", min=1, max=256)}
    ep = torch.export.export(m, (x,), dynamic_shapes=({k: v for k, v in dims.items()},))
    for shape in [(3, 16, 9, 4), (1, 16, 1, 1)]:
        y = torch.randn(shape)
        torch.testing.assert_close(ep.module()(y), m(y))


def test_onnx_with_sine_keeps_h_and_w_dynamic(tmp_path):
    m = _random(MultiHeadSelfAttention2d(16, heads=2, position="sine")).eval()
    assert_onnx_equals_eager(m, torch.randn(2, 16, 6, 5), {0: Dim("B"), 2: Dim("H"), 3: Dim("W")},
                             [(3, 16, 9, 4), (1, 16, 1, 1)], tmp_path / "mhsa_sine.onnx")


# ---------------------------------------------------------------- the relative position bias


@pytest.mark.parametrize("heads", [1, 2, 4])
@pytest.mark.parametrize("bias", [True, False])
def test_relative_equals_the_naive_derivation(heads, bias):
    h, w = 5, 7  # non-square, so a swapped row/column offset cannot pass
    m = _random(MultiHeadSelfAttention2d(8, heads=heads, bias=bias, position="relative", size=(h, w)).double())
    assert m.relative_bias.shape == (heads, 2 * h - 1, 2 * w - 1)
    assert m.relative_bias.abs().min() > 0  # a random, non-zero table
    x = torch.randn(2, 8, h, w, dtype=torch.float64)
    rel = naive_relative_bias(m.relative_bias.detach(), h, w)
    torch.testing.assert_close(m(x), naive_mhsa(x, *_weights(m), heads, rel=rel))
    # the naive reference can fail: without the bias, or with the query-key offset reversed
    assert not torch.allclose(m(x), naive_mhsa(x, *_weights(m), heads))
    assert not torch.allclose(m(x), naive_mhsa(x, *_weights(m), heads, rel=rel.transpose(-2, -1)))


@pytest.mark.parametrize("dy, dx", [(1, -2), (-4, 6), (0, 0), (2, 3)])
def test_one_table_entry_moves_exactly_the_pairs_at_its_offset(dy, dx):
    h, w = 5, 7
    m = MultiHeadSelfAttention2d(8, heads=2, position="relative", size=(h, w)).double()
    with torch.no_grad():
        m.qkv.weight.zero_()  # logits = B alone: uniform attention except where B is set
        m.relative_bias[1, dy + h - 1, dx + w - 1] = 1.0  # head 1, key - query = (dy, dx)
    a = m.attention(torch.randn(1, 8, h, w, dtype=torch.float64))
    n = h * w
    torch.testing.assert_close(a[0, 0], torch.full((n, n), 1 / n, dtype=torch.float64))  # head 0: untouched
    want = torch.zeros(n, n, dtype=torch.bool)
    for yq in range(h):
        for xq in range(w):
            yk, xk = yq + dy, xq + dx
            if 0 <= yk < h and 0 <= xk < w:
                want[yq * w + xq, yk * w + xk] = True
    assert want.any()
    assert torch.equal(a[0, 1] > 1 / n + 1e-12, want)  # raised exactly at the pairs with that offset


def _table(m):
    """The learned position table of a module with position="relative" or "learned"."""
    return m.relative_bias if m.position == "relative" else m.position_embedding


@pytest.mark.parametrize("position", ["relative", "learned"])
def test_with_a_zero_table_permuting_permutes_and_with_a_learned_one_not(position):
    m = _random(MultiHeadSelfAttention2d(16, heads=4, position=position, size=(5, 6)).double())
    x = torch.randn(2, 16, 5, 6, dtype=torch.float64)
    perm = torch.randperm(30, generator=torch.Generator().manual_seed(1))
    shuffle = lambda t: t.flatten(2)[:, :, perm].reshape_as(t)  # noqa: E731
    assert not torch.allclose(m(shuffle(x)), shuffle(m(x)))
    with torch.no_grad():
        _table(m).zero_()  # no bias or code: the attention of eq. (1), blind to order
    torch.testing.assert_close(m(shuffle(x)), shuffle(m(x)))


@pytest.mark.parametrize("c, heads, size", [(64, 8, (6, 5)), (32, 4, (7, 7)), (16, 1, (1, 9))])
def test_parameter_count_with_relative(c, heads, size):
    h, w = size
    base = 4 * c * c + 4 * c
    m = MultiHeadSelfAttention2d(c, heads=heads, position="relative", size=size)
    assert count_parameters(m) == base + heads * (2 * h - 1) * (2 * w - 1)
    assert "relative_index" not in m.state_dict()  # the index is rebuilt, not saved
    assert count_parameters(MultiHeadSelfAttention2d(c, heads=heads, identity_init=False)) == base


@pytest.mark.parametrize("position", ["relative", "learned"])
def test_relative_refuses_an_input_of_another_size(position):
    m = MultiHeadSelfAttention2d(16, heads=2, position=position, size=(5, 7))
    for shape in [(1, 16, 7, 5), (1, 16, 5, 6), (2, 16, 1, 1)]:
        for f in (m, m.attention):
            with pytest.raises(ValueError) as info:
                f(torch.randn(shape))
            msg = str(info.value)
            assert "MultiHeadSelfAttention2d" in msg and "(5, 7)" in msg and str(tuple(shape[2:])) in msg
    with pytest.raises(ValueError, match="MultiHeadSelfAttention2d"):
        m(torch.randn(1, 8, 5, 7))  # the channel check still comes first


@pytest.mark.parametrize("position", ["relative", "learned"])
def test_the_reference_refuses_relative(position):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
    import refs

    with pytest.raises(NotImplementedError, match="position"):
        refs.reference_for(MultiHeadSelfAttention2d(16, heads=2, position=position, size=(3, 4)))


# ---------------------------------------------------------------- identity_init


def test_identity_init_false_keeps_linear_s_default_and_is_not_the_identity():
    torch.manual_seed(0)
    m = MultiHeadSelfAttention2d(16, heads=2, identity_init=False)
    assert m.proj.weight.abs().min() > 0 and m.proj.bias.abs().min() > 0
    bound = 16**-0.5  # nn.Linear's default: kaiming_uniform(a=sqrt(5)) and the bias, both within 1/sqrt(fan_in)
    assert m.proj.weight.abs().max() <= bound and m.proj.bias.abs().max() <= bound
    x = torch.randn(2, 16, 4, 5)
    assert not torch.allclose(m(x), x)
    # the same weights as the default except W^O: identity_init changes W^O only
    torch.manual_seed(0)
    d = MultiHeadSelfAttention2d(16, heads=2)
    assert torch.equal(d.qkv.weight, m.qkv.weight) and torch.equal(d.qkv.bias, m.qkv.bias)
    assert not d.proj.weight.any() and not d.proj.bias.any()


@pytest.mark.parametrize("position", ["relative", "learned"])
def test_the_table_gets_a_gradient_at_init_only_without_identity_init(position):
    x = torch.randn(2, 16, 4, 5)
    for identity_init, moves in [(True, False), (False, True)]:
        torch.manual_seed(0)
        m = MultiHeadSelfAttention2d(16, heads=2, position=position, size=(4, 5), identity_init=identity_init)
        m(x).square().sum().backward()
        assert bool(_table(m).grad.any()) is moves  # through W^O: none while W^O = 0
        assert bool(m.qkv.weight.grad.any()) is moves  # nor W^Q, W^K, W^V


# ---------------------------------------------------------------- relative: export, compile, ONNX


@pytest.mark.parametrize("position", ["relative", "learned"])
def test_export_with_relative_static_h_w_and_dynamic_batch(position):
    m = _random(MultiHeadSelfAttention2d(16, heads=2, position=position, size=(6, 5))).eval()
    ep = torch.export.export(m, (torch.randn(2, 16, 6, 5),), dynamic_shapes=({0: Dim("B", min=1, max=64)},))
    for b in (3, 1):
        y = torch.randn(b, 16, 6, 5)
        torch.testing.assert_close(ep.module()(y), m(y))


@pytest.mark.parametrize("position", ["relative", "learned"])
def test_compile_fullgraph_with_relative_one_graph_for_two_batches_and_a_training_step(position):
    m = _random(MultiHeadSelfAttention2d(16, heads=2, position=position, size=(6, 5)))
    table = _table(m)
    graphs = []

    def eager_counting(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    torch._dynamo.reset()
    compiled = torch.compile(m.eval(), fullgraph=True, backend=eager_counting, dynamic=True)
    for b in (2, 3):
        y = torch.randn(b, 16, 6, 5)
        torch.testing.assert_close(compiled(y), m(y))
    assert len(graphs) == 1
    torch._dynamo.reset()
    m.train()
    x = torch.randn(2, 16, 6, 5)
    m(x).square().sum().backward()
    want = table.grad.clone()
    m.zero_grad()
    torch.compile(m, fullgraph=True, backend="eager")(x).square().sum().backward()
    torch.testing.assert_close(table.grad, want)
    torch._dynamo.reset()


@pytest.mark.parametrize("position", ["relative", "learned"])
def test_onnx_with_relative_static_h_w_and_dynamic_batch(tmp_path, position):
    m = _random(MultiHeadSelfAttention2d(16, heads=2, position=position, size=(6, 5))).eval()
    assert_onnx_equals_eager(m, torch.randn(2, 16, 6, 5), {0: Dim("B")}, [(3, 16, 6, 5), (1, 16, 6, 5)],
                             tmp_path / "mhsa_relative.onnx")


# ---------------------------------------------------------------- learned absolute code


@pytest.mark.parametrize("heads", [1, 2])
def test_learned_equals_the_naive_derivation(heads):
    h, w = 4, 6
    m = _random(MultiHeadSelfAttention2d(8, heads=heads, position="learned", size=(h, w)).double())
    assert m.position_embedding.shape == (h * w, 8)
    x = torch.randn(2, 8, h, w, dtype=torch.float64)
    pos = m.position_embedding.detach()
    torch.testing.assert_close(m(x), naive_mhsa(x, *_weights(m), heads, pos=pos))
    torch.testing.assert_close(m.attention(x)[0, 0].sum(-1), torch.ones(h * w, dtype=torch.float64))
    # the reference can fail: without the code, or with it in (w h) order
    assert not torch.allclose(m(x), naive_mhsa(x, *_weights(m), heads))
    swapped = pos.reshape(h, w, 8).transpose(0, 1).reshape(h * w, 8)
    assert not torch.allclose(m(x), naive_mhsa(x, *_weights(m), heads, pos=swapped))


def test_learned_starts_as_vit_s_and_counts_h_w_c_parameters():
    torch.manual_seed(0)
    c, size = 64, (12, 10)
    m = MultiHeadSelfAttention2d(c, heads=4, position="learned", size=size)
    assert 0.018 < m.position_embedding.std().item() < 0.022 and abs(m.position_embedding.mean().item()) < 0.002
    assert count_parameters(m) == 4 * c * c + 4 * c + size[0] * size[1] * c
    assert torch.equal(m(torch.zeros(1, c, *size)), torch.zeros(1, c, *size))  # still the identity at the start
