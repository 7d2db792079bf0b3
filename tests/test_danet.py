"""DANet's position and channel attention modules against the paper's equations (Fu et al., CVPR 2019)
and the official code's variant of the channel affinity."""

import pytest
import torch

import attncourse
from attncourse.cost import count_flops, count_parameters, peak_memory
from attncourse.plot import capture_gates
from attncourse.selfattn.danet import ChannelAttention, DualAttention, PositionAttention

AFFINITIES = ["paper", "official"]


# ---------------------------------------------------------------- the naive derivation


def conv1x1(a, weight, bias):
    """A 1×1 convolution of a (C, N) map: weight (out, C, 1, 1), bias (out,)."""
    return weight[:, :, 0, 0] @ a + bias[:, None]


def naive_pam(x, m):
    """Eqs. (1)-(2), one image and one output position j at a time."""
    B, C, H, W = x.shape
    out = torch.empty_like(x)
    for n in range(B):
        a = x[n].reshape(C, H * W)  # A: C × N
        q = conv1x1(a, m.query.weight, m.query.bias)  # the paper's C
        k = conv1x1(a, m.key.weight, m.key.bias)  # the paper's B
        d = conv1x1(a, m.value.weight, m.value.bias)  # the paper's D
        e = torch.empty_like(a)
        for j in range(H * W):
            logits = torch.stack([k[:, i] @ q[:, j] for i in range(H * W)])  # B_i · C_j
            s = torch.exp(logits - logits.max())
            s = s / s.sum()  # (1) s_ji, normalised over i
            e[:, j] = m.alpha * sum(s[i] * d[:, i] for i in range(H * W)) + a[:, j]  # (2)
        out[n] = e.reshape(C, H, W)
    return out


def naive_channel_weights(x, affinity="paper"):
    """Eq. (3) (or the official max(E) - E), one row j at a time: (B, C, C)."""
    B, C, H, W = x.shape
    X = torch.empty(B, C, C, dtype=x.dtype)
    for n in range(B):
        a = x[n].reshape(C, H * W)
        for j in range(C):
            logits = torch.stack([a[i] @ a[j] for i in range(C)])  # A_i · A_j
            if affinity == "official":
                logits = logits.max() - logits
            s = torch.exp(logits - logits.max())
            X[n, j] = s / s.sum()  # (3) x_ji, normalised over i
    return X


def naive_cam(x, beta, affinity="paper"):
    """Eq. (4): E_j = β Σ_i x_ji A_i + A_j."""
    B, C, H, W = x.shape
    X = naive_channel_weights(x, affinity)
    out = torch.empty_like(x)
    for n in range(B):
        a = x[n].reshape(C, H * W)
        for j in range(C):
            out[n, j] = (beta * sum(X[n, j, i] * a[i] for i in range(C)) + a[j]).reshape(H, W)
    return out


def randomised(m, seed=0):
    g = torch.Generator().manual_seed(seed)
    m = m.double()
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(0.5 * torch.randn(p.shape, generator=g, dtype=torch.float64))
    return m


# ---------------------------------------------------------------- parameters and FLOPs


def pam_parameters(c, r=8):
    d = c // r
    return 2 * (c * d + d) + c * c + c + 1


@pytest.mark.parametrize("c", [8, 16, 64, 100, 512])
def test_parameter_formula(c):
    assert count_parameters(PositionAttention(c)) == pam_parameters(c)
    assert count_parameters(ChannelAttention(c)) == 1
    assert count_parameters(DualAttention(c)) == pam_parameters(c) + 1
    if c % 8 == 0:  # the paper-sized form 1.25 C² + 1.25 C + 1
        assert pam_parameters(c) == 1.25 * c * c + 1.25 * c + 1


def test_the_issue_figures():
    assert count_parameters(PositionAttention(512)) == 328_321
    assert count_parameters(attncourse.create("pam", 64)) == 5_201
    assert count_parameters(attncourse.create("danet", 64)) == 5_202
    assert count_parameters(PositionAttention(64, reduction=2)) == 2 * (64 * 32 + 32) + 64 * 64 + 64 + 1


