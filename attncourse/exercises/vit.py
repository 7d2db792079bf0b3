"""Checkers for the exercises of "The ViT block: patches as tokens, attention as the block".

Above each checker, a comment lists the mistakes a learner typically makes on that exercise;
each one gets its own message (``tests/test_checkers_vit.py`` tries every one of them).
"""

from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from ..blocks.vit import TransformerBlock
from . import Feedback, failed, judge_tensor, passed, run_answer

__all__ = ["check_conv_from_linear", "check_token_classifier", "check_hidden_plugin"]


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _randomise(m: nn.Module, seed: int, std: float = 0.5) -> nn.Module:
    g = _gen(seed)
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * std)
    return m


# Exercise 1: conv_from_linear(e, c, p) -> the (D, C, P, P) weight of the P x P stride-P convolution
# that computes x_p E, where E is (P²C, D) and multiplies patches flattened as (p1 p2 c).
# Typical mistakes:
#   - E's rows read as (c p1 p2), the order of conv_weight.flatten(1), not the patches' (p1 p2 c)
#   - p1 and p2 swapped: every kernel transposed
#   - E reshaped to (D, C, P, P) without moving D to the front (no transpose)
#   - (C, D, P, P): in and out channels swapped (Conv2d's weight is (out, in, kH, kW))
#   - (D, P, P, C): channels-last
def check_conv_from_linear(fn: Callable[..., Any]) -> Feedback:
    """Exercise 1: the convolution's weight from the linear embedding E."""
    what = "conv_from_linear(e, c, p)"
    c, p, d = 3, 2, 5  # P²C = 12; every axis a different size
    e = torch.randn(p * p * c, d, generator=_gen(0), dtype=torch.float64)
    got, fb = run_answer(fn, e.clone(), c, p, what=what)
    if fb is not None:
        return fb
    if isinstance(got, torch.Tensor):
        shape = tuple(got.shape)
        if shape == (c, d, p, p):
            return failed(f"{what}: the shape is {shape}, (C, D, P, P); nn.Conv2d's weight is (out, in, kH, kW) = "
                          f"(D, C, P, P) = {(d, c, p, p)}.")
        if shape == (d, p, p, c):
            return failed(f"{what}: the shape is {shape}, channels-last (D, P, P, C); nn.Conv2d's weight is "
                          f"(D, C, P, P) = {(d, c, p, p)}.")
    expected = rearrange(e, "(p1 p2 c) d -> d c p1 p2", p1=p, p2=p)
    known = {
        "E's rows are in the patches' order (p1 p2 c), the pixel's row, column, then channel; you read them as "
        "(c p1 p2), the order of a conv weight's flatten(1)": rearrange(e, "(c p1 p2) d -> d c p1 p2", p1=p, p2=p),
        "every kernel is transposed: a patch's row p1 comes before its column p2 in (p1 p2 c)": rearrange(
            e, "(p2 p1 c) d -> d c p1 p2", p1=p, p2=p),
        "E is (P²C, D): reshaping it straight to (D, C, P, P) mixes the outputs with the inputs; move D to the "
        "front first (a transpose, or the einops pattern '(p1 p2 c) d -> d c p1 p2')": e.reshape(d, c, p, p),
    }
    wrong = judge_tensor(got, expected, known, what=what)
    if wrong is not None:
        return wrong
    x = torch.randn(2, c, 4, 6, generator=_gen(1), dtype=torch.float64)
    conv = rearrange(F.conv2d(x, got.to(x.dtype), stride=p), "b d h w -> b (h w) d")
    torch.testing.assert_close(conv, rearrange(x, "b c (h p1) (w p2) -> b (h w) (p1 p2 c)", p1=p, p2=p) @ e)
    return passed(f"{what}: right; the {p} × {p} stride-{p} convolution with this weight equals the patches "
                  f"times E on a 4 × 6 image ({(4 // p) * (6 // p)} tokens of {d}).")


def _classifier_setup():
    b, n, d, k = 3, 6, 8, 4
    g = _gen(2)
    z = torch.randn(b, n, d, generator=g, dtype=torch.float64)
    cls = torch.randn(1, 1, d, generator=g, dtype=torch.float64)
    blocks = nn.ModuleList([_randomise(TransformerBlock(d, heads=2, mlp_ratio=2).double(), 3 + i) for i in range(2)])
    norm = _randomise(nn.LayerNorm(d, eps=1e-6).double(), 5)
    head = _randomise(nn.Linear(d, k).double(), 6)
    return z, cls, blocks, norm, head


def _run(blocks: nn.ModuleList, t: torch.Tensor) -> torch.Tensor:
    for blk in blocks:
        t = blk(t)
    return t


