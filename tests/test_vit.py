"""The ViT block: equal to timm's Block and to the official Flax Encoder1DBlock, both re-typed (copied
weights, float64), to a per-token derivation of eqs. (2)-(3), its plug-in slot, its weights through
the gate, its parameter formula, its input checks; and TinyViT (patch embedding = patches as tokens
times E, positions, permutation invariance without them, bad input). The module contract and the
deploy contract are checked for every registered module in test_contract.py and test_deploy.py."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

import attncourse
from attncourse.blocks.vit import Mlp, TokenSelfAttention, TransformerBlock, ViTBlock2d
from attncourse.nets import TinyViT

from module_checks import randomised


# ------------------------------------------------------- timm's Block, re-typed for the test
# huggingface/pytorch-image-models: timm/models/vision_transformer.py (Block), timm/layers/attention.py
# (Attention, the explicit path that fused_attn=False takes: q * scale, q @ k^T, softmax, @ v) and
# timm/layers/mlp.py (Mlp). Dropout, drop path, layer scale and qk-norm left out (all off in ViT).

class TimmAttention(nn.Module):
    def __init__(self, dim, num_heads, qkv_bias):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        q = q * self.scale
        attn = q @ k.transpose(-2, -1)
        attn = attn.softmax(dim=-1)
        x = attn @ v
        x = x.transpose(1, 2).reshape(B, N, C)
        return self.proj(x)


class TimmMlp(nn.Module):
    def __init__(self, in_features, hidden_features, act_layer=nn.GELU):
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = act_layer()
        self.fc2 = nn.Linear(hidden_features, in_features)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class TimmBlock(nn.Module):
    def __init__(self, dim, num_heads, mlp_ratio=4.0, qkv_bias=False):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)  # timm.layers.LayerNorm: eps 1e-6
        self.attn = TimmAttention(dim, num_heads, qkv_bias)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = TimmMlp(dim, int(dim * mlp_ratio))

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        x = x + self.mlp(self.norm2(x))
        return x


@pytest.mark.parametrize("heads, mlp_ratio, qkv_bias", [(1, 4.0, True), (2, 4.0, True), (4, 2.0, True), (2, 3.0, False)])
def test_equals_timms_block_with_copied_weights(heads, mlp_ratio, qkv_bias):
    d = 16
    m = randomised(TransformerBlock(d, heads=heads, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias), std=0.4)
    ref = TimmBlock(d, heads, mlp_ratio, qkv_bias).double()
    ref.load_state_dict(m.state_dict())  # the same names: norm1, attn.qkv, attn.proj, norm2, mlp.fc1, mlp.fc2
    t = torch.randn(3, 10, d, dtype=torch.float64)
    torch.testing.assert_close(m(t), ref(t))
    # the re-typed block can fail: post-norm instead of pre-norm
    post = ref.norm1(t + ref.attn(t))
    post = ref.norm2(post + ref.mlp(post))
    assert not torch.allclose(m(t), post)


def test_the_registered_block_is_timms_block_on_the_flattened_map():
    m = randomised(ViTBlock2d(32, heads=4), std=0.4)
    ref = TimmBlock(32, 4, 4.0, qkv_bias=True).double()
    ref.load_state_dict({k.removeprefix("block."): v for k, v in m.state_dict().items()})
    x = torch.randn(2, 32, 5, 7, dtype=torch.float64)
    tokens = x.flatten(2).transpose(1, 2)  # timm's PatchEmbed: (B, C, H, W) -> (B, H*W, C), row by row
    torch.testing.assert_close(m(x), ref(tokens).transpose(1, 2).reshape(x.shape))


# ------------------------------------------------------- the official Flax block, re-typed for the test
# google-research/vision_transformer, vit_jax/models_vit.py: Encoder1DBlock and MlpBlock (dropout off),
# with flax/linen/attention.py (MultiHeadDotProductAttention: DenseGeneral query/key/value kernels
# (D, heads, d), dot_product_attention_weights: query / sqrt(depth), einsum '...qhd,...khd->...hqk',
# softmax, einsum '...hqk,...khd->...qhd', the 'out' DenseGeneral over (heads, d)), flax LayerNorm
# (epsilon 1e-6) and jax.nn.gelu (approximate=True, the tanh form). Written with torch in place of jnp.

def flax_layer_norm(x, scale, bias, epsilon=1e-6):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) * torch.rsqrt(var + epsilon) * scale + bias


def jax_gelu(x):  # jax.nn.gelu(x, approximate=True)
    return 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))


def flax_encoder_block(inputs, p, num_heads):
    x = flax_layer_norm(inputs, p["ln1_scale"], p["ln1_bias"])
    query = torch.einsum("bnd,dhk->bnhk", x, p["query_kernel"]) + p["query_bias"]
    key = torch.einsum("bnd,dhk->bnhk", x, p["key_kernel"]) + p["key_bias"]
    value = torch.einsum("bnd,dhk->bnhk", x, p["value_kernel"]) + p["value_bias"]
    depth = query.shape[-1]
    query = query / math.sqrt(depth)
    attn_weights = torch.einsum("...qhd,...khd->...hqk", query, key)
    attn_weights = torch.softmax(attn_weights, dim=-1)
    x = torch.einsum("...hqk,...khd->...qhd", attn_weights, value)
    x = torch.einsum("bnhk,hkd->bnd", x, p["out_kernel"]) + p["out_bias"]
    x = x + inputs
    y = flax_layer_norm(x, p["ln2_scale"], p["ln2_bias"])
    y = jax_gelu(y @ p["dense0_kernel"] + p["dense0_bias"])
    y = y @ p["dense1_kernel"] + p["dense1_bias"]
    return x + y


def to_flax(m: TransformerBlock):
    """The module's weights in the Flax layout: Dense kernels (in, out), attention kernels split by head."""
    d, h = m.dim, m.attn.heads
    wq, wk, wv = m.attn.qkv.weight.detach().split(d)
    bq, bk, bv = m.attn.qkv.bias.detach().split(d)
    per_head = lambda w: rearrange(w, "(h k) d -> d h k", h=h)  # noqa: E731
    return {
        "ln1_scale": m.norm1.weight.detach(), "ln1_bias": m.norm1.bias.detach(),
        "query_kernel": per_head(wq), "key_kernel": per_head(wk), "value_kernel": per_head(wv),
        "query_bias": rearrange(bq, "(h k) -> h k", h=h), "key_bias": rearrange(bk, "(h k) -> h k", h=h),
        "value_bias": rearrange(bv, "(h k) -> h k", h=h),
        "out_kernel": rearrange(m.attn.proj.weight.detach(), "d (h k) -> h k d", h=h),
        "out_bias": m.attn.proj.bias.detach(),
        "ln2_scale": m.norm2.weight.detach(), "ln2_bias": m.norm2.bias.detach(),
        "dense0_kernel": m.mlp.fc1.weight.detach().t(), "dense0_bias": m.mlp.fc1.bias.detach(),
        "dense1_kernel": m.mlp.fc2.weight.detach().t(), "dense1_bias": m.mlp.fc2.bias.detach(),
    }