@pytest.mark.parametrize("affinity", AFFINITIES)
def test_flops_are_the_convs_and_the_four_products(affinity):
    # FlopCounterMode: 2 FLOPs per multiply-add. PAM: the three 1×1 convs 2·B·N·C·(2d + C), the
    # energies 2·B·N²·d, D Sᵀ 2·B·C·N²; CAM: A Aᵀ and X A, 2·B·C²·N each. Softmax, max, sums: zero.
    B, C, H, W = 2, 64, 7, 5
    N, d = H * W, C // 8
    pam = 2 * B * N * C * (2 * d + C) + 2 * B * N * N * d + 2 * B * C * N * N
    cam = 2 * 2 * B * C * C * N
    x = torch.randn(B, C, H, W)
    assert count_flops(PositionAttention(C), x) == pam
    assert count_flops(ChannelAttention(C, channel_affinity=affinity), x) == cam
    assert count_flops(DualAttention(C, channel_affinity=affinity), x) == pam + cam


def test_peak_memory_grows_with_n_squared_for_pam_and_c_squared_for_cam():
    C = 16
    peaks = {}
    for hw in (8, 16):
        x = torch.randn(1, C, hw, hw)
        for name, m in [("pam", PositionAttention(C)), ("cam", ChannelAttention(C))]:
            with torch.no_grad():
                peaks[name, hw] = peak_memory(lambda: m(x))
    n8, n16 = 64, 256
    assert peaks["pam", 8] >= 4 * n8 * n8 and peaks["pam", 16] >= 4 * n16 * n16  # S is materialised
    assert peaks["pam", 16] / peaks["pam", 8] > 8  # N² dominates: 4x more positions, > 8x the memory
    assert peaks["cam", 16] < 4 * n16 * n16 / 4  # no N × N anywhere
    assert peaks["cam", 16] / peaks["cam", 8] < 4.5  # C × C plus maps of size C·N: about 4x


# ---------------------------------------------------------------- identity at initialisation


@pytest.mark.parametrize("cls", [PositionAttention, ChannelAttention, DualAttention])
@pytest.mark.parametrize("shape", [(2, 16, 7, 5), (1, 16, 1, 1), (3, 16, 4, 9)])
@pytest.mark.parametrize("training", [True, False])
def test_identity_at_initialisation(cls, shape, training):
    m = cls(16).train(training)
    x = torch.randn(shape)
    assert torch.equal(m(x), x)


def test_scales_start_at_zero_and_are_learned():
    m = DualAttention(16)
    assert m.position.alpha.item() == 0 and m.channel.beta.item() == 0
    x = torch.randn(2, 16, 5, 6)
    m(x).square().sum().backward()
    assert m.position.alpha.grad.abs() > 0 and m.channel.beta.grad.abs() > 0


# ---------------------------------------------------------------- equality with the equations


@pytest.mark.parametrize("shape", [(2, 16, 5, 7), (1, 16, 1, 1), (1, 16, 3, 1)])
@pytest.mark.parametrize("reduction", [8, 3])
def test_pam_matches_the_naive_derivation(shape, reduction):
    m = randomised(PositionAttention(16, reduction=reduction))
    x = torch.randn(shape, dtype=torch.float64)
    torch.testing.assert_close(m(x), naive_pam(x, m))


@pytest.mark.parametrize("affinity", AFFINITIES)
@pytest.mark.parametrize("shape", [(2, 6, 5, 7), (1, 6, 1, 1)])
def test_cam_matches_the_naive_derivation(affinity, shape):
    m = randomised(ChannelAttention(6, channel_affinity=affinity))
    x = 0.3 * torch.randn(shape, dtype=torch.float64)
    torch.testing.assert_close(m(x), naive_cam(x, m.beta, affinity))
    torch.testing.assert_close(m.channel_attention(x), naive_channel_weights(x, affinity))


@pytest.mark.parametrize("affinity", AFFINITIES)
def test_dual_is_pam_plus_cam_minus_the_input(affinity):
    m = randomised(DualAttention(16, channel_affinity=affinity))
    x = 0.3 * torch.randn(2, 16, 4, 5, dtype=torch.float64)
    pam, cam = PositionAttention(16).double(), ChannelAttention(16, channel_affinity=affinity).double()
    pam.load_state_dict(m.position.state_dict())
    cam.load_state_dict(m.channel.state_dict())
    torch.testing.assert_close(m(x), pam(x) + cam(x) - x)
    torch.testing.assert_close(m(x), naive_pam(x, m.position) + naive_cam(x, m.channel.beta, affinity) - x)


def test_official_affinity_is_the_softmax_of_minus_the_energy():
    x = 0.3 * torch.randn(2, 8, 4, 5, dtype=torch.float64)
    a = x.flatten(2)
    energy = a @ a.transpose(1, 2)
    official = ChannelAttention(8, channel_affinity="official").channel_attention(x)
    torch.testing.assert_close(official, torch.softmax(-energy, dim=-1))
    torch.testing.assert_close(ChannelAttention(8).channel_attention(x), torch.softmax(energy, dim=-1))
    # the paper's form favours the most similar channel, the official form the most dissimilar one
    assert torch.equal(ChannelAttention(8).channel_attention(x).argmax(-1), energy.argmax(-1))
    assert torch.equal(official.argmax(-1), energy.argmin(-1))


