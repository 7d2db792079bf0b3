"""ReViT's residual attention: equal to the official code re-typed, to a per-query derivation of the
paper's recursion, to a plain ViT stack when α = 1, its weights through the gates, its parameter
count, defaults and input checks. The module and deploy contracts are checked for every registered
module in test_contract.py and test_deploy.py."""

from __future__ import annotations

import math

import pytest
import torch
from einops import rearrange
from torch import nn

from attncourse.blocks.revit import ReViT2d, ReViTBlock, ReViTStack
from attncourse.blocks.vit import TransformerBlock
from attncourse.nets import TinyViT

from module_checks import randomised


# ------------------------------------------------------- the official code, re-typed for the test
# ADiko1997/ReViT, model/attention.py: MultiScaleAttention.forward (the qkv reshape/permute,
# (q * scale) @ k^T, the "Residual Attention" lines, softmax, attn @ v, proj) and
# MultiScaleBlock.forward, in the ReViT-B setting of config/config-ReViT-B.yaml (pool_first False,
# no pooling kernels, use_rel_pos False, cls_embed_on False, residual_pooling False, dim = dim_out);
# model/revit_model.py: ReViT.forward's loop over blocks with attn_res and self.alpha. Changed: the
# pooling, relative-position and down-sampling branches (inactive in this setting) are left out;
# the module's weights are passed in; tokens come from the map by flatten(2).transpose(1, 2), as
# PatchEmbed returns them.