@pytest.mark.parametrize("heads", [1, 4])
def test_equals_the_official_flax_block_with_tanh_gelu(heads):
    d = 16
    m = randomised(TransformerBlock(d, heads=heads, activation=lambda: nn.GELU("tanh")), std=0.5)
    t = torch.randn(2, 9, d, dtype=torch.float64)
    torch.testing.assert_close(m(t), flax_encoder_block(t, to_flax(m), heads))
    # with the default (exact, erf) GELU, as timm and the module: close but not equal
    exact = TransformerBlock(d, heads=heads).double()
    exact.load_state_dict(m.state_dict())
    gap = (exact(t) - flax_encoder_block(t, to_flax(m), heads)).abs().max().item()
    assert 1e-8 < gap < 1e-2


def test_the_two_gelus_differ_by_at_most_5e_4():
    x = torch.linspace(-8, 8, 160_001, dtype=torch.float64)
    gap = (F.gelu(x) - jax_gelu(x)).abs()
    assert 4.6e-4 < gap.max().item() < 4.8e-4 and abs(x[gap.argmax()].abs().item() - 2.70) < 0.05


# ------------------------------------------------------- eqs. (2)-(3), one token and one head at a time

def naive_block(m: TransformerBlock, t):
    """z' = MSA(LN(z)) + z, z = MLP(LN(z')) + z' (Dosovitskiy et al., eqs. (2)-(3)), token by token."""
    d, h = m.dim, m.attn.heads
    dh = d // h
    wq, wk, wv = m.attn.qkv.weight.detach().split(d)
    bq, bk, bv = m.attn.qkv.bias.detach().split(d)

    def ln(v, norm):  # LayerNorm of one token
        mu = v.sum() / d
        var = ((v - mu) ** 2).sum() / d
        return (v - mu) / math.sqrt(var + 1e-6) * norm.weight.detach() + norm.bias.detach()

    out = torch.empty_like(t)
    for b in range(t.shape[0]):
        u = [ln(t[b, i], m.norm1) for i in range(t.shape[1])]
        z1 = []
        for i in range(t.shape[1]):
            heads = []
            for j in range(h):
                sl = slice(j * dh, (j + 1) * dh)
                q = wq[sl] @ u[i] + bq[sl]
                logits = torch.stack([(wk[sl] @ uk + bk[sl]) @ q / math.sqrt(dh) for uk in u])
                a = torch.exp(logits - logits.max())
                a = a / a.sum()
                heads.append(sum(a[k] * (wv[sl] @ u[k] + bv[sl]) for k in range(len(u))))
            msa = m.attn.proj.weight.detach() @ torch.cat(heads) + m.attn.proj.bias.detach()
            z1.append(msa + t[b, i])  # (2)
        for i, z in enumerate(z1):
            hidden = m.mlp.fc1.weight.detach() @ ln(z, m.norm2) + m.mlp.fc1.bias.detach()
            hidden = 0.5 * hidden * (1 + torch.erf(hidden / math.sqrt(2)))  # GELU, exact
            out[b, i] = m.mlp.fc2.weight.detach() @ hidden + m.mlp.fc2.bias.detach() + z  # (3)
    return out