def test_the_naive_reference_can_fail():
    """Plausible wrong variants must not match the module."""
    m = randomised(PositionAttention(16))
    x = torch.randn(2, 16, 4, 5, dtype=torch.float64)
    out = m(x)
    swapped = randomised(PositionAttention(16))  # query and key exchanged: S transposed before the softmax
    with torch.no_grad():
        swapped.query.load_state_dict(m.key.state_dict())
        swapped.key.load_state_dict(m.query.state_dict())
    assert not torch.allclose(out, naive_pam(x, swapped))
    s = m.attention(x)[:, 0]
    d = m.value(x).flatten(2)
    assert not torch.allclose(out, (m.alpha * d @ s + x.flatten(2)).view_as(x))  # D S instead of D Sᵀ
    s_cols = torch.softmax(m.query(x).flatten(2).transpose(1, 2) @ m.key(x).flatten(2), dim=1)  # over j
    assert not torch.allclose(out, (m.alpha * d @ s_cols.transpose(1, 2) + x.flatten(2)).view_as(x))
    cam = randomised(ChannelAttention(6))
    y = 0.3 * torch.randn(2, 6, 3, 4, dtype=torch.float64)
    assert not torch.allclose(cam(y), naive_cam(y, cam.beta, "official"))
    X = naive_channel_weights(y)
    assert not torch.allclose(cam(y), cam.beta * (X.transpose(1, 2) @ y.flatten(2)).view_as(y) + y)  # Xᵀ A


# ---------------------------------------------------------------- the weights forward applies


@pytest.mark.parametrize("shape", [(2, 16, 5, 7), (1, 16, 1, 1)])
@pytest.mark.parametrize("cls", [PositionAttention, DualAttention])
def test_attention_is_what_forward_applies(cls, shape):
    m = randomised(cls(16)).float()
    x = torch.randn(shape)
    gates = capture_gates(m, x)
    B, C, H, W = shape
    s = m.attention(x)
    assert s.shape == (B, 1, H * W, H * W)
    torch.testing.assert_close(s.sum(-1), torch.ones(B, 1, H * W))
    name = "gate" if cls is PositionAttention else "position.gate"
    torch.testing.assert_close(s[:, 0], gates[name])
    if cls is DualAttention:
        torch.testing.assert_close(m.channel_attention(x), gates["channel.gate"])
        assert m.position.gate.kind == "attention" and m.channel.gate.kind == "channel"


def test_queries_are_in_h_w_order():
    """Row j of S belongs to position (j // W, j % W): the query of that position alone decides it."""
    m = randomised(PositionAttention(16)).float()
    x = torch.randn(1, 16, 3, 5)
    s = m.attention(x)[0, 0]
    x2 = x.clone()
    x2[0, :, 1, 2] = torch.randn(16)  # change position (1, 2) = row 7 only: every row changes (keys),
    s2 = m.attention(x2)[0, 0]  # but only row 7's query changed, so the ratios within other rows ...
    ratio = lambda t: t[:, :7] / t[:, :7].sum(-1, keepdim=True)  # noqa: E731 ... among unchanged keys stay
    others = [r for r in range(15) if r != 7]
    torch.testing.assert_close(ratio(s2)[others], ratio(s)[others])
    assert not torch.allclose(ratio(s2)[7], ratio(s)[7])


def test_cam_mixes_no_positions():
    m = randomised(ChannelAttention(8)).float()
    x = torch.randn(2, 8, 3, 4)
    eye = m.attention(x)
    assert eye.shape == (2, 1, 12, 12) and torch.equal(eye[0, 0], torch.eye(12))
    torch.testing.assert_close(m.channel_attention(x), capture_gates(m, x)["gate"])
    torch.testing.assert_close(m.channel_attention(x).sum(-1), torch.ones(2, 8))


# ---------------------------------------------------------------- gradients


@pytest.mark.parametrize("cls, kwargs", [(PositionAttention, {}), (ChannelAttention, {}),
                                         (ChannelAttention, {"channel_affinity": "official"}), (DualAttention, {})])
