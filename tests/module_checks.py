"""Helpers shared by the modules' own tests: random weights, training on a batch of one, an ONNX
round trip, and the naive 2-D sine position code that MHSA's and linear attention's tests check
their option against."""

from __future__ import annotations

import math

import torch
from torch import nn


def randomised(m: nn.Module, *, std: float = 1.0) -> nn.Module:
    """``m`` in float64 with random weights everywhere (``std`` times a standard normal) and random
    running statistics in every batch norm. Drawn in the module's dtype before the cast, so that a
    float32 copy of the weights is exact."""
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn_like(p) * std)
        for mod in m.modules():
            if isinstance(mod, nn.modules.batchnorm._BatchNorm):
                mod.running_mean.normal_()
                mod.running_var.uniform_(0.5, 2.0)
    return m.double()


def assert_trains_on_batch_one(m: nn.Module, channels: int, h: int, w: int) -> None:
    """A float64 forward and backward in training mode on one image of ``h`` × ``w``: same shape,
    finite output and gradient."""
    m = m.double().train()
    x = torch.randn(1, channels, h, w, dtype=torch.float64, requires_grad=True)
    y = m(x)
    assert y.shape == x.shape and torch.isfinite(y).all()
    y.square().sum().backward()
    assert torch.isfinite(x.grad).all()


def assert_onnx_equals_eager(m: nn.Module, example: torch.Tensor, dynamic_shapes: dict, shapes, path) -> None:
    """Export ``m`` to ONNX (dynamo) with ``dynamic_shapes`` for its one input, save it to ``path``,
    and check onnxruntime's output equals eager within 1e-5 on inputs of each of ``shapes``."""
    import warnings

    import pytest

    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prog = torch.onnx.export(m, (example,), dynamo=True, verbose=False, dynamic_shapes=(dynamic_shapes,))
    prog.save(str(path))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for shape in shapes:
        y = torch.randn(shape)
        out = session.run(None, {session.get_inputs()[0].name: y.numpy()})[0]
        torch.testing.assert_close(torch.from_numpy(out), m(y), atol=1e-5, rtol=1e-5)


def naive_sine(h, w, c, temperature=10000.0):
    """DETR's PositionEmbeddingSine (normalize=False), one position and one channel at a time: (H*W, C)."""
    half = c // 2
    p = torch.empty(h * w, c, dtype=torch.float64)
    for y in range(h):
        for x in range(w):
            for j in range(half):
                omega = temperature ** (-2 * (j // 2) / half)
                trig = math.sin if j % 2 == 0 else math.cos
                p[y * w + x, j] = trig((y + 1) * omega)  # rows: the first C/2 channels
                p[y * w + x, half + j] = trig((x + 1) * omega)  # columns: the last C/2
    return p
