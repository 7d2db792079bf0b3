"""Exercise checkers accept right answers, explain wrong ones, and never crash on a blank."""

from __future__ import annotations

import pytest
import torch
from einops import rearrange, reduce

from attncourse.exercises import einops_primer as ep
from attncourse.exercises import se as ex_se


def test_blank_answers_are_not_attempted_without_raising():
    for fb in [ex_se.check_se_parameters(...), ex_se.check_resnet50_se_parameters(None)]:
        assert not fb and not fb.attempted and "not attempted" in repr(fb)

    def blank(*args):
        raise NotImplementedError

    for check in [ex_se.check_se_function, ep.check_to_tokens, ep.check_split_heads, ep.check_patchify, ep.check_attention_scores]:
        fb = check(blank)
        assert not fb and not fb.attempted


def test_assert_ok_raises_with_the_reason():
    with pytest.raises(AssertionError, match="without their biases"):
        ex_se.check_se_parameters(2 * 256 * 256 // 16).assert_ok()
    assert ex_se.check_se_parameters(8464).assert_ok()


@pytest.mark.parametrize("answer, hint", [(2_514_944, "bias-free"), (2_530_992 // 1 - 1, "not right")])
def test_resnet50_hints(answer, hint):
    fb = ex_se.check_resnet50_se_parameters(answer)
    assert not fb and hint in repr(fb)
    assert ex_se.check_resnet50_se_parameters(2_530_992)


def test_se_function_diagnoses_common_mistakes():
    def right(u, w1, b1, w2, b2):
        s = torch.sigmoid(torch.relu(reduce(u, "b c h w -> b c", "mean") @ w1.T + b1) @ w2.T + b2)
        return u * rearrange(s, "b c -> b c 1 1")

    def max_pool(u, w1, b1, w2, b2):
        s = torch.sigmoid(torch.relu(reduce(u, "b c h w -> b c", "max") @ w1.T + b1) @ w2.T + b2)
        return u * rearrange(s, "b c -> b c 1 1")

    def no_sigmoid(u, w1, b1, w2, b2):
        s = torch.relu(reduce(u, "b c h w -> b c", "mean") @ w1.T + b1) @ w2.T + b2
        return u * rearrange(s, "b c -> b c 1 1")

    def crashes(u, *w):
        return u @ u

    assert ex_se.check_se_function(right)
    assert "maximum" in repr(ex_se.check_se_function(max_pool))
    assert "sigmoid" in repr(ex_se.check_se_function(no_sigmoid))
    assert "raised RuntimeError" in repr(ex_se.check_se_function(crashes))


def test_einops_checkers():
    assert ep.check_to_tokens(lambda x: rearrange(x, "b c h w -> b (h w) c"))
    assert "without moving the channel axis" in repr(ep.check_to_tokens(lambda x: x.reshape(x.shape[0], -1, x.shape[1])))
    assert "(w h) order" in repr(ep.check_to_tokens(lambda x: rearrange(x, "b c h w -> b (w h) c")))
    assert ep.check_split_heads(lambda x, h: rearrange(x, "b n (h d) -> b h n d", h=h))
    assert "(d heads)" in repr(ep.check_split_heads(lambda x, h: rearrange(x, "b n (d h) -> b h n d", h=h)))
    assert ep.check_patchify(lambda x, p: rearrange(x, "b c (h p1) (w p2) -> b (h w) (p1 p2 c)", p1=p, p2=p))
    assert "(c p1 p2)" in repr(ep.check_patchify(lambda x, p: rearrange(x, "b c (h p1) (w p2) -> b (h w) (c p1 p2)", p1=p, p2=p)))
    assert ep.check_attention_scores(lambda q, k: q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5)
    assert "scale is missing" in repr(ep.check_attention_scores(lambda q, k: q @ k.transpose(-1, -2)))
    assert "softmax" in repr(ep.check_attention_scores(lambda q, k: (q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5).softmax(-1)))
