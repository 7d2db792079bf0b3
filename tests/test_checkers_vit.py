"""The checkers of "The ViT block": each typical mistake its own message, the right answer passes,
a blank answer is "not attempted" (the mistakes are listed above each checker)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange

from attncourse.exercises import vit as ex

from checker_tables import check_table


def test_conv_from_linear():
    def right(e, c, p):
        return rearrange(e, "(p1 p2 c) d -> d c p1 p2", p1=p, p2=p, c=c)

    check_table(ex.check_conv_from_linear, right, {
        "c p1 p2": (lambda e, c, p: rearrange(e, "(c p1 p2) d -> d c p1 p2", p1=p, p2=p), "(c p1 p2)"),
        "p2 p1": (lambda e, c, p: rearrange(e, "(p2 p1 c) d -> d c p1 p2", p1=p, p2=p), "transposed"),
        "no transpose": (lambda e, c, p: e.reshape(e.shape[1], c, p, p), "move D to the front"),
        "in/out swapped": (lambda e, c, p: rearrange(e, "(p1 p2 c) d -> c d p1 p2", p1=p, p2=p, c=c), "(out, in"),
        "channels last": (lambda e, c, p: rearrange(e, "(p1 p2 c) d -> d p1 p2 c", p1=p, p2=p, c=c), "channels-last"),
        "crash": (lambda e, c, p: e.view(p, p), "your code raised"),
        "other": (lambda e, c, p: right(e, c, p) * 2, "not rounding"),
    })


def test_conv_from_linear_is_the_convolution_of_the_chapter():
    """The right answer turns E into the weight of TinyViT's embedding convolution and back."""
    conv = torch.nn.Conv2d(3, 5, 2, stride=2).double()
    e = rearrange(conv.weight.detach(), "d c p1 p2 -> (p1 p2 c) d")
    x = torch.randn(2, 3, 4, 6, dtype=torch.float64)
    want = rearrange(F.conv2d(x, conv.weight, stride=2), "b d h w -> b (h w) d")
    torch.testing.assert_close(rearrange(x, "b c (h p1) (w p2) -> b (h w) (p1 p2 c)", p1=2, p2=2) @ e, want)
    torch.testing.assert_close(rearrange(e, "(p1 p2 c) d -> d c p1 p2", p1=2, p2=2, c=3), conv.weight.detach())


def _classifier(read="cls", append=False, norm_on=True, with_cls=True, before=False):
    def fn(z, cls, blocks, norm, head):
        b = z.shape[0]
        if before:
            return head(norm(cls[:, 0])).expand(b, -1)
        c = cls.expand(b, -1, -1)
        t = torch.cat([z, c] if append else [c, z], dim=1) if with_cls else z
        for blk in blocks:
            t = blk(t)
        y = norm(t) if norm_on else t
        if read == "all":
            return head(y)
        if read == "mean":
            return head(y.mean(1))
        if read == "mean patches":
            return head(y[:, 1:].mean(1))
        return head(y[:, 0])

    return fn


def test_token_classifier():
    check_table(ex.check_token_classifier, _classifier(), {
        "mean all": (_classifier(read="mean"), "over all N + 1 tokens"),
        "mean patches": (_classifier(read="mean patches"), "over the N patch tokens"),
        "appended": (_classifier(append=True), "token 0 is a patch"),
        "no cls": (_classifier(with_cls=False), "no class token in the sequence"),
        "before": (_classifier(before=True), "same for every image"),
        "no norm": (_classifier(norm_on=False), "final LayerNorm is missing"),
        "every token": (_classifier(read="all"), "logits for every token"),
        "crash": (lambda z, cls, blocks, norm, head: torch.cat([cls, z]), "your code raised"),
        "other": (lambda *a: _classifier()(*a) + 1, "not rounding"),
    })


def test_appending_and_reading_the_last_token_is_right_too():
    """Without positions inside the blocks, where the class token sits does not matter, only that
    the same token is read: appended and read last passes."""
    def last(z, cls, blocks, norm, head):
        t = torch.cat([z, cls.expand(z.shape[0], -1, -1)], dim=1)
        for blk in blocks:
            t = blk(t)
        return head(norm(t)[:, -1])

    assert ex.check_token_classifier(last)


def _hidden(how="right"):
    return lambda block, plugin, t, size: ex._hidden(block, plugin, t, size, how)


def test_hidden_plugin():
    def right(block, plugin, t, size):
        h, w = size
        z1 = t + block.attn(block.norm1(t))
        u = block.mlp.act(block.mlp.fc1(block.norm2(z1)))
        u = rearrange(plugin(rearrange(u, "b (h w) c -> b c h w", h=h, w=w)), "b c h w -> b (h w) c")
        return z1 + block.mlp.fc2(u)

    check_table(ex.check_hidden_plugin, right, {
        "before act": (_hidden("before act"), "before the activation"),
        "(w h)": (_hidden("(w h)"), "column by column"),
        "transposed": (_hidden("transposed"), "transposed"),
        "view": (_hidden("view"), "mixes tokens and channels"),
        "no residual": (_hidden("no residual"), "residual is missing"),
        "no norm": (_hidden("no norm"), "normalised first"),
        "on the output": (lambda block, plugin, t, size: block.__class__.forward(
            type(block)(8, heads=2, mlp_ratio=2, plugin=plugin, plugin_at="mlp").double(), t, size), "your code raised"),
        "other": (lambda *a: right(*a) * 1.01, "not rounding"),
    })


def test_hidden_plugin_mistakes_differ_from_the_right_answer():
    """Every wrong variant moves the output (a symmetric kernel would hide the transposed map)."""
    block, plugin, t, size = ex._hidden_setup()
    right = ex._hidden(block, plugin, t, size)
    for how in ["before act", "(w h)", "transposed", "view", "no residual", "no norm"]:
        assert not torch.allclose(ex._hidden(block, plugin, t, size, how), right), how