def test_gradcheck_float64(cls, kwargs):
    m = randomised(cls(8, **kwargs))
    x = 0.5 * torch.randn(2, 8, 2, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(m, (x,))


# ---------------------------------------------------------------- bad options and input


@pytest.mark.parametrize("cls", [PositionAttention, DualAttention])
@pytest.mark.parametrize("channels, kwargs", [(7, {}), (4, {}), (64, {"reduction": 65})])
def test_query_key_width_below_one_is_refused(cls, channels, kwargs):
    with pytest.raises(ValueError, match=f"{cls.__name__} expected channels // reduction >= 1.*channels={channels}"):
        cls(channels, **kwargs)


def test_cam_has_no_width_limit():
    assert ChannelAttention(1)(torch.randn(2, 1, 3, 3)).shape == (2, 1, 3, 3)
    assert PositionAttention(8).width == 1


@pytest.mark.parametrize("cls", [PositionAttention, DualAttention])
@pytest.mark.parametrize("reduction", [0, -8, 2.0, True, "8"])
def test_bad_reduction(cls, reduction):
    with pytest.raises(ValueError, match=f"{cls.__name__}.*reduction"):
        cls(64, reduction=reduction)


@pytest.mark.parametrize("cls", [ChannelAttention, DualAttention])
@pytest.mark.parametrize("affinity", ["Paper", "softmax", None, 1])
def test_bad_channel_affinity(cls, affinity):
    with pytest.raises(ValueError, match=f"{cls.__name__}.*channel_affinity"):
        cls(64, channel_affinity=affinity)


@pytest.mark.parametrize("cls", [PositionAttention, ChannelAttention, DualAttention])
@pytest.mark.parametrize(
    "x, words",
    [
        (torch.randn(2, 32, 7, 9), ["(B, 64, H, W)", "(2, 32, 7, 9)"]),
        (torch.randn(64, 7, 9), ["4-D", "(64, 7, 9)"]),
        (torch.ones(2, 64, 7, 9, dtype=torch.int64), ["floating", "int64"]),
    ],
)
def test_bad_input_in_forward_and_in_the_weight_methods(cls, x, words):
    m = cls(64)
    methods = [m, m.attention] + ([m.channel_attention] if hasattr(m, "channel_attention") else [])
    for fn in methods:
        with pytest.raises(ValueError) as info:
            fn(x)
        assert cls.__name__ in str(info.value) and all(w in str(info.value) for w in words)


def test_registered_and_created_with_options():
    assert isinstance(attncourse.create("pam", 64), PositionAttention)
    assert isinstance(attncourse.create("cam", 64), ChannelAttention)
    m = attncourse.create("danet", 32, reduction=4, channel_affinity="official")
    assert isinstance(m, DualAttention) and m.position.width == 8 and m.channel.channel_affinity == "official"


def test_official_affinity_exports_with_dynamic_sizes():
    """The deploy tests build the defaults; the official form (amax) must export as well."""
    from torch.export import Dim

    m = DualAttention(16, channel_affinity="official").eval()
    with torch.no_grad():
        m.position.alpha.fill_(0.3), m.channel.beta.fill_(-0.2)
    x = torch.randn(2, 16, 6, 5)
    dims = {"x": {0: Dim("b", min=1), 2: Dim("h", min=1), 3: Dim("w", min=1)}}
    program = torch.export.export(m, (x,), dynamic_shapes=dims).module()
    for shape in [(3, 16, 9, 4), (1, 16, 1, 1)]:
        y = torch.randn(shape)
        torch.testing.assert_close(program(y), m(y))


# ---------------------------------------------------------------- a bias that the softmax cancels


@pytest.mark.parametrize("cls", [PositionAttention, DualAttention])
def test_key_bias_changes_nothing_and_gets_zero_gradient(cls):
    """C_j · b_B is the same for every position i of row j: the softmax of eq. (1) cancels it."""
    m = randomised(cls(16))
    key = m.key if cls is PositionAttention else m.position.key
    query = m.query if cls is PositionAttention else m.position.query
    x = torch.randn(2, 16, 5, 6, dtype=torch.float64)
    (m(x) * torch.randn_like(x)).sum().backward()
    assert key.bias.grad.abs().max() < 1e-12 * key.weight.grad.abs().max()
    assert query.bias.grad.abs().max() > 1e-3 and key.weight.grad.abs().max() > 1e-3  # the others get one
    y = m(x)
    with torch.no_grad():
        key.bias.add_(3 * torch.randn_like(key.bias))
    torch.testing.assert_close(m(x), y, rtol=1e-12, atol=1e-12)
    with torch.no_grad():
        query.bias.add_(1.0)  # the contrast: the query's bias is not cancelled
    assert (m(x) - y).abs().max() > 1e-3