def test_equals_the_equations_token_by_token():
    m = randomised(TransformerBlock(12, heads=3, mlp_ratio=2), std=0.5)
    t = torch.randn(2, 7, 12, dtype=torch.float64)
    torch.testing.assert_close(m(t), naive_block(m, t))
    x = torch.randn(2, 12, 3, 5, dtype=torch.float64)  # and the registered block on a map, tokens in (h w) order
    b2d = ViTBlock2d(12, heads=3, mlp_ratio=2).double()
    b2d.block.load_state_dict(m.state_dict())
    torch.testing.assert_close(b2d(x), rearrange(naive_block(m, rearrange(x, "b c h w -> b (h w) c")), "b (h w) c -> b c h w", h=3))


def test_the_naive_derivation_can_fail():
    m = randomised(TransformerBlock(12, heads=3, mlp_ratio=2), std=0.5)
    t = torch.randn(1, 5, 12, dtype=torch.float64)
    other = TransformerBlock(12, heads=2, mlp_ratio=2).double()  # the same weights split into other heads
    other.load_state_dict(m.state_dict())
    assert not torch.allclose(other(t), naive_block(m, t))


# ------------------------------------------------------- the weights through the gate

def test_attention_weights_through_the_gate_give_the_output():
    m = randomised(ViTBlock2d(16, heads=2, mlp_ratio=2), std=0.4)
    x = torch.randn(3, 16, 4, 5, dtype=torch.float64)
    seen = []
    hook = m.block.attn.gate.register_forward_hook(lambda mod, inp, out: seen.append(out))
    a = m.attention(x)
    hook.remove()
    assert a.shape == (3, 2, 20, 20) and len(seen) == 1 and torch.equal(seen[0], a)
    torch.testing.assert_close(a.sum(-1), torch.ones(3, 2, 20, dtype=torch.float64))
    blk = m.block
    t = rearrange(x, "b c h w -> b (h w) c")
    v = rearrange(blk.attn.qkv(blk.norm1(t))[..., 32:], "b n (h d) -> b h n d", h=2)
    z1 = t + blk.attn.proj(rearrange(a @ v, "b h n d -> b n (h d)"))  # (2) from the gate's weights
    z = z1 + blk.mlp(blk.norm2(z1))  # (3)
    torch.testing.assert_close(m(x), rearrange(z, "b (h w) c -> b c h w", h=4))
    torch.testing.assert_close(blk.attn.logits(blk.norm1(t)).softmax(-1), a)


