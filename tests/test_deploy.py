"""The deployment contract every registered mechanism keeps (issue 8 §3): readers put these modules
into networks they export, so each one must

- export with ``torch.export.export`` with a dynamic batch, H and W, and the exported program must
  equal eager on other shapes (a different B, H and W, and B = H = W = 1);
- be captured by ``torch.compile(..., fullgraph=True)`` without graph breaks, in eval mode and in
  training mode (forward and backward), and equal eager; with ``dynamic=True`` a second shape
  (different B, H, W) runs on the same graph, without a recompile;
- export to ONNX (``torch.onnx.export(..., dynamo=True)``) with dynamic axes, and run in
  onnxruntime equal to eager within 1e-5 on shapes other than the exported one (B = H = W = 1 too).

A module whose mechanism cannot allow one of the axes B, H, W to vary (say, a learned embedding of
a fixed H × W) declares it in one place, the class attribute ``export_static_dims``: a dict from
the axis name to the reason, e.g. ``{"H": "one learned embedding per row"}``; the reason must also
appear in the class docstring. That axis is then exported static, and checked only at the example
size. No module needs this today.

New modules are covered as soon as they are registered. The tests use the smallest channel count
a module accepts among (16, 32, 64) and small maps: ONNX export is the slow part (1-3 s a module).
"""

from __future__ import annotations

import copy
import re
import warnings

import pytest
import torch
from torch import nn
from torch.export import Dim

import attncourse

NAMES = attncourse.available()
AXES = {"B": 0, "H": 2, "W": 3}
EXAMPLE = (2, 6, 5)  # B, H, W of the traced example: no size 1 (torch would specialise it) and H != W
OTHERS = [(3, 9, 4), (1, 1, 1)]  # other B, H, W, checked against eager


def _static(cls: type) -> dict[str, str]:
    """The axes a module cannot leave dynamic, with the reason, from its one declaration."""
    static = dict(getattr(cls, "export_static_dims", {}))
    assert set(static) <= set(AXES), f"{cls.__name__}.export_static_dims names unknown axes {set(static) - set(AXES)}"
    return static


def _channels(cls: type) -> int:
    for c in (16, 32, 64):
        try:
            cls(c)
        except ValueError:
            continue
        return c
    raise AssertionError(f"{cls.__name__} refuses 16, 32 and 64 channels")


def _randomise(m: nn.Module, seed: int = 0) -> nn.Module:
    """Nudge every parameter and give batch norms non-trivial statistics, so that no layer is an identity."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g, dtype=p.dtype))
        for name, b in m.named_buffers():
            if name.endswith("running_mean"):
                b.copy_(0.1 * torch.randn(b.shape, generator=g, dtype=b.dtype))
            elif name.endswith("running_var"):
                b.copy_(0.5 + torch.rand(b.shape, generator=g, dtype=b.dtype))
    return m


def _module(name: str) -> tuple[nn.Module, int]:
    cls = attncourse.get(name)
    c = _channels(cls)
    return _randomise(cls(c)).eval(), c


def _input(c: int, bhw: tuple[int, int, int], seed: int) -> torch.Tensor:
    b, h, w = bhw
    return torch.randn(b, c, h, w, generator=torch.Generator().manual_seed(seed))


def _others(cls: type, c: int) -> list[torch.Tensor]:
    """Inputs of other shapes, keeping the static axes (if any) at the example's size."""
    out = []
    for i, bhw in enumerate(OTHERS):
        sizes = dict(zip("BHW", bhw))
        for axis in _static(cls):
            sizes[axis] = EXAMPLE["BHW".index(axis)]
        out.append(_input(c, (sizes["B"], sizes["H"], sizes["W"]), seed=10 + i))
    return out


def _dynamic_shapes(cls: type) -> dict:
    static = _static(cls)
    return {"x": {i: Dim(axis.lower(), min=1) for axis, i in AXES.items() if axis not in static}}


def _check_dims_are_symbolic(cls: type, dims: list) -> None:
    static = _static(cls)
    for axis, i in AXES.items():
        if axis in static:
            assert isinstance(dims[i], int), f"{cls.__name__}: axis {axis} is declared static but exported dynamic"
        else:
            assert not isinstance(dims[i], int), f"{cls.__name__}: axis {axis} was exported as the constant {dims[i]}"


def test_every_module_is_covered():
    assert len(NAMES) >= 8 and "se" in NAMES and "coord" in NAMES


@pytest.mark.parametrize("name", NAMES)
def test_static_axes_are_declared_once_and_explained(name):
    cls = attncourse.get(name)
    doc = " ".join((cls.__doc__ or "").split())
    for axis, reason in _static(cls).items():
        assert reason and " ".join(reason.split()) in doc, f"{cls.__name__}: why {axis} must be static is not in the docstring"