def official_attention(x, qkv, proj, num_heads, attn_res=None, alpha=0.5):
    B, N, _ = x.shape
    dim_out = proj.in_features
    scale = (dim_out // num_heads) ** -0.5
    qkv_ = qkv(x).reshape(B, N, 3, num_heads, -1).permute(2, 0, 3, 1, 4)
    q, k, v = qkv_[0], qkv_[1], qkv_[2]
    attn = (q * scale) @ k.transpose(-2, -1)
    if attn_res is not None:
        if attn_res.shape[1] != attn.shape[1]:
            attn_res = attn_res.mean(1, keepdim=True)
        attn = (alpha * attn) + ((1 - alpha) * attn_res)
    attn_res = attn
    attn = attn.softmax(dim=-1)
    x = attn @ v
    x = x.transpose(1, 2).reshape(B, -1, dim_out)
    return proj(x), attn_res


def official_block(x, blk, num_heads, attn_res=None, alpha=0.5):
    x_norm = blk.norm1(x)
    x_block, attn_res = official_attention(x_norm, blk.attn.qkv, blk.attn.proj, num_heads, attn_res, alpha)
    x = x + x_block
    x_norm = blk.norm2(x)
    x_mlp = blk.mlp.fc2(torch.nn.functional.gelu(blk.mlp.fc1(x_norm)))
    return x + x_mlp, attn_res


def official_revit(x, m: ReViT2d):
    B, C, H, W = x.shape
    t = x.flatten(2).transpose(1, 2)
    attn_res = None
    container = []
    for blk in m.stack.blocks:
        t, attn_res = official_block(t, blk, m.heads, attn_res, m.alpha)
        container.append(attn_res)
    return t.transpose(1, 2).reshape(B, C, H, W), container


@pytest.mark.parametrize("depth, heads, alpha, learn", [(1, 2, 0.5, True), (3, 2, 0.5, True), (3, 1, 0.3, False),
                                                         (4, 4, 0.8, True)])
def test_equals_the_official_code_with_copied_weights(depth, heads, alpha, learn):
    m = randomised(ReViT2d(16, depth=depth, heads=heads, alpha=alpha, learn_alpha=learn), std=0.3)
    if learn:
        with torch.no_grad():
            m.alpha.fill_(alpha + 0.05)  # a learned α away from its start
    x = torch.randn(2, 16, 5, 3, dtype=torch.float64)  # H != W, B != anything else
    want, _ = official_revit(x, m)
    torch.testing.assert_close(m(x), want)
    if depth > 1:  # the re-typed code can fail: without the blend it is another function
        plain, _ = official_revit(x, _with_alpha(m, 1.0))
        assert not torch.allclose(m(x), plain)


def _with_alpha(m: ReViT2d, a: float) -> ReViT2d:
    n = ReViT2d(m.channels, depth=m.depth, heads=m.heads, mlp_ratio=m.mlp_ratio, alpha=a, learn_alpha=False).double()
    n.stack.blocks.load_state_dict(m.stack.blocks.state_dict())
    return n


def test_the_logits_passed_on_are_the_official_attn_res():
    m = randomised(ReViT2d(16, depth=3, heads=2), std=0.3)
    x = torch.randn(2, 16, 4, 3, dtype=torch.float64)
    _, container = official_revit(x, m)
    torch.testing.assert_close(m.attention(x), torch.stack([c.softmax(-1) for c in container], dim=1))
    t, logits = rearrange(x, "b c h w -> b (h w) c"), None
    for blk, want in zip(m.stack.blocks, container):  # the token-level interface, by hand
        t, logits = blk(t, logits, m.alpha)
        torch.testing.assert_close(logits, want)


# ------------------------------------------------------- the paper's recursion, one query at a time

def naive_revit(m: ReViT2d, x: torch.Tensor) -> torch.Tensor:
    """For each layer, head and query i: S[i, j] = q_i . k_j / sqrt(d); A[i, j] = S[i, j] in the
    first layer, α S[i, j] + (1 - α) A_prev[i, j] after; weights = exp(A[i, :]) / sum; o_i = sum_j
    w_ij v_j; then W^O, the residual, LN, MLP, the residual."""
    B, C, H, W = x.shape
    h, d, alpha = m.heads, C // m.heads, m.alpha.item()
    out = x.clone()
    for b in range(B):
        t = [x[b, :, i // W, i % W] for i in range(H * W)]  # tokens in (h w) order
        prev = None
        for blk in m.stack.blocks:
            wq, wk, wv = blk.attn.qkv.weight.detach().split(C)
            bq, bk, bv = blk.attn.qkv.bias.detach().split(C)
            u = [blk.norm1(tok) for tok in t]
            a_now = torch.zeros(h, len(t), len(t), dtype=x.dtype)
            new = []
            for i in range(len(t)):
                heads_out = []
                for head in range(h):
                    sl = slice(head * d, (head + 1) * d)
                    q = wq[sl] @ u[i] + bq[sl]
                    for j in range(len(t)):
                        s = q @ (wk[sl] @ u[j] + bk[sl]) / math.sqrt(d)
                        a_now[head, i, j] = s if prev is None else alpha * s + (1 - alpha) * prev[head, i, j]
                    e = torch.exp(a_now[head, i] - a_now[head, i].max())
                    w = e / e.sum()
                    heads_out.append(sum(w[j] * (wv[sl] @ u[j] + bv[sl]) for j in range(len(t))))
                z = t[i] + blk.attn.proj(torch.cat(heads_out))
                new.append(z + blk.mlp.fc2(torch.nn.functional.gelu(blk.mlp.fc1(blk.norm2(z)))))
            t, prev = new, a_now
        for i, tok in enumerate(t):
            out[b, :, i // W, i % W] = tok.detach()
    return out


@pytest.mark.parametrize("size, depth", [((3, 2), 3), ((1, 4), 2), ((2, 2), 1)])
def test_equals_the_definition_one_query_at_a_time(size, depth):
    m = randomised(ReViT2d(8, depth=depth, heads=2), std=0.4)
    with torch.no_grad():
        m.alpha.fill_(0.35)
    x = torch.randn(2, 8, *size, dtype=torch.float64)
    torch.testing.assert_close(m(x), naive_revit(m, x))


# ------------------------------------------------------- the key properties

@pytest.mark.parametrize("learn", [False, True])
def test_alpha_one_is_a_plain_vit_stack_with_the_same_weights(learn):
    m = randomised(ReViT2d(16, depth=3, heads=4, mlp_ratio=2, alpha=1.0, learn_alpha=learn), std=0.3)
    with torch.no_grad():
        m.alpha.fill_(1.0)  # randomised() drew a learned α too
    vit = nn.ModuleList(TransformerBlock(16, heads=4, mlp_ratio=2) for _ in range(3)).double()
    vit.load_state_dict(m.stack.blocks.state_dict())  # the same parameter names
    x = torch.randn(2, 16, 5, 4, dtype=torch.float64)
    t = rearrange(x, "b c h w -> b (h w) c")
    for blk in vit:
        t = blk(t)
    torch.testing.assert_close(m(x), rearrange(t, "b (h w) c -> b c h w", h=5))
    torch.testing.assert_close(m.attention(x)[:, 2], vit[2].attn.attention(vit[2].norm1(_tokens_before(vit, x, 2))))


def _tokens_before(vit, x, layer):
    t = rearrange(x, "b c h w -> b (h w) c")
    for blk in vit[:layer]:
        t = blk(t)
    return t


def test_first_layer_is_vit_whatever_alpha_and_later_layers_are_not():
    x = torch.randn(2, 16, 4, 4, dtype=torch.float64)
    m = randomised(ReViT2d(16, depth=2, heads=2), std=0.3)
    plain = _with_alpha(m, 1.0)
    a, p = m.attention(x), plain.attention(x)
    torch.testing.assert_close(a[:, 0], p[:, 0])  # A_1 = S_1: no α in the first layer
    assert (a[:, 1] - p[:, 1]).abs().max() > 1e-3


def test_alpha_zero_repeats_the_first_layers_attention():
    m = _with_alpha(randomised(ReViT2d(16, depth=3, heads=2), std=0.3), 0.0)
    a = m.attention(torch.randn(2, 16, 3, 5, dtype=torch.float64))
    torch.testing.assert_close(a[:, 1], a[:, 0])
    torch.testing.assert_close(a[:, 2], a[:, 0])


def test_one_alpha_shared_by_every_layer_and_learned():
    m = ReViT2d(32, depth=3, heads=4).double()
    alphas = [p for n, p in m.named_parameters() if "alpha" in n]
    assert len(alphas) == 1 and alphas[0].shape == (1,) and alphas[0].item() == 0.5
    m(torch.randn(2, 32, 3, 4, dtype=torch.float64)).square().sum().backward()
    assert m.alpha.grad is not None and m.alpha.grad.abs().item() > 0
    fixed = ReViT2d(32, depth=3, heads=4, learn_alpha=False)
    assert not any("alpha" in n for n, _ in fixed.named_parameters()) and fixed.alpha.item() == 0.5


def test_attention_weights_come_through_the_gates_and_give_the_output():
    m = randomised(ReViT2d(16, depth=2, heads=2), std=0.3)
    x = torch.randn(3, 16, 3, 4, dtype=torch.float64)
    seen = []
    hooks = [blk.attn.gate.register_forward_hook(lambda mod, inp, out: seen.append(out)) for blk in m.stack.blocks]
    y = m(x)
    a = m.attention(x)
    for h in hooks:
        h.remove()
    assert a.shape == (3, 2, 2, 12, 12)
    torch.testing.assert_close(a.sum(-1), torch.ones_like(a.sum(-1)))
    assert len(seen) == 4 and torch.equal(seen[0], seen[2]) and torch.equal(seen[1], seen[3])
    assert torch.equal(a, torch.stack(seen[2:], dim=1))
    # the output from these weights, by hand
    t = rearrange(x, "b c h w -> b (h w) c")
    for layer, blk in enumerate(m.stack.blocks):
        v = rearrange(blk.attn.qkv(blk.norm1(t))[..., 32:], "b n (h d) -> b h n d", h=2)
        t = t + blk.attn.proj(rearrange(a[:, layer] @ v, "b h n d -> b n (h d)"))
        t = t + blk.mlp(blk.norm2(t))
    torch.testing.assert_close(y, rearrange(t, "b (h w) c -> b c h w", h=3))


def test_parameters_defaults_and_official_start():
    m = ReViT2d(64)
    assert (m.depth, m.heads, m.mlp_ratio, m.qkv_bias, m.learn_alpha, m.init) == (2, 1, 4.0, True, True, "official")
    assert m.alpha.item() == 0.5 and ReViT2d.spans_blocks is True
    assert sum(p.numel() for p in m.parameters()) == 2 * (12 * 64 * 64 + 13 * 64) + 1
    for c, L, r in [(32, 3, 2), (48, 1, 3)]:
        n = ReViT2d(c, depth=L, heads=4, mlp_ratio=r, learn_alpha=False)
        assert sum(p.numel() for p in n.parameters()) == L * (4 * c * c + 4 * c + 2 * c * r * c + r * c + c + 4 * c)
    w = m.stack.blocks[0].attn.qkv.weight
    assert 0.015 < w.std().item() < 0.025  # trunc_normal_(std=0.02), cut at ±2: 100 std, a normal in practice
    assert all(b.abs().max() == 0 for n, b in m.named_parameters() if n.endswith(".bias") and "norm" not in n)
    default_init = ReViT2d(64, init="pytorch").stack.blocks[0].attn.qkv.weight
    assert default_init.std().item() > 0.05  # nn.Linear's start: U(-1/8, 1/8) at 64 inputs


def test_tinyvit_builds_the_stack_once_with_its_depth():
    net = TinyViT(3, 5, size=(8, 6), dim=32, depth=3, block="revit", block_kwargs={"heads": 4, "mlp_ratio": 2})
    stacks = [m for m in net.modules() if isinstance(m, ReViTStack)]
    assert len(stacks) == 1 and len(stacks[0].blocks) == 3
    assert net(torch.randn(2, 3, 8, 6)).shape == (2, 5)


def test_gradcheck_including_alpha():
    m = randomised(ReViT2d(4, depth=2, heads=2, mlp_ratio=1), std=0.5)
    x = torch.randn(1, 4, 2, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(m, (x,))

    def of_alpha(a):
        t, logits = rearrange(x, "b c h w -> b (h w) c"), None
        for blk in m.stack.blocks:
            t, logits = blk(t, logits, a)
        return t

    assert torch.autograd.gradcheck(of_alpha, (torch.tensor([0.4], dtype=torch.float64, requires_grad=True),))


@pytest.mark.parametrize(
    "kwargs, words",
    [
        (dict(channels=48), ["ReViT2d", "64", "heads"]),
        (dict(channels=32, heads=3), ["ReViT2d", "heads"]),
        (dict(channels=32, heads=4, depth=0), ["ReViT2d", "depth"]),
        (dict(channels=32, heads=4, alpha=1.5), ["ReViT2d", "alpha", "[0, 1]"]),
        (dict(channels=32, heads=4, alpha=True), ["ReViT2d", "alpha"]),
        (dict(channels=32, heads=4, learn_alpha="yes"), ["ReViT2d", "learn_alpha"]),
        (dict(channels=32, heads=4, init="xavier"), ["ReViT2d", "init"]),
        (dict(channels=32, heads=4, mlp_ratio=0), ["ReViT2d", "mlp_ratio"]),
    ],
)
def test_impossible_hyperparameters(kwargs, words):
    with pytest.raises(ValueError) as info:
        ReViT2d(**kwargs)
    assert all(w in str(info.value) for w in words), str(info.value)


@pytest.mark.parametrize("bad", [torch.randn(2, 32, 8), torch.randn(2, 16, 8, 8), torch.ones(1, 32, 4, 4, dtype=torch.long)])
def test_bad_input_is_named(bad):
    with pytest.raises(ValueError, match="ReViT2d"):
        ReViT2d(32, heads=4)(bad)
    with pytest.raises(ValueError, match="ReViT2d"):
        ReViT2d(32, heads=4).attention(bad)


def test_token_interfaces_check_their_inputs():
    blk = ReViTBlock(16, heads=2)
    t = torch.randn(2, 5, 16)
    with pytest.raises(ValueError, match=r"ReViTBlock expected prev_logits of shape \(2, 2, 5, 5\), got \(2, 2, 4, 4\)"):
        blk(t, torch.randn(2, 2, 4, 4))
    with pytest.raises(ValueError, match="ReViTBlock"):
        blk(torch.randn(2, 5, 8))
    with pytest.raises(ValueError, match="ReViTStack"):
        ReViTStack(16, heads=2)(torch.randn(2, 16, 3, 3))