# ------------------------------------------------------- the plug-in slot

class Scale(nn.Module):
    """A plug-in (B, C, H, W) -> (B, C, H, W) that weights each position by a fixed map, so its place shows."""

    def __init__(self, h, w):
        super().__init__()
        self.register_buffer("map", torch.linspace(0.5, 2.0, h * w, dtype=torch.float64).reshape(1, 1, h, w))

    def forward(self, x):
        return x * self.map


@pytest.mark.parametrize("where", ["attention", "mlp"])
def test_a_plugin_acts_on_its_branch_as_a_map(where):
    h, w = 3, 4
    plain = randomised(TransformerBlock(8, heads=2, mlp_ratio=2), std=0.5)
    plugged = TransformerBlock(8, heads=2, mlp_ratio=2, plugin=Scale(h, w), plugin_at=where).double()
    plugged.load_state_dict(plain.state_dict(), strict=False)
    t = torch.randn(2, h * w, 8, dtype=torch.float64)
    s = rearrange(Scale(h, w).map, "1 1 h w -> 1 (h w) 1")  # the map's weight of each token, (h w) order
    a = plain.attn(plain.norm1(t))
    z1 = t + (a * s if where == "attention" else a)
    m = plain.mlp(plain.norm2(z1))
    want = z1 + (m * s if where == "mlp" else m)
    torch.testing.assert_close(plugged(t, size=(h, w)), want)
    assert not torch.allclose(plugged(t, size=(h, w)), plain(t))
    # a registered plug-in of Parts I-V takes the slot; nn.Identity gives the plain block
    se = TransformerBlock(8, heads=2, mlp_ratio=2, plugin=attncourse.create("se", 8, reduction=2), plugin_at=where)
    assert se.float()(t.float(), size=(h, w)).shape == (2, 12, 8)
    ident = TransformerBlock(8, heads=2, mlp_ratio=2, plugin=nn.Identity(), plugin_at=where).double()
    ident.load_state_dict(plain.state_dict())
    torch.testing.assert_close(ident(t, size=(h, w)), plain(t))


def test_a_plugin_needs_the_maps_size():
    m = TransformerBlock(8, heads=2, plugin=nn.Identity())
    t = torch.randn(2, 12, 8)
    with pytest.raises(ValueError, match="size=\\(H, W\\)"):
        m(t)
    with pytest.raises(ValueError, match="12 tokens"):
        m(t, size=(3, 5))


# ------------------------------------------------------- the key property: without positions, a set