@pytest.mark.parametrize("name", NAMES)
def test_torch_export_with_dynamic_batch_and_size(name):
    m, c = _module(name)
    ep = torch.export.export(m, (_input(c, EXAMPLE, seed=1),), dynamic_shapes=_dynamic_shapes(type(m)))
    x_meta = next(n.meta["val"] for n in ep.graph.nodes if n.op == "placeholder" and n.name == "x")
    _check_dims_are_symbolic(type(m), list(x_meta.shape))
    program = ep.module()
    for x in _others(type(m), c):
        torch.testing.assert_close(program(x), m(x), msg=lambda s: f"{name} exported at {x.shape}: {s}")


@pytest.mark.parametrize("name", NAMES)
def test_torch_compile_fullgraph_eval_one_graph_for_two_shapes(name):
    m, c = _module(name)
    graphs = []

    def eager_counting(gm, example_inputs):  # the "eager" backend, counting the graphs it is given
        graphs.append(gm)
        return gm.forward

    torch._dynamo.reset()
    compiled = torch.compile(m, fullgraph=True, backend=eager_counting, dynamic=True)
    for x in [_input(c, EXAMPLE, seed=1), _others(type(m), c)[0]]:
        torch.testing.assert_close(compiled(x), m(x), msg=lambda s: f"{name} compiled at {x.shape}: {s}")
    assert len(graphs) == 1, f"{name}: {len(graphs)} graphs for two shapes with dynamic=True (a recompile)"


@pytest.mark.parametrize("name", NAMES)
def test_torch_compile_fullgraph_training_step(name):
    m, c = _module(name)
    m.train()
    twin = copy.deepcopy(m)
    torch._dynamo.reset()
    compiled = torch.compile(twin, fullgraph=True, backend="eager")
    x = _input(c, EXAMPLE, seed=2)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    ya, yb = m(xa), compiled(xb)
    torch.testing.assert_close(yb, ya)
    ya.square().sum().backward()
    yb.square().sum().backward()
    torch.testing.assert_close(xb.grad, xa.grad)
    for (n, a), b in zip(m.named_buffers(), twin.buffers()):  # batch-norm statistics updated alike
        torch.testing.assert_close(b, a, msg=lambda s: f"{name} buffer {n}: {s}")


@pytest.mark.parametrize("name", NAMES)
def test_input_checks_still_speak_under_export_and_compile(name):
    """torch.export and torch.compile (default, graph breaks allowed) still raise the module's ValueError."""
    m, c = _module(name)
    bad = _input(c + 1, EXAMPLE, seed=3)
    with pytest.raises(ValueError, match=type(m).__name__):
        torch.export.export(m, (bad,))
    torch._dynamo.reset()
    compiled = torch.compile(m, backend="eager")
    with pytest.raises(ValueError, match=re.escape(f"got {tuple(bad.shape)}")):
        compiled(bad)


@pytest.mark.parametrize("name", NAMES)
def test_onnx_export_runs_in_onnxruntime_on_other_shapes(name):
    onnx = pytest.importorskip("onnx", reason="ONNX export needs the test extra: pip install -e '.[test]'")
    ort = pytest.importorskip("onnxruntime", reason="ONNX export needs the test extra: pip install -e '.[test]'")
    pytest.importorskip("onnxscript", reason="ONNX export needs the test extra: pip install -e '.[test]'")
    m, c = _module(name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # deprecations inside the exporter, not ours
        program = torch.onnx.export(
            m, (_input(c, EXAMPLE, seed=1),), dynamo=True, dynamic_shapes=_dynamic_shapes(type(m)), verbose=False
        )
    onnx.checker.check_model(program.model_proto)
    session = ort.InferenceSession(program.model_proto.SerializeToString(), providers=["CPUExecutionProvider"])
    (inp,) = session.get_inputs()
    _check_dims_are_symbolic(type(m), list(inp.shape))
    for x in _others(type(m), c):
        (out,) = session.run(None, {inp.name: x.numpy()})
        torch.testing.assert_close(
            torch.from_numpy(out), m(x), rtol=0, atol=1e-5, msg=lambda s: f"{name} in onnxruntime at {x.shape}: {s}"
        )


class _FixedWidth(nn.Module):
    """A stand-in with a learned weight per column, so W cannot vary: one learned weight per column."""

    export_static_dims = {"W": "one learned weight per column"}

    def __init__(self, channels: int, width: int = EXAMPLE[2]) -> None:
        super().__init__()
        self.col = nn.Parameter(torch.randn(width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.col


def test_a_declared_static_axis_is_exported_static_and_the_others_stay_dynamic():
    m = _FixedWidth(4).eval()
    shapes = _dynamic_shapes(_FixedWidth)
    assert set(shapes["x"]) == {0, 2}
    ep = torch.export.export(m, (_input(4, EXAMPLE, seed=1),), dynamic_shapes=shapes)
    x_meta = next(n.meta["val"] for n in ep.graph.nodes if n.op == "placeholder" and n.name == "x")
    _check_dims_are_symbolic(_FixedWidth, list(x_meta.shape))
    for x in _others(_FixedWidth, 4):
        assert x.shape[3] == EXAMPLE[2]
        torch.testing.assert_close(ep.module()(x), m(x))
    with pytest.raises(AssertionError, match="exported as the constant"):
        _check_dims_are_symbolic(nn.Module, [2, 4, 6, 5])
