"""The MobileViT block: equal to the official code re-typed (even and odd sizes), to a naive
derivation of the paper's equations (one pixel position, one patch, one head at a time), its
attention weights through the gates, what a pixel sees (the same position of every patch), the
parameter formula, the defaults and initialisation, and its input checks. The module contract and
the deploy contract (H, W exported static, as declared) are checked in test_contract.py and
test_deploy.py."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from attncourse.blocks.mobilevit import MobileViTBlock

from module_checks import randomised


# ------------------------------------------------------- the official code, re-typed for the test
# apple/ml-cvnets @ 7771756, cvnets/modules/mobilevit_block.py: MobileViTBlock.unfolding, .folding,
# .forward_spatial; cvnets/modules/transformer.py: TransformerEncoder.forward (dropout 0);
# cvnets/layers/multi_head_attention.py: MultiHeadAttention.forward_default (no masks; the softmax
# kept in float64 instead of the official float32 upcast, which would round float64 down);
# cvnets/layers/conv_layer.py: ConvLayer2d as conv -> BN -> Swish. Written as functions that read
# the weights from the module's submodules (the names differ: local_conv for local_rep.conv_3x3,
# proj for conv_proj, layers[i] for global_rep[i]).

def official_unfolding(feature_map, patch_h, patch_w):
    patch_area = int(patch_w * patch_h)
    batch_size, in_channels, orig_h, orig_w = feature_map.shape
    new_h = int(math.ceil(orig_h / patch_h) * patch_h)
    new_w = int(math.ceil(orig_w / patch_w) * patch_w)
    interpolate = False
    if new_w != orig_w or new_h != orig_h:
        feature_map = F.interpolate(feature_map, size=(new_h, new_w), mode="bilinear", align_corners=False)
        interpolate = True
    num_patch_w = new_w // patch_w
    num_patch_h = new_h // patch_h
    num_patches = num_patch_h * num_patch_w
    reshaped_fm = feature_map.reshape(batch_size * in_channels * num_patch_h, patch_h, num_patch_w, patch_w)
    transposed_fm = reshaped_fm.transpose(1, 2)
    reshaped_fm = transposed_fm.reshape(batch_size, in_channels, num_patches, patch_area)
    transposed_fm = reshaped_fm.transpose(1, 3)
    patches = transposed_fm.reshape(batch_size * patch_area, num_patches, -1)
    info_dict = {"orig_size": (orig_h, orig_w), "batch_size": batch_size, "interpolate": interpolate,
                 "total_patches": num_patches, "num_patches_w": num_patch_w, "num_patches_h": num_patch_h}
    return patches, info_dict


def official_folding(patches, info_dict, patch_h, patch_w):
    patch_area = patch_h * patch_w
    patches = patches.contiguous().view(info_dict["batch_size"], patch_area, info_dict["total_patches"], -1)
    batch_size, pixels, num_patches, channels = patches.size()
    num_patch_h = info_dict["num_patches_h"]
    num_patch_w = info_dict["num_patches_w"]
    patches = patches.transpose(1, 3)
    feature_map = patches.reshape(batch_size * channels * num_patch_h, num_patch_w, patch_h, patch_w)
    feature_map = feature_map.transpose(1, 2)
    feature_map = feature_map.reshape(batch_size, channels, num_patch_h * patch_h, num_patch_w * patch_w)
    if info_dict["interpolate"]:
        feature_map = F.interpolate(feature_map, size=info_dict["orig_size"], mode="bilinear", align_corners=False)
    return feature_map


def official_mha(x_q, qkv_proj, out_proj, num_heads, weights=None):
    b_sz, S_len, in_channels = x_q.shape
    qkv = qkv_proj(x_q).reshape(b_sz, S_len, 3, num_heads, -1)
    qkv = qkv.transpose(1, 3).contiguous()
    query, key, value = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
    query = query * (in_channels // num_heads) ** -0.5
    key = key.transpose(-1, -2)
    attn = torch.matmul(query, key)
    attn = torch.softmax(attn, dim=-1)
    if weights is not None:
        weights.append(attn)
    out = torch.matmul(attn, value)
    out = out.transpose(1, 2).reshape(b_sz, S_len, -1)
    return out_proj(out)


def official_encoder(x, layer, num_heads, act, weights=None):
    res = x
    x = F.layer_norm(x, x.shape[-1:], layer.norm1.weight, layer.norm1.bias, 1e-5)
    x = official_mha(x, layer.attn.qkv, layer.attn.proj, num_heads, weights)
    x = x + res
    h = F.layer_norm(x, x.shape[-1:], layer.norm2.weight, layer.norm2.bias, 1e-5)
    return x + layer.mlp.fc2(act(layer.mlp.fc1(h)))


def official_conv_layer(x, seq, act, use_act=True):
    conv, bn = seq.conv, seq.norm
    y = F.batch_norm(conv(x), bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)
    return act(y) if use_act else y


def official_forward_spatial(m, x, act=F.silu, weights=None):
    res = x
    fm = m.local_proj(official_conv_layer(x, m.local_conv, act))  # local_rep: conv_3x3, conv_1x1
    patches, info_dict = official_unfolding(fm, m.patch, m.patch)
    for layer in m.layers:
        patches = official_encoder(patches, layer, m.heads, act, weights)
    patches = F.layer_norm(patches, patches.shape[-1:], m.norm.weight, m.norm.bias, 1e-5)  # global_rep[-1]
    fm = official_folding(patches, info_dict, m.patch, m.patch)
    fm = official_conv_layer(fm, m.proj, act)  # conv_proj
    if m.fusion is not None:
        fm = official_conv_layer(torch.cat((res, fm), dim=1), m.fusion, act)
    return fm


@pytest.mark.parametrize("size", [(8, 6), (7, 5), (9, 16), (1, 1), (3, 2)])
@pytest.mark.parametrize("kwargs", [{}, dict(heads=1, depth=1, patch=3, dim=12, kernel_size=5),
                                    dict(fusion=False, mlp_ratio=3, heads=2)])
def test_equals_the_official_code_with_copied_weights(size, kwargs):
    m = randomised(MobileViTBlock(8, **kwargs), std=0.3).eval()
    x = torch.randn(2, 8, *size, dtype=torch.float64)
    torch.testing.assert_close(m(x), official_forward_spatial(m, x))


def test_the_retyped_official_code_can_fail():
    m = randomised(MobileViTBlock(8), std=0.3).eval()
    x = torch.randn(2, 8, 6, 4, dtype=torch.float64)
    assert not torch.allclose(m(x), official_forward_spatial(m, x, act=F.relu))  # the activation matters
    m.patch = 1  # a transformer over all pixels (a ViT on the map) is not MobileViT's
    y = m(x)
    m.patch = 2
    assert not torch.allclose(y, m(x))


def test_relu_option_is_relu_everywhere():
    m = randomised(MobileViTBlock(8, activation="relu"), std=0.3).eval()
    x = torch.randn(2, 8, 6, 4, dtype=torch.float64)
    torch.testing.assert_close(m(x), official_forward_spatial(m, x, act=F.relu))
    assert all(not isinstance(s, nn.SiLU) for s in m.modules())


# ------------------------------------------------------- the paper's equations, one step at a time

def naive_global(m, z):
    """X_G(p) = Transformer(X_U(p)) for each pixel position p, built pixel by pixel: X_U(p) is the
    sequence of the p-th pixel of every patch; every layer is written out (LN, heads one at a time,
    softmax, MLP); the final LN; each output written back to the pixel it came from. H, W multiples
    of the patch."""
    B, d, H, W = z.shape
    ps, heads, dh = m.patch, m.heads, m.dim // m.heads
    act = nn.SiLU() if m.activation == "silu" else nn.ReLU()

    def ln(t, norm):
        mu = t.mean(-1, keepdim=True)
        var = ((t - mu) ** 2).mean(-1, keepdim=True)
        return (t - mu) / torch.sqrt(var + 1e-5) * norm.weight + norm.bias

    out = torch.zeros_like(z)
    for b in range(B):
        for i in range(ps):
            for j in range(ps):  # pixel position p = (i, j) inside the patch
                pixels = [(y, x) for y in range(i, H, ps) for x in range(j, W, ps)]  # one per patch, row-major
                t = torch.stack([z[b, :, y, x] for y, x in pixels])  # X_U(p): (N, d)
                for layer in m.layers:
                    u = ln(t, layer.norm1)
                    wq, wk, wv = layer.attn.qkv.weight.split(m.dim)
                    bq, bk, bv = layer.attn.qkv.bias.split(m.dim)
                    q, k, v = u @ wq.T + bq, u @ wk.T + bk, u @ wv.T + bv
                    o = []
                    for h in range(heads):
                        sl = slice(h * dh, (h + 1) * dh)
                        a = torch.softmax(q[:, sl] @ k[:, sl].T / math.sqrt(dh), dim=-1)  # (N, N) over patches
                        o.append(a @ v[:, sl])
                    t = t + layer.attn.proj(torch.cat(o, dim=-1))
                    t = t + layer.mlp.fc2(act(layer.mlp.fc1(ln(t, layer.norm2))))
                t = ln(t, m.norm)
                for (y, x), row in zip(pixels, t):
                    out[b, :, y, x] = row
    return out


@pytest.mark.parametrize("kwargs, size", [({}, (4, 6)), (dict(patch=3, heads=1, depth=1), (6, 3))])
def test_equals_the_naive_derivation(kwargs, size):
    m = randomised(MobileViTBlock(4, dim=8, heads=kwargs.pop("heads", 2), **kwargs), std=0.3).eval()
    x = torch.randn(2, 4, *size, dtype=torch.float64)
    z = m.local_rep(x)
    torch.testing.assert_close(z, m.local_proj(m.local_conv.act(m.local_conv.norm(m.local_conv.conv(x)))))
    xf = naive_global(m, z)
    torch.testing.assert_close(m.global_rep(z), xf)
    torch.testing.assert_close(m(x), m.fusion(torch.cat((x, m.proj(xf)), dim=1)))


def test_a_pixel_sees_the_same_position_of_every_patch():
    """The output of the transformer part at pixel (y, x) depends on X_L exactly at the pixels
    (y', x') with y' = y and x' = x modulo the patch, all of them, and on no other pixel."""
    m = randomised(MobileViTBlock(4, dim=8, heads=2), std=0.3).eval()
    for y, x in [(0, 0), (3, 2), (5, 7)]:
        z = torch.randn(1, 8, 6, 8, dtype=torch.float64, requires_grad=True)
        m.global_rep(z)[0, :, y, x].sum().backward()
        seen = z.grad[0].abs().sum(0) > 0
        rows = torch.arange(6)[:, None] % 2 == y % 2
        cols = torch.arange(8)[None, :] % 2 == x % 2
        assert torch.equal(seen, rows & cols)
    # the whole block sees further: the n x n convolutions before and after spread it to neighbours
    xin = torch.randn(1, 4, 6, 8, dtype=torch.float64, requires_grad=True)
    m(xin)[0, :, 0, 0].sum().backward()
    assert (xin.grad[0].abs().sum(0) > 0).all()


def test_attention_weights_are_the_ones_forward_applies():
    m = randomised(MobileViTBlock(8, heads=2, depth=3), std=0.3).eval()
    x = torch.randn(2, 8, 6, 4, dtype=torch.float64)
    a = m.attention(x)
    assert a.shape == (2, 3, 4, 2, 6, 6)  # (B, L, P, heads, N, N)
    torch.testing.assert_close(a.sum(-1), torch.ones(2, 3, 4, 2, 6, dtype=torch.float64))
    weights: list[torch.Tensor] = []
    official_forward_spatial(m, x, weights=weights)  # each (B*P, heads, N, N), batch outer
    want = torch.stack(weights).reshape(3, 2, 4, 2, 6, 6).transpose(0, 1)
    torch.testing.assert_close(a, want)
    seen = []
    hooks = [layer.attn.gate.register_forward_hook(lambda mod, i, o: seen.append(o)) for layer in m.layers]
    m.attention(x)
    for h in hooks:
        h.remove()
    assert len(seen) == 3  # through each layer's Gate


# ------------------------------------------------------- cost, defaults, initialisation

def params(c, d, L, n=3, r=2.0, fusion=True):
    f = round(r * d)
    layer = 4 * d * d + 4 * d + 2 * d * f + f + d + 4 * d
    total = n * n * c * c + 2 * c + c * d + L * layer + 2 * d + d * c + 2 * c
    return total + (2 * n * n * c * c + 2 * c if fusion else 0)


@pytest.mark.parametrize("c, kwargs", [
    (96, dict(dim=144, depth=2)),  # MobileViT-S's first MobileViT block (config/mobilevit.py, layer3)
    (32, {}),
    (16, dict(dim=24, depth=3, kernel_size=5, mlp_ratio=3, fusion=False)),
])
def test_parameter_count_is_the_formula(c, kwargs):
    m = MobileViTBlock(c, **kwargs)
    n, f = kwargs.get("kernel_size", 3), kwargs.get("fusion", True)
    want = params(c, m.dim, m.depth, n, kwargs.get("mlp_ratio", 2.0), f)
    assert sum(p.numel() for p in m.parameters()) == want
    if f and n == 3:  # the closed form of the docstring
        d, L = m.dim, m.depth
        assert want == 27 * c * c + 2 * c * d + 6 * c + 2 * d + L * (4 * d * d + 2 * d * 2 * d + 2 * d + 9 * d)


def test_defaults_and_initialisation():
    torch.manual_seed(0)
    m = MobileViTBlock(64)
    assert (m.dim, m.depth, m.patch, m.heads, m.mlp_ratio, m.kernel_size, m.activation) == (64, 2, 2, 4, 2.0, 3, "silu")
    assert m.fusion is not None and m.spans_blocks
    assert m.layers[0].mlp.hidden == 128 and m.layers[0].norm1.eps == 1e-5 and m.norm.eps == 1e-5
    assert m.local_conv.conv.bias is None and m.local_proj.bias is None and isinstance(m.local_conv.act, nn.SiLU)
    assert isinstance(m.layers[0].mlp.act, nn.SiLU)
    w = m.layers[0].attn.qkv.weight
    assert 0.017 < w.std().item() < 0.023 and w.abs().max() < 2  # truncated normal, std 0.02
    assert m.layers[0].attn.qkv.bias.abs().sum() == 0
    fan_out = 64 * 3 * 3  # fusion conv (64, 128, 3, 3): fan-out = out channels x kernel area
    assert abs(m.fusion.conv.weight.std().item() - math.sqrt(2 / fan_out)) < 0.01  # Kaiming normal, fan-out


def test_tiny_vit_builds_one_block_with_depth_layers():
    from attncourse.nets import TinyViT

    net = TinyViT(1, 10, size=(16, 16), dim=32, depth=2, block="mobilevit", block_kwargs={"heads": 4, "mlp_ratio": 2})
    blocks = [b for b in net.blocks if isinstance(b, MobileViTBlock)]
    assert len(blocks) == 1 and len(blocks[0].layers) == 2
    assert net(torch.randn(3, 1, 16, 16)).shape == (3, 10)


def test_gradcheck():
    m = randomised(MobileViTBlock(2, dim=4, heads=2, depth=1), std=0.3).eval()
    x = torch.randn(1, 2, 3, 4, dtype=torch.float64, requires_grad=True)  # 3 rows: resized to 4
    assert torch.autograd.gradcheck(m, (x,))


@pytest.mark.parametrize(
    "kwargs, words",
    [
        (dict(channels=8, dim=10), ["MobileViTBlock", "dim=10", "heads=4"]),
        (dict(channels=8, heads=3), ["MobileViTBlock", "heads=3"]),
        (dict(channels=8, heads=0), ["MobileViTBlock", "heads"]),
        (dict(channels=8, depth=0), ["MobileViTBlock", "depth"]),
        (dict(channels=8, patch=0), ["MobileViTBlock", "patch"]),
        (dict(channels=8, kernel_size=4), ["MobileViTBlock", "odd", "4"]),
        (dict(channels=8, mlp_ratio=0), ["MobileViTBlock", "mlp_ratio"]),
        (dict(channels=8, activation="gelu"), ["MobileViTBlock", "activation", "silu"]),
        (dict(channels=8, fusion="yes"), ["MobileViTBlock", "fusion"]),
        (dict(channels=8, dim=2.5), ["MobileViTBlock", "dim"]),
    ],
)
def test_impossible_hyperparameters(kwargs, words):
    with pytest.raises(ValueError) as info:
        MobileViTBlock(**kwargs)
    for w in words:
        assert w in str(info.value)


def test_bad_input_and_batch_one_in_training():
    m = MobileViTBlock(8)
    with pytest.raises(ValueError, match=r"MobileViTBlock expected input of shape \(B, 8, H, W\), got \(2, 4, 5, 5\)"):
        m(torch.randn(2, 4, 5, 5))
    with pytest.raises(ValueError, match="MobileViTBlock.*batch"):
        m.train()(torch.randn(1, 8, 1, 1))
    with pytest.raises(ValueError, match="MobileViTBlock"):
        m.attention(torch.randn(2, 8, 5))
    assert m.eval()(torch.randn(1, 8, 1, 1)).shape == (1, 8, 1, 1)