def test_the_block_is_permutation_equivariant():
    """Nothing in eqs. (2)-(3) knows where a token is: permuting the positions of the map permutes the output."""
    m = randomised(ViTBlock2d(8, heads=2, mlp_ratio=2), std=0.5)
    x = torch.randn(2, 8, 4, 5, dtype=torch.float64)
    perm = torch.randperm(20, generator=torch.Generator().manual_seed(0))
    shuffle = lambda y: rearrange(rearrange(y, "b c h w -> b c (h w)")[..., perm], "b c (h w) -> b c h w", h=4)  # noqa: E731
    torch.testing.assert_close(m(shuffle(x)), shuffle(m(x)))


# ------------------------------------------------------- parameters and defaults

@pytest.mark.parametrize("c", [64, 128, 768])
def test_parameters_are_12c2_plus_13c(c):
    assert sum(p.numel() for p in ViTBlock2d(c).parameters()) == 12 * c * c + 13 * c


@pytest.mark.parametrize("c, r, bias", [(32, 2, True), (48, 3, False), (20, 1.5, True)])
def test_parameters_general_formula(c, r, bias):
    hidden = round(r * c)
    want = (4 * c * c + (4 if bias else 1) * c) + (2 * c * hidden + hidden + c) + 4 * c
    assert sum(p.numel() for p in ViTBlock2d(c, heads=4, mlp_ratio=r, qkv_bias=bias).parameters()) == want


def test_defaults_are_vit_bs():
    m = ViTBlock2d(768)
    blk = m.block
    assert (blk.attn.heads, blk.attn.head_dim, blk.mlp.hidden, blk.mlp_ratio) == (12, 64, 3072, 4.0)  # ViT-B/16
    assert sum(p.numel() for p in m.parameters()) == 7_087_872
    assert blk.norm1.eps == blk.norm2.eps == 1e-6 and blk.attn.qkv.bias is not None
    assert isinstance(blk.mlp.act, nn.GELU) and blk.mlp.act.approximate == "none" and blk.plugin is None
    assert [n for n, _ in m.named_children()] == ["block"]


# ------------------------------------------------------- bad input and impossible hyperparameters

@pytest.mark.parametrize(
    "make, words",
    [
        (lambda: ViTBlock2d(32), ["ViTBlock2d", "64", "heads"]),
        (lambda: ViTBlock2d(64, heads=3), ["ViTBlock2d", "heads"]),
        (lambda: ViTBlock2d(64, heads=0), ["ViTBlock2d", "heads"]),
        (lambda: ViTBlock2d(64, mlp_ratio=0), ["TransformerBlock", "mlp_ratio"]),
        (lambda: ViTBlock2d(64, mlp_ratio=True), ["TransformerBlock", "mlp_ratio"]),
        (lambda: ViTBlock2d(64, mlp_ratio="4"), ["TransformerBlock", "mlp_ratio"]),
        (lambda: ViTBlock2d(64, qkv_bias="yes"), ["TokenSelfAttention", "qkv_bias"]),
        (lambda: ViTBlock2d(0), ["ViTBlock2d", "channels"]),
        (lambda: TransformerBlock(8, heads=2, plugin_at="middle"), ["TransformerBlock", "plugin_at"]),
        (lambda: Mlp(8, 0), ["Mlp", "hidden"]),
    ],
)
def test_impossible_hyperparameters(make, words):
    with pytest.raises(ValueError) as info:
        make()
    assert all(w in str(info.value) for w in words), str(info.value)


@pytest.mark.parametrize(
    "module, bad, name",
    [
        (ViTBlock2d(16, heads=2), torch.randn(2, 16, 8), "ViTBlock2d"),
        (ViTBlock2d(16, heads=2), torch.randn(2, 8, 4, 4), "ViTBlock2d"),
        (ViTBlock2d(16, heads=2), torch.ones(1, 16, 4, 4, dtype=torch.long), "ViTBlock2d"),
        (TransformerBlock(16, heads=2), torch.randn(2, 16, 4, 4), "TransformerBlock"),
        (TransformerBlock(16, heads=2), torch.randn(2, 5, 8), "TransformerBlock"),
        (TokenSelfAttention(16, heads=2), torch.randn(2, 5, 8), "TokenSelfAttention"),
        (Mlp(16, 32), torch.randn(2, 5, 8), "Mlp"),
    ],
)
def test_bad_input_is_named(module, bad, name):
    with pytest.raises(ValueError, match=name):
        module(bad)
    if isinstance(module, ViTBlock2d):
        with pytest.raises(ValueError, match=name):
            module.attention(bad)


