"""The External Attention chapter's exercise checkers: each typical mistake gets its own message, the
right answer passes, a blank answer is "not attempted" without raising.

One table per exercise: (wrong answer, a fragment of the message it must get). The mistakes are
the ones listed above each checker in ``attncourse/exercises/external.py``.
"""

from __future__ import annotations

import torch
from einops import rearrange

from attncourse import count_parameters
from attncourse.exercises import external as ex
from attncourse.linear.external import ExternalAttention

from checker_tables import check_table as _check_table


def test_tied_parameters():
    c, s = 384, 96
    right = 2 * c * c + s * c + 2 * c
    assert right == 332_544
    # the package's module has two memories and b_1: s * c + c more
    assert count_parameters(ExternalAttention(c, memory_units=s)) == right + s * c + c
    _check_table(ex.check_tied_parameters, right, {
        "the package's count": (count_parameters(ExternalAttention(c, memory_units=s)), "ExternalAttention(384, memory_units=96)'s count"),
        "two memories": (right + s * c, "counts M_k and M_v apart"),
        "b_1 kept": (right + c, "One C too many"),
        "no BN": (2 * c * c + s * c, "BatchNorm is missing"),
        "running stats": (right + 2 * c, "buffers"),
        "one conv": (c * c + s * c + 2 * c, "two 1×1 convolutions"),
        "S = 64": (2 * c * c + 64 * c + 2 * c, "S = 64"),
        "other": (12345, "not right"),
    })


def _official(how="right"):
    """A learner's double normalisation of (B, S, N) logits: units on dim 1, positions on dim 2."""
    def fn(attn):
        return {
            "right": lambda: (lambda a: a / (1e-9 + a.sum(dim=1, keepdim=True)))(attn.softmax(dim=-1)),
            "chapter's axes": lambda: (lambda a: a / a.sum(dim=2, keepdim=True))(attn.softmax(dim=1)),
            "memory": lambda: attn.softmax(dim=1),
            "positions": lambda: attn.softmax(dim=2),
            "l1 first": lambda: (attn / attn.sum(dim=1, keepdim=True)).softmax(dim=2),
            "joint": lambda: attn.flatten(1).softmax(dim=1).reshape(attn.shape),
            "transposed": lambda: (lambda a: a / a.sum(dim=1, keepdim=True))(attn.softmax(dim=-1)).transpose(1, 2),
        }[how]()
    return fn


def test_double_normalise_official():
    _check_table(ex.check_double_normalise_official, _official(), {
        "the chapter's axes": (_official("chapter's axes"), "chapter's axes"),
        "memory softmax": (_official("memory"), "one softmax over the memory units"),
        "no l1": (_official("positions"), "ℓ1 step over the S units (dim 1) is missing"),
        "order": (_official("l1 first"), "wrong order"),
        "joint": (_official("joint"), "all S·N entries"),
        "transposed": (_official("transposed"), "the shape is"),
        "a crash": (lambda attn: attn.nope(), "AttributeError"),
    })
    # the module's DoubleNormalise works on (B, N, S): as it is it gets the chapter's-axes message, and on
    # the transposed logits it passes
    from attncourse.linear.external import DoubleNormalise
    assert "chapter's axes" in ex.check_double_normalise_official(DoubleNormalise()).message
    assert ex.check_double_normalise_official(lambda a: DoubleNormalise()(a.transpose(1, 2)).transpose(1, 2))


def _mhea(how="right"):
    def fn(f, m_k, m_v, heads):
        split = "e h" if how == "split (e h)" else "h e"
        t = rearrange(f, f"b n ({split}) -> b h n e", h=heads)
        k_, v_ = (m_v, m_k) if how == "swapped" else (m_k, m_v)
        logits = t @ k_.T
        if how == "joint":
            a = logits.transpose(1, 2).reshape(f.shape[0], -1, k_.shape[0]).softmax(dim=1)
            a = a.reshape(f.shape[0], f.shape[1], heads, -1).transpose(1, 2)
            a = a / a.sum(-1, keepdim=True)
        elif how == "memory":
            a = logits.softmax(-1)
        elif how == "no l1":
            a = logits.softmax(-2)
        else:
            a = logits.softmax(-2)
            a = a / a.sum(-1, keepdim=True)
        out = a @ v_
        if how == "unmerged":
            return out
        merge = "e h" if how in ("split (e h)", "merge (e h)") else "h e"
        out = rearrange(out, f"b h n e -> b n ({merge})")
        return out + f if how == "residual" else out
    return fn


def test_mhea_core():
    _check_table(ex.check_mhea_core, _mhea(), {
        "(e h) split": (_mhea("split (e h)"), "split into heads as (e h)"),
        "(e h) merge": (_mhea("merge (e h)"), "concatenated back as (e h)"),
        "one softmax over all heads' positions": (_mhea("joint"), "positions of all heads together"),
        "memory softmax": (_mhea("memory"), "one softmax over the memory units"),
        "no l1": (_mhea("no l1"), "ℓ1 step over the units is missing"),
        "swapped": (_mhea("swapped"), "swapped"),
        "residual": (_mhea("residual"), "residual F was added"),
        "not merged": (_mhea("unmerged"), "the shape is"),
        "a crash": (lambda *a: 1 / 0, "ZeroDivisionError"),
    })


def test_one_head_is_the_module_s_core():
    m = ExternalAttention(6, memory_units=4).double().eval()
    with torch.no_grad():
        m.m_v.normal_()
    x = torch.randn(2, 6, 3, 5, dtype=torch.float64)
    f = m.conv1(x).flatten(2).transpose(1, 2)
    out = _mhea()(f, m.m_k, m.m_v, 1).transpose(1, 2).reshape_as(x)
    torch.testing.assert_close(m(x), torch.relu(x + m.bn(m.conv2(out))))
