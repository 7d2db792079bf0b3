"""MUSE (parallel multi-scale attention): equal to the official encoder layer re-typed (copied
weights, float64; both of its convolution paths, padding masks), to a per-position derivation from
the paper's equations, its parameter formula, its defaults and start, its input checks, and the
property a reader must know when it runs on images: the 1-D convolution reads row-major neighbours,
wrapping across rows. The module and deploy contracts are checked for every registered module in
test_contract.py and test_deploy.py."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from einops import rearrange

import attncourse
from attncourse.blocks.muse import MUSE2d, MUSELayer
from attncourse.nets import TinyViT

from module_checks import randomised


# ------------------------------------------------------- the official code, re-typed for the test
# lancopku/MUSE @ 86a988b (fairseq 0.6.2):
# - fairseq/modules/dynamic_convolution.py, DynamicConv1dTBC._forward_expanded / _forward_unfolded
#   (weight_softmax=True, renorm_padding=False, no bias, no in_proj; fairseq/modules/unfold.py's
#   unfold1d inlined); DropConnect left out (weight_dropout = 0 in eval);
# - fairseq/modules/multihead_attention.py, ParallelMultiheadAttention.forward for encoder
#   self-attention ('es', attn_dynamic_cat=1, no incremental state), with key_padding_mask and
#   dynamic_padding; its softmax runs in the input dtype (the official .float() is for fp16);
# - fairseq/models/combine_transformer.py, TransformerCombineEncoderLayer.forward without dropout.
# Changed: weights are passed in (the module's, copied), and `unfold` picks the path (the official
# picks the unfold path for T > 512).

def official_dynamic_conv(x, weight_linear, K, H, padding_l, unfold):
    T, B, C = x.size()
    R = C // H
    weight = F.linear(x, weight_linear).view(T * B * H, -1)
    if unfold:
        if K > 1:
            xp = F.pad(x, (0, 0, 0, 0, padding_l, K - 1 - padding_l), value=0)
            x_unfold = xp.as_strided((T, B, C, K), (B * C, C, 1, B * C))
        else:
            x_unfold = x.unsqueeze(3)
        x_unfold = x_unfold.reshape(T * B * H, R, K)
        weight = F.softmax(weight, dim=1).narrow(1, 0, K)
        return torch.bmm(x_unfold, weight.unsqueeze(2)).view(T, B, C)
    weight = F.softmax(weight, dim=1)
    weight = weight.narrow(1, 0, K).contiguous()
    weight = weight.view(T, B * H, K).transpose(0, 1)
    x = x.contiguous().view(T, B * H, R).transpose(0, 1)
    weight_expanded = weight.new_zeros(B * H, T, T + K - 1, requires_grad=False)
    weight_expanded.as_strided((B * H, T, K), (T * (T + K - 1), T + K, 1)).copy_(weight)
    weight_expanded = weight_expanded.narrow(2, padding_l, T)
    output = torch.bmm(weight_expanded, x)
    return output.transpose(0, 1).contiguous().view(T, B, C)


def official_parallel_attention(m, query, key_padding_mask, dynamic_padding, unfold, causal=False):
    tgt_len, bsz, embed_dim = query.size()
    H, hd = m.heads, m.head_dim
    q, k, v = F.linear(query, m.in_proj.weight, m.in_proj.bias).chunk(3, dim=-1)
    q = q * hd**-0.5
    q = q.contiguous().view(tgt_len, bsz * H, hd).transpose(0, 1)
    k = k.contiguous().view(-1, bsz * H, hd).transpose(0, 1)
    v = v.contiguous().view(-1, bsz * H, hd).transpose(0, 1)
    dynamic_x = v
    src_len = k.size(1)
    attn_weights = torch.bmm(q, k.transpose(1, 2))
    if key_padding_mask is not None:
        attn_weights = attn_weights.view(bsz, H, tgt_len, src_len)
        attn_weights = attn_weights.masked_fill(key_padding_mask.unsqueeze(1).unsqueeze(2), float("-inf"))
        attn_weights = attn_weights.view(bsz * H, tgt_len, src_len)
    attn_weights = F.softmax(attn_weights, dim=-1)
    attn = torch.bmm(attn_weights, v)
    attn = attn.transpose(0, 1).contiguous().view(tgt_len, bsz, embed_dim)
    if len(m.kernels) > 0:
        dynamic_results = []
        dynamic_x = dynamic_x.transpose(0, 1).contiguous().view(tgt_len, bsz, embed_dim)
        if key_padding_mask is not None and dynamic_padding:
            dynamic_x = dynamic_x.masked_fill(key_padding_mask.transpose(0, 1).unsqueeze(2), 0)
        for i, K in enumerate(m.kernels):
            dynamic_results.append(official_dynamic_conv(dynamic_x, m.kernel_proj[i].weight, K, H, K - 1 if causal else K // 2, unfold))
        all_res = [attn]
        if m.dynamic_gate:
            dynamic_res = torch.sum(torch.stack(dynamic_results, dim=-1) * F.softmax(m.alpha, dim=0), dim=-1)
            all_res.append(dynamic_res)
        else:
            all_res.extend(dynamic_results)
        attn = torch.cat(all_res, -1)
    return F.linear(attn, m.out_proj.weight, m.out_proj.bias)


def official_encoder_layer(m, x, encoder_padding_mask=None, unfold=False, causal=False):
    """x: (T, B, C). ``causal``: the convolution padded as in the decoder (k - 1 on the left), for
    the test that the re-typed code can fail."""
    normalize_before = m.norm_place == "pre"
    ln = lambda t: F.layer_norm(t, (m.dim,), m.norm.weight, m.norm.bias, m.norm.eps)  # noqa: E731
    residual = x
    if normalize_before:
        x = ln(x)
    x1 = official_parallel_attention(m, x, encoder_padding_mask, m.dynamic_padding, unfold, causal)
    x2 = F.linear(F.relu(F.linear(x, m.fc1.weight, m.fc1.bias)), m.fc2.weight, m.fc2.bias)
    x = x1 + x2
    x = x + residual
    if not normalize_before:
        x = ln(x)
    return x


SETTINGS = [
    {},
    {"kernels": (3,)},
    {"kernels": ()},
    {"kernels": (1, 5, 7), "dynamic_gate": False},
    {"norm": "pre", "heads": 2},
    {"kernels": (3, 15), "heads": 1, "mlp_ratio": 4},
]


@pytest.mark.parametrize("unfold", [False, True], ids=["banded", "unfold"])
@pytest.mark.parametrize("settings", SETTINGS, ids=lambda s: ",".join(f"{k}={v}" for k, v in s.items()) or "defaults")
def test_equals_the_official_layer_with_copied_weights(settings, unfold):
    m = randomised(MUSELayer(8, **settings), std=0.5)
    t = torch.randn(3, 11, 8, dtype=torch.float64)  # N = 11 < 15: the long kernel reaches past both ends
    want = official_encoder_layer(m, t.transpose(0, 1), unfold=unfold).transpose(0, 1)  # fairseq's (T, B, C)
    torch.testing.assert_close(m(t), want)


@pytest.mark.parametrize("dynamic_padding", [False, True])
def test_equals_the_official_layer_with_a_padding_mask(dynamic_padding):
    m = randomised(MUSELayer(8, dynamic_padding=dynamic_padding), std=0.5)
    t = torch.randn(3, 9, 8, dtype=torch.float64)
    mask = torch.zeros(3, 9, dtype=torch.bool)
    mask[0, :3] = True  # fairseq pads the source on the left
    mask[2, :1] = True
    want = official_encoder_layer(m, t.transpose(0, 1), mask).transpose(0, 1)
    torch.testing.assert_close(m(t, key_padding_mask=mask), want)


def test_the_retyped_official_code_can_fail():
    m = randomised(MUSELayer(8), std=0.5)
    t = torch.randn(2, 10, 8, dtype=torch.float64)
    want = official_encoder_layer(m, t.transpose(0, 1)).transpose(0, 1)
    torch.testing.assert_close(m(t), want)
    causal = official_encoder_layer(m, t.transpose(0, 1), causal=True).transpose(0, 1)  # the decoder's padding k - 1
    assert not torch.allclose(m(t), causal)
    with torch.no_grad():
        m.alpha.copy_(torch.tensor([2.0, -1.0]))  # another mix of the two kernel sizes
    assert not torch.allclose(m(t), want)


# ------------------------------------------------------- the paper's equations, one position at a time

def naive_muse(m, t, wrong=None):
    """Eqs. (2)-(7) of the journal version for each token n: attention, dynamic depthwise
    convolutions of V with a k-tap kernel per head predicted from V_n, the softmax(alpha) mix,
    W_2^A and W_2^C as the column blocks of out_proj, the FFN, the residual sum, LayerNorm."""
    B, N, C = t.shape
    h, d = m.heads, m.head_dim
    W = m.in_proj.weight.detach()
    bias = m.in_proj.bias.detach()
    Wq, Wk, Wv = W.split(C)
    bq, bk, bv = bias.split(C)
    Wo, bo = m.out_proj.weight.detach(), m.out_proj.bias.detach()
    Wo_blocks = Wo.split(C, dim=1)  # W_2^A, then W_2^C (or one block per kernel without the gate)
    out = torch.empty_like(t)
    for b in range(B):
        X = t[b]
        Xin = F.layer_norm(X, (C,), m.norm.weight, m.norm.bias, m.norm.eps) if m.norm_place == "pre" else X
        Q, K, V = Xin @ Wq.T + bq, Xin @ Wk.T + bk, Xin @ Wv.T + bv
        for n in range(N):
            att = torch.zeros(C, dtype=t.dtype)
            for head in range(h):
                cs = slice(head * d, (head + 1) * d)
                s = torch.stack([Q[n, cs] @ K[j, cs] / math.sqrt(d) for j in range(N)])  # (2)
                a = torch.softmax(s, 0)
                att[cs] = sum(a[j] * V[j, cs] for j in range(N))
            y = Wo_blocks[0] @ att + bo
            convs = []
            for i, k in enumerate(m.kernels):
                src = Xin if wrong == "conv reads X" else V
                w = (src[n] @ m.kernel_proj[i].weight.detach().T).view(h, k).softmax(-1)  # (6): kernel from V_n
                conv = torch.zeros(C, dtype=t.dtype)
                for c in range(C):
                    for j in range(k):
                        p = n + j - k // 2 if wrong != "taps reversed" else n + k // 2 - j
                        if 0 <= p < N:  # zeros outside the sequence
                            conv[c] += w[c // d, j] * src[p, c]
                convs.append(conv)
            if convs and m.dynamic_gate:
                g = torch.softmax(m.alpha.detach(), 0)
                y = y + Wo_blocks[1] @ sum(g[i] * cv for i, cv in enumerate(convs))  # (7), then W_2^C (5)
            else:
                for i, cv in enumerate(convs):
                    y = y + Wo_blocks[1 + i] @ cv
            f = m.fc2.weight.detach() @ torch.relu(m.fc1.weight.detach() @ Xin[n] + m.fc1.bias.detach()) + m.fc2.bias.detach()  # (3)
            z = X[n] + y + f  # (4)
            out[b, n] = F.layer_norm(z, (C,), m.norm.weight, m.norm.bias, m.norm.eps) if m.norm_place == "post" else z
    return out


@pytest.mark.parametrize("settings", [{}, {"kernels": (1, 5), "dynamic_gate": False, "heads": 2}, {"norm": "pre"}],
                         ids=["defaults", "concat", "pre"])
def test_equals_the_per_position_derivation(settings):
    m = randomised(MUSELayer(4, heads=settings.pop("heads", 4), **settings), std=0.5)
    t = torch.randn(2, 6, 4, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(m(t), naive_muse(m, t))


@pytest.mark.parametrize("wrong", ["conv reads X", "taps reversed"])
def test_the_derivation_can_fail(wrong):
    m = randomised(MUSELayer(4, heads=2), std=0.5)
    t = torch.randn(1, 6, 4, dtype=torch.float64)
    with torch.no_grad():
        assert not torch.allclose(m(t), naive_muse(m, t, wrong=wrong))


def test_the_feature_map_block_is_the_layer_on_row_major_tokens():
    m = randomised(MUSE2d(8, heads=2), std=0.5)
    x = torch.randn(2, 8, 3, 5, dtype=torch.float64)
    t = rearrange(x, "b c h w -> b (h w) c")
    torch.testing.assert_close(m(x), rearrange(m.layer(t), "b (h w) c -> b c h w", h=3))
    torch.testing.assert_close(m.attention(x), m.layer.attention(t))


def test_the_convolution_wraps_across_rows_on_a_map():
    """Only the kernel-3 convolution left (attention's and FFN's outputs zeroed): the output at the
    end of row 0 depends on the first pixel of row 1, not on the pixel below it."""
    m = MUSE2d(4, heads=2, kernels=(3,)).double()
    with torch.no_grad():
        m.layer.out_proj.weight[:, :4] = 0  # W_2^A
        m.layer.fc2.weight.zero_()
    H, W = 3, 5
    x = torch.randn(1, 4, H, W, dtype=torch.float64, requires_grad=True)
    m(x)[0, :, 0, W - 1].sum().backward()
    reach = x.grad[0].abs().sum(0) > 0
    want = torch.zeros(H, W, dtype=torch.bool)
    want[0, W - 2 :] = True  # left neighbour and itself
    want[1, 0] = True  # the right neighbour in row-major order: the next row's first pixel
    assert torch.equal(reach, want)


def test_attention_and_kernels_are_the_weights_forward_applies():
    m = randomised(MUSELayer(8, heads=2, kernels=(3, 5)), std=0.5)
    t = torch.randn(2, 7, 8, dtype=torch.float64)
    a = m.attention(t)
    assert a.shape == (2, 2, 7, 7)
    torch.testing.assert_close(a.sum(-1), torch.ones(2, 2, 7, dtype=torch.float64))
    torch.testing.assert_close(a, torch.softmax(m._logits(t, None), -1))
    ks = m.dynamic_kernels(t)
    assert [k.shape for k in ks] == [(2, 7, 2, 3), (2, 7, 2, 5)]
    torch.testing.assert_close(ks[1].sum(-1), torch.ones(2, 7, 2, dtype=torch.float64))
    torch.testing.assert_close(m.branch_weights(), torch.softmax(m.alpha, 0))
    seen = []
    handles = [g.register_forward_hook(lambda mod, i, o: seen.append(mod.kind)) for g in (m.kernel_gate, m.branch_gate)]
    m(t)
    for hd in handles:
        hd.remove()
    assert seen.count("kernel") == 2 and seen.count("branch") == 1


def test_a_padding_mask_hides_padding_tokens():
    m = randomised(MUSELayer(8, heads=2, dynamic_padding=True), std=0.5)
    t = torch.randn(1, 9, 8, dtype=torch.float64)
    mask = torch.zeros(1, 9, dtype=torch.bool)
    mask[0, :3] = True
    t2 = t.clone()
    t2[0, :3] = torch.randn(3, 8, dtype=torch.float64)  # other padding content
    torch.testing.assert_close(m(t, mask)[0, 3:], m(t2, mask)[0, 3:])
    m.dynamic_padding = False  # the official default: the convolution still reads padding tokens' V
    assert not torch.allclose(m(t, mask)[0, 3:], m(t2, mask)[0, 3:])


# ------------------------------------------------------- cost, defaults, start

def formula(C, F_, h, kernels, gate=True):
    n = len(kernels)
    if n == 0:
        return 4 * C * C + 2 * C * F_ + 7 * C + F_
    extra = C * C if gate else n * C * C
    return 4 * C * C + extra + 2 * C * F_ + 7 * C + F_ + C * h * sum(kernels) + (n if gate else 0)


@pytest.mark.parametrize("C, ratio, h, kernels", [(8, 2, 4, (3, 15)), (64, 4, 8, (7,)), (32, 2, 4, ()), (48, 1.5, 3, (1, 3, 5))])
def test_parameter_count_matches_the_formula(C, ratio, h, kernels):
    assert attncourse.count_parameters(MUSELayer(C, heads=h, mlp_ratio=ratio, kernels=kernels)) == formula(C, int(C * ratio), h, kernels)
    m = MUSELayer(C, heads=h, mlp_ratio=ratio, kernels=kernels or (3,), dynamic_gate=False)
    assert attncourse.count_parameters(m) == formula(C, int(C * ratio), h, kernels or (3,), gate=False)
    m = MUSELayer(C, heads=h, mlp_ratio=ratio, kernels=kernels or (3,), shared_projection=False)
    assert attncourse.count_parameters(m) == formula(C, int(C * ratio), h, kernels or (3,)) + C * C + C


def test_the_official_configurations():
    """IWSLT14 De-En (C 384, F 768, 4 heads, kernels 3 and 15) and WMT (C 768, F 3072, 16 heads)."""
    assert attncourse.count_parameters(MUSELayer(384)) == 1_358_210 == 5 * 384**2 + 2 * 384 * 768 + 7 * 384 + 768 + 384 * 4 * 18 + 2
    assert attncourse.count_parameters(MUSELayer(384, kernels=())) == 1_183_104
    assert attncourse.count_parameters(MUSELayer(768, heads=16, mlp_ratio=4)) == 7_897_346


def test_defaults_and_the_official_start():
    m = MUSE2d(64)
    layer = m.layer
    assert (layer.heads, layer.hidden, layer.kernels, layer.dynamic_gate, layer.norm_place, layer.shared_projection) == (
        4, 128, (3, 15), True, "post", True)
    assert layer.v_proj is None and not layer.dynamic_padding and layer.norm.eps == 1e-5
    torch.testing.assert_close(layer.alpha, torch.full((2,), 0.5))
    for lin in (layer.in_proj, layer.out_proj, layer.fc1, layer.fc2):
        assert torch.count_nonzero(lin.bias) == 0
    # out_proj: Kaiming-uniform with a = 1, bound sqrt(3 / fan_in); in_proj as nn.Linear, bound sqrt(1 / fan_in)
    assert layer.out_proj.weight.abs().max() <= math.sqrt(3 / 128) and layer.out_proj.weight.abs().max() > math.sqrt(1 / 128)
    assert layer.in_proj.weight.abs().max() <= math.sqrt(1 / 64)
    assert layer.kernel_proj[1].weight.shape == (4 * 15, 64) and layer.kernel_proj[1].bias is None


def test_tiny_vit_runs_muse_blocks():
    net = TinyViT(1, 3, size=(8, 6), dim=16, depth=2, block="muse", block_kwargs={"heads": 4, "mlp_ratio": 2})
    assert net(torch.randn(2, 1, 8, 6)).shape == (2, 3)


# ------------------------------------------------------- bad settings and input

@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"heads": 5}, ["divisible", "heads=5"]),
        ({"heads": 0}, ["heads", ">= 1"]),
        ({"heads": None}, ["heads", "None"]),
        ({"kernels": (3, 4)}, ["odd", "(3, 4)"]),
        ({"kernels": (3, 3)}, ["distinct"]),
        ({"kernels": 3}, ["sequence", "3"]),
        ({"kernels": (0,)}, ["kernel size", ">= 1"]),
        ({"mlp_ratio": 0}, ["mlp_ratio", "positive"]),
        ({"norm": "sandwich"}, ["norm", "'post'"]),
        ({"dynamic_gate": 1}, ["dynamic_gate", "True or False", "got 1"]),
        ({"kernels": (), "shared_projection": False}, ["no convolution"]),
    ],
)
def test_impossible_settings_are_refused(kwargs, words):
    with pytest.raises(ValueError) as info:
        MUSE2d(12, **kwargs)
    for w in words:
        assert w in str(info.value)


@pytest.mark.parametrize(
    "x, mask, words",
    [
        (torch.randn(2, 5, 6), None, ["MUSELayer", "(B, N, 8)", "(2, 5, 6)"]),
        (torch.randn(5, 8), None, ["3-D", "(5, 8)"]),
        (torch.randn(2, 5, 8), torch.zeros(2, 5), ["bool", "float32"]),
        (torch.randn(2, 5, 8), torch.zeros(5, 2, dtype=torch.bool), ["(2, 5)", "(5, 2)"]),
        (torch.randn(2, 5, 8), [[True]], ["key_padding_mask", "list"]),
    ],
)
def test_bad_input_to_the_layer(x, mask, words):
    with pytest.raises(ValueError) as info:
        MUSELayer(8)(x, key_padding_mask=mask)
    for w in words:
        assert w in str(info.value)


def test_gradcheck():
    m = randomised(MUSE2d(4, heads=2, kernels=(3, 5)), std=0.5)
    x = torch.randn(2, 4, 2, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(m, (x,))


def test_conv_weights_are_banded_matrices_that_forward_applies():
    m = randomised(MUSELayer(8, heads=2), std=0.5)
    t = torch.randn(2, 20, 8, dtype=torch.float64)
    (d,) = m.conv_weights(t)  # gated: one matrix, the two kernel sizes mixed
    assert d.shape == (2, 2, 20, 20)
    off = (torch.arange(20)[None, :] - torch.arange(20)[:, None]).abs()
    assert torch.count_nonzero(d[..., off > 7]) == 0  # the largest kernel's reach, 15 // 2
    torch.testing.assert_close(d[..., 7:13, :].sum(-1), torch.ones(2, 2, 6, dtype=torch.float64))  # rows away from the ends
    # D V per head, with W_2^C, is the convolution's share of the output
    v = rearrange(m.in_proj(t)[..., 16:], "b n (h d) -> b h n d", h=2)
    conv = rearrange(d @ v, "b h n d -> b n (h d)")
    a = rearrange(m.attention(t) @ rearrange(m.in_proj(t)[..., 16:], "b n (h d) -> b h n d", h=2), "b h n d -> b n (h d)")
    y = m.out_proj(torch.cat([a, conv], -1)) + m.fc2(torch.relu(m.fc1(t)))
    torch.testing.assert_close(m(t), m.norm(t + y))
    assert len(MUSELayer(8, heads=2, dynamic_gate=False).conv_weights(t.float())) == 2