def test_gradcheck():
    m = randomised(ViTBlock2d(4, heads=2, mlp_ratio=1), std=0.5)
    x = torch.randn(1, 4, 2, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(m, (x,))


def test_one_token_attends_only_to_itself():
    """A 1 x 1 map: the softmax over one key is 1, so MSA(LN(z)) = W^O (W^V LN(z) + b_V) + b_O."""
    m = randomised(ViTBlock2d(8, heads=2), std=0.5)
    x = torch.randn(3, 8, 1, 1, dtype=torch.float64)
    assert torch.equal(m.attention(x), torch.ones(3, 2, 1, 1, dtype=torch.float64))
    blk, t = m.block, x.flatten(1)
    v = F.linear(blk.norm1(t), blk.attn.qkv.weight[16:], blk.attn.qkv.bias[16:])
    z1 = t + blk.attn.proj(v)
    torch.testing.assert_close(m(x).flatten(1), z1 + blk.mlp(blk.norm2(z1)))


# ------------------------------------------------------- TinyViT

def test_tinyvit_patch_embedding_is_patches_as_tokens_times_e():
    """Eq. (1)'s x_p E: the P x P stride-P convolution equals the flattened patches times E."""
    net = TinyViT(3, 5, size=(6, 8), patch=2, dim=16, block_kwargs={"heads": 2}, position=None).double()
    x = torch.randn(2, 3, 6, 8, dtype=torch.float64)
    patches = rearrange(x, "b c (h p1) (w p2) -> b (h w) (p1 p2 c)", p1=2, p2=2)  # (B, N, P²C)
    e = rearrange(net.embed.weight, "d c p1 p2 -> (p1 p2 c) d")  # E: (P²C, D)
    want = patches @ e + net.embed.bias
    torch.testing.assert_close(rearrange(net.embed(x), "b d h w -> b (h w) d"), want)
    wrong = rearrange(net.embed.weight, "d c p1 p2 -> (c p1 p2) d")  # E flattened in another order
    assert not torch.allclose(rearrange(net.embed(x), "b d h w -> b (h w) d"), patches @ wrong + net.embed.bias)


@pytest.mark.parametrize("position", ["learned", "sine", None])
def test_tinyvit_shapes_and_positions(position):
    net = TinyViT(2, 3, size=(12, 10), patch=2, dim=16, depth=2, block_kwargs={"heads": 4, "mlp_ratio": 2},
                  position=position)
    assert net(torch.randn(5, 2, 12, 10)).shape == (5, 3)
    assert sum(isinstance(b, ViTBlock2d) for b in net.blocks) == 2 and net.grid == (6, 5)
    if position is None:
        assert not hasattr(net, "position_embedding")
    else:
        assert net.position_embedding.shape == (1, 16, 6, 5)
        assert isinstance(net.position_embedding, nn.Parameter) == (position == "learned")
    blocks = 2 * (12 * 16 * 16 + 13 * 16 - (2 * 16 * 64 + 64) + (2 * 16 * 32 + 32))  # mlp_ratio 2, not 4
    embed = 2 * 2 * 2 * 16 + 16
    pos = 16 * 6 * 5 if position == "learned" else 0
    assert sum(p.numel() for p in net.parameters()) == embed + pos + blocks + 2 * 16 + 16 * 3 + 3


def test_tinyvit_without_positions_cannot_tell_where_a_patch_is():
    """Mean pooling and no position code: shuffling the patches of the image changes nothing;
    with learned positions it does."""
    x = torch.randn(2, 1, 8, 8, dtype=torch.float64)
    perm = torch.randperm(16, generator=torch.Generator().manual_seed(1))
    shuffled = rearrange(rearrange(x, "b c (h p1) (w p2) -> b (h w) c p1 p2", p1=2, p2=2)[:, perm],
                         "b (h w) c p1 p2 -> b c (h p1) (w p2)", h=4)
    for position, same in [(None, True), ("learned", False)]:
        torch.manual_seed(0)
        net = TinyViT(1, 4, size=(8, 8), patch=2, dim=8, block_kwargs={"heads": 2}, position=position).double()
        if position == "learned":
            with torch.no_grad():
                net.position_embedding.normal_()
        assert torch.allclose(net(shuffled), net(x)) == same


@pytest.mark.parametrize(
    "make, words",
    [
        (lambda: TinyViT(1, 2, size=(9, 8), patch=2), ["TinyViT", "divisible", "patch"]),
        (lambda: TinyViT(1, 2, size=8), ["TinyViT", "pair"]),
        (lambda: TinyViT(1, 2, size=(8, 8), position="rope"), ["TinyViT", "position"]),
        (lambda: TinyViT(1, 2, size=(8, 8), dim=30, block_kwargs={"heads": 4}), ["ViTBlock2d", "heads"]),
    ],
)
def test_tinyvit_impossible_settings(make, words):
    with pytest.raises(ValueError) as info:
        make()
    assert all(w in str(info.value) for w in words), str(info.value)


def test_tinyvit_bad_input_is_named():
    net = TinyViT(2, 3, size=(8, 8), block_kwargs={"heads": 4})
    for bad, words in [(torch.randn(2, 2, 8, 6), "(8, 8)"), (torch.randn(2, 3, 8, 8), "(B, 2, H, W)"),
                       (torch.randn(2, 8, 8), "4-D")]:
        with pytest.raises(ValueError, match="TinyViT") as info:
            net(bad)
        assert words in str(info.value), str(info.value)


def test_the_official_start_and_the_pytorch_one():
    """init="official": Xavier-uniform Dense weights (q, k, v each D x D, as Flax's three Dense layers),
    zero attention biases, N(0, 1e-6) MLP biases; init="pytorch": TransformerBlock's own start."""
    import math

    torch.manual_seed(0)
    d = 96
    b = attncourse.create("vit", d, heads=2)
    assert b.init == "official"
    for w in b.block.attn.qkv.weight.chunk(3) + (b.block.attn.proj.weight,):
        bound = math.sqrt(6 / (2 * d))
        assert w.abs().max() <= bound and w.abs().max() > 0.95 * bound  # uniform up to the bound
        assert abs(w.var().item() - bound**2 / 3) < 0.1 * bound**2 / 3
    fc1 = b.block.mlp.fc1.weight
    assert fc1.abs().max() <= math.sqrt(6 / (d + 4 * d)) and fc1.abs().max() > 0.95 * math.sqrt(6 / (d + 4 * d))
    assert torch.all(b.block.attn.qkv.bias == 0) and torch.all(b.block.attn.proj.bias == 0)
    assert 0 < b.block.mlp.fc1.bias.abs().max() < 1e-5 and 0 < b.block.mlp.fc2.bias.abs().max() < 1e-5
    torch.manual_seed(1)
    p = attncourse.create("vit", d, heads=2, init="pytorch")
    torch.manual_seed(1)
    t = TransformerBlock(d, heads=2)
    for (k, x), (_, y) in zip(p.block.state_dict().items(), t.state_dict().items()):
        assert torch.equal(x, y), k
    with pytest.raises(ValueError, match="ViTBlock2d expected init to be one of"):
        attncourse.create("vit", d, heads=2, init="xavier")
