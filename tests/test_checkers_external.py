"""The External Attention chapter's exercise checkers: each typical mistake gets its own message, the
right answer passes, a blank answer is "not attempted" without raising.

One table per exercise: (wrong answer, a fragment of the message it must get). The mistakes are
the ones listed above each checker in ``attncourse/exercises/external.py``.
"""

from __future__ import annotations

import torch

from attncourse import count_parameters
from attncourse.exercises import external as ex
from attncourse.linear.external import ExternalAttention

from checker_tables import check_table as _check_table


def test_block_parameters():
    c, s = 384, 96
    right = 2 * c * c + 2 * s * c + 3 * c
    assert right == count_parameters(ExternalAttention(c, memory_units=s)) == 369_792
    _check_table(ex.check_block_parameters, right, {
        "no BN": (2 * c * c + 2 * s * c + c, "BatchNorm is missing"),
        "running stats": (2 * c * c + 2 * s * c + 5 * c, "buffers"),
        "no conv bias": (2 * c * c + 2 * s * c + 2 * c, "has a bias"),
        "tied memories": (2 * c * c + s * c + 3 * c, "M_v was counted as M_k"),
        "one conv": (c * c + 2 * s * c + 3 * c, "two 1×1 convolutions"),
        "memories only": (2 * s * c, "the two memories only"),
        "no biases, no BN": (2 * c * c + 2 * s * c, "The biases and BatchNorm are missing"),
        "S = 64": (2 * c * c + 2 * 64 * c + 3 * c, "S = 64"),
    })


def _double(how="right"):
    def fn(logits):
        if how == "right":
            a = logits.softmax(dim=1)
            return a / a.sum(dim=2, keepdim=True)
        if how == "memory":
            return logits.softmax(dim=2)
        if how == "positions":
            return logits.softmax(dim=1)
        if how == "swapped":
            a = logits.softmax(dim=2)
            return a / a.sum(dim=1, keepdim=True)
        if how == "l1 first":
            return (logits / logits.sum(dim=2, keepdim=True)).softmax(dim=1)
        if how == "joint":
            return logits.flatten(1).softmax(dim=1).reshape(logits.shape)
        if how == "transposed":
            a = logits.softmax(dim=1)
            return (a / a.sum(dim=2, keepdim=True)).transpose(1, 2)
        raise ValueError(how)
    return fn


def test_double_normalise():
    _check_table(ex.check_double_normalise, _double(), {
        "memory softmax": (_double("memory"), "one softmax over the memory units"),
        "no l1": (_double("positions"), "ℓ1 step over the S units (dim -1) is missing"),
        "swapped axes": (_double("swapped"), "axes are swapped"),
        "order": (_double("l1 first"), "wrong order"),
        "joint": (_double("joint"), "all N·S entries"),
        "transposed": (_double("transposed"), "the shape is"),
        "a crash": (lambda logits: logits.nope(), "AttributeError"),
    })


def _core(how="right"):
    def fn(f, m_k, m_v):
        def norm(logits, kind="double"):
            a = logits.softmax(dim=1) if kind != "memory" else logits.softmax(dim=2)
            return a / a.sum(dim=2, keepdim=True) if kind == "double" else a

        return {
            "right": lambda: norm(f @ m_k.T) @ m_v,
            "swapped": lambda: norm(f @ m_v.T) @ m_k,
            "k twice": lambda: norm(f @ m_k.T) @ m_k,
            "v twice": lambda: norm(f @ m_v.T) @ m_v,
            "memory": lambda: norm(f @ m_k.T, "memory") @ m_v,
            "no l1": lambda: norm(f @ m_k.T, "positions") @ m_v,
            "residual": lambda: f + norm(f @ m_k.T) @ m_v,
            "A only": lambda: norm(f @ m_k.T),
        }[how]()
    return fn


def test_external_core():
    _check_table(ex.check_external_core, _core(), {
        "swapped": (_core("swapped"), "swapped"),
        "M_k twice": (_core("k twice"), "M_k serves as the values"),
        "M_v twice": (_core("v twice"), "M_v serves as the keys"),
        "memory softmax": (_core("memory"), "one softmax over the memory units"),
        "no l1": (_core("no l1"), "ℓ1 step over the units is missing"),
        "residual": (_core("residual"), "residual F was added"),
        "A only": (_core("A only"), "the shape is"),
    })


def test_the_right_core_is_the_module_s():
    m = ExternalAttention(6, memory_units=4).double().eval()
    with torch.no_grad():
        m.m_v.normal_()
    x = torch.randn(2, 6, 3, 5, dtype=torch.float64)
    f = m.conv1(x).flatten(2).transpose(1, 2)
    out = _core()(f, m.m_k, m.m_v).transpose(1, 2).reshape_as(x)
    torch.testing.assert_close(m(x), torch.relu(x + m.bn(m.conv2(out))))