# Exercise 2: token_classifier(z, cls, blocks, norm, head) -> logits (B, K): eq. (1)'s class token
# prepended to the embedded patches z (B, N, D), the blocks, eq. (4)'s y = LN(z_L^0), the head.
# Typical mistakes:
#   - mean pooling over all N + 1 tokens, or over the N patches (TinyViT's read-out), not the class token
#   - the class token appended at the end and token 0 (a patch) read
#   - no class token in the sequence: token 0 of the blocks' output is the first patch
#   - the class token read before (or without) the blocks: the same logits for every image
#   - the final LayerNorm forgotten
#   - the head applied to every token: (B, N + 1, K)
def check_token_classifier(fn: Callable[..., Any]) -> Feedback:
    """Exercise 2: classify with a class token."""
    what = "token_classifier(z, cls, blocks, norm, head)"
    z, cls, blocks, norm, head = _classifier_setup()
    b, n, _ = z.shape
    with torch.no_grad():
        got, fb = run_answer(fn, z.clone(), cls.clone(), blocks, norm, head, what=what)
        if fb is not None:
            return fb
        if isinstance(got, torch.Tensor) and got.dim() == 3:
            return failed(f"{what}: the shape is {tuple(got.shape)}, logits for every token; eq. (4) reads one "
                          f"token, the class token, so the logits are (B, K) = {(b, head.out_features)}.")
        seq = torch.cat([cls.expand(b, -1, -1), z], dim=1)
        out = _run(blocks, seq)
        expected = head(norm(out)[:, 0])
        appended = _run(blocks, torch.cat([z, cls.expand(b, -1, -1)], dim=1))
        known = {
            "that is mean pooling over all N + 1 tokens; with a class token the read-out is token 0 alone, "
            "y = LN(z_L^0)": head(norm(out).mean(1)),
            "that is mean pooling over the N patch tokens (TinyViT's read-out, ViT's 'gap' option); with a class "
            "token the read-out is the class token": head(norm(out[:, 1:]).mean(1)),
            "token 0 is a patch: eq. (1) puts the class token first, [x_class; x_p^1 E; ...], and eq. (4) reads "
            "position 0": head(norm(appended)[:, 0]),
            "there is no class token in the sequence: token 0 of the blocks' output is the first patch; prepend "
            "cls (one copy per image) before the blocks": head(norm(_run(blocks, z))[:, 0]),
            "the logits are the same for every image: the class token was read before the blocks (or without "
            "them); it must attend to the patches first": head(norm(cls[:, 0])).expand(b, -1),
            "eq. (4) is y = LN(z_L^0): the final LayerNorm is missing": head(out[:, 0]),
        }
        wrong = judge_tensor(got, expected, known, what=what)
    if wrong is not None:
        return wrong
    return passed(f"{what}: right; {b} images of {n} patches and a class token through {len(blocks)} blocks, "
                  "read at token 0.")


def _hidden_setup():
    b, h, w, d = 2, 3, 5, 8
    block = _randomise(TransformerBlock(d, heads=2, mlp_ratio=2).double(), 7)
    plugin = _randomise(nn.Conv2d(2 * d, 2 * d, 3, padding=1, groups=2 * d).double(), 8)  # a depthwise 3 x 3
    t = torch.randn(b, h * w, d, generator=_gen(9), dtype=torch.float64)
    return block, plugin, t, (h, w)


def _hidden(block: TransformerBlock, plugin: nn.Module, t: torch.Tensor, size: tuple[int, int], how: str = "right"):
    h, w = size
    b, n, _ = t.shape
    z1 = t + block.attn(block.norm1(t))
    u = block.mlp.fc1(z1 if how == "no norm" else block.norm2(z1))
    if how != "before act":
        u = block.mlp.act(u)
    c = u.shape[-1]
    if how == "(w h)":
        m = rearrange(plugin(rearrange(u, "b (w h) c -> b c h w", h=h, w=w)), "b c h w -> b (w h) c")
    elif how == "transposed":
        m = rearrange(plugin(rearrange(u, "b (h w) c -> b c w h", h=h, w=w)), "b c w h -> b (h w) c")
    elif how == "view":
        m = plugin(u.reshape(b, c, h, w)).reshape(b, n, c)
    else:
        m = rearrange(plugin(rearrange(u, "b (h w) c -> b c h w", h=h, w=w)), "b c h w -> b (h w) c")
    if how == "before act":
        m = block.mlp.act(m)
    y = block.mlp.fc2(m)
    return y if how == "no residual" else z1 + y


# Exercise 3: hidden_plugin(block, plugin, t, size) -> (B, N, D): the block with the plug-in on the
# MLP's hidden activations (after GELU), as a (B, rD, H, W) map, between fc1 and fc2.
# Typical mistakes:
#   - the plug-in before the activation (on fc1's output)
#   - the tokens read as (w h), column by column
#   - the map transposed, (B, rD, W, H)
#   - reshape/view of (B, N, rD) straight to (B, rD, H, W): tokens and channels mixed
#   - the residual z' forgotten
#   - LN before the MLP forgotten
def check_hidden_plugin(fn: Callable[..., Any]) -> Feedback:
    """Exercise 3: a plug-in inside the MLP."""
    what = "hidden_plugin(block, plugin, t, size)"
    block, plugin, t, size = _hidden_setup()
    with torch.no_grad():
        got, fb = run_answer(fn, block, plugin, t.clone(), size, what=what)
        if fb is not None:
            return fb
        known = {
            "the plug-in acts before the activation; it goes on the hidden activations, GELU(fc1(LN(z')))": _hidden(
                block, plugin, t, size, "before act"),
            "the tokens are in (h w) order, row by row; you read them as (w h), column by column": _hidden(
                block, plugin, t, size, "(w h)"),
            "the map is transposed: (B, rD, W, H) instead of (B, rD, H, W); the plug-in's 3 × 3 kernel then runs "
            "along the wrong axes": _hidden(block, plugin, t, size, "transposed"),
            "reshape (or view) of (B, N, rD) straight to (B, rD, H, W) mixes tokens and channels; move the channel "
            "axis first, rearrange(u, 'b (h w) c -> b c h w')": _hidden(block, plugin, t, size, "view"),
            "the residual is missing: eq. (3) adds the MLP branch to z'": _hidden(block, plugin, t, size, "no residual"),
            "the MLP's input must be normalised first, LN(z') (eq. (3))": _hidden(block, plugin, t, size, "no norm"),
        }
        wrong = judge_tensor(got, _hidden(block, plugin, t, size), known, what=what)
    if wrong is not None:
        return wrong
    h, w = size
    return passed(f"{what}: right; the depthwise 3 × 3 plug-in mixes each hidden channel over the {h} × {w} token "
                  "map between fc1 and fc2.")
