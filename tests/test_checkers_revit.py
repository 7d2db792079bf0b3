"""The checkers of "ReViT": each typical mistake its own message, the right answer passes, a blank
answer is "not attempted" (the mistakes are listed above each checker)."""

from __future__ import annotations

import torch
from einops import rearrange

from attncourse.exercises import revit as ex
from attncourse.nets import TinyViT

from checker_tables import check_table


def _unrolled(alphas, swap=False, own=False, no_alpha=False):
    c = [1.0]
    for a in alphas:
        new, keep = (1 - a, a) if swap else (a, 1 - a)
        c = [v * keep for v in c] + [(1.0 if no_alpha else new) * (keep if own else 1.0)]
    return c


def test_unrolled_weights():
    def right(alphas):
        return torch.tensor(_unrolled(alphas))

    check_table(ex.check_unrolled_weights, right, {
        "reversed": (lambda a: torch.tensor(_unrolled(a)[::-1]), "reverse order"),
        "alphas reversed": (lambda a: torch.tensor(_unrolled(a[::-1])), "alphas are used in reverse"),
        "swapped": (lambda a: torch.tensor(_unrolled(a, swap=True)), "swapped"),
        "no alpha on S": (lambda a: torch.tensor(_unrolled(a, no_alpha=True)), "with the factor α_k"),
        "own keep": (lambda a: torch.tensor(_unrolled(a, own=True)), "later layers j > k only"),
        "one alpha": (lambda a: torch.tensor(_unrolled([a[0]] * len(a))), "its own α"),
        "no layer 1": (lambda a: torch.tensor(_unrolled(a)[1:]), "layer 1 has no α"),
        "crash": (lambda a: a.shape, "your code raised"),
        "other": (lambda a: torch.tensor(_unrolled(a)) * 2, "not rounding"),
    })
    assert ex.check_unrolled_weights(lambda a: _unrolled(a))  # a list is accepted too


def test_unrolled_weights_of_a_shared_alpha_match_the_module():
    """With one α, the checker's weights give the module's last logits as a mix of the layers' own S_l."""
    from attncourse.blocks.revit import ReViTStack

    stack = ReViTStack(8, depth=4, heads=2).double()
    with torch.no_grad():
        for p in stack.parameters():
            p.normal_(0, 0.5)
        stack.alpha.fill_(0.4)
    t, prev, own = torch.randn(2, 5, 8, dtype=torch.float64), None, []
    for blk in stack.blocks:
        q, k, _ = rearrange(blk.attn.qkv(blk.norm1(t)), "b n (three h d) -> three b h n d", three=3, h=2)
        own.append(q @ k.transpose(-2, -1) / 2)
        t, prev = blk(t, prev, stack.alpha)
    c = ex._unrolled([0.4] * 3)
    torch.testing.assert_close(prev, sum(ck * s for ck, s in zip(c, own)))


def test_revit_b_parameters():
    with torch.device("meta"):
        net = TinyViT(3, 1000, size=(224, 224), patch=16, dim=768, depth=12, block="revit", block_kwargs={"heads": 12})
    assert sum(p.numel() for p in net.parameters()) == ex.REVIT_B == 86_566_121
    assert ex.check_revit_b_parameters(86_566_121)
    table = {
        86_566_121 - 150_528: "position embedding",
        86_566_121 + 768: "no class token (cls_embed_on: False): it pools",
        86_566_121 + 1536: "neither the token nor its position",
        86_567_656: "ViT-B/16's count",
        86_566_121 + 11: "one scalar for the whole network",
        86_566_121 - 1: "α is a parameter too",
        86_566_121 - 769_000: "Linear(768, 1000)",
        86_566_121 - 1000: "The head has a bias",
        86_566_121 - 768: "patch embedding",
        86_566_121 - 1536: "final LayerNorm",
        86_566_121 - 36_864: "two LayerNorms",
        85_054_465: "blocks and α only",
    }
    messages = set()
    for wrong, words in table.items():
        fb = ex.check_revit_b_parameters(wrong)
        assert not fb and fb.attempted and words in fb.message, (wrong, fb.message)
        messages.add(fb.message)
    assert len(messages) == len(table)
    assert not ex.check_revit_b_parameters(86_000_000)
    assert not ex.check_revit_b_parameters(...).attempted


def _post(stack, t, pre=False, swap=False, pass_own=False, frozen=False, first=False, layers_first=False):
    a, prev, out, t0 = stack.alpha, None, [], t
    for blk in stack.blocks:
        q, k, v = rearrange(blk.attn.qkv(blk.norm1(t0 if frozen else t)), "b n (three h d) -> three b h n d", three=3,
                            h=blk.heads)
        s = q @ k.transpose(-2, -1) * blk.head_dim**-0.5
        if pre:
            s = s if prev is None else a * s + (1 - a) * prev
            p, prev = s.softmax(-1), s
        else:
            own = s.softmax(-1)
            if prev is None:
                p = a * own if first else own
            else:
                p = (1 - a) * own + a * prev if swap else a * own + (1 - a) * prev
            prev = own if pass_own else p
        out.append(p)
        t = t + blk.attn.proj(rearrange(p @ v, "b h n d -> b n (h d)"))
        t = t + blk.mlp(blk.norm2(t))
    return torch.stack(out, dim=0 if layers_first else 1)


def test_post_softmax_weights():
    check_table(ex.check_post_softmax_weights, _post, {
        "pre-softmax": (lambda s, t: _post(s, t, pre=True), "ReViT's own blend"),
        "swapped": (lambda s, t: _post(s, t, swap=True), "swapped"),
        "own passed on": (lambda s, t: _post(s, t, pass_own=True), "passes on its own"),
        "tokens frozen": (lambda s, t: _post(s, t, frozen=True), "previous layer's output"),
        "first blended": (lambda s, t: _post(s, t, first=True), "nothing to blend with"),
        "layers first": (lambda s, t: _post(s, t, layers_first=True), "first axis"),
        "crash": (lambda s, t: s.nope, "your code raised"),
        "other": (lambda s, t: _post(s, t) * 0.5, "not rounding"),
    })
