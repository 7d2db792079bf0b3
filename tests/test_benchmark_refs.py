"""The benchmark's plain-PyTorch references (tools/refs/<part>.py) compute what the modules compute.

``make bench`` times every registered module against a reference written the way production
libraries write it; these tests keep the references honest (equal outputs and gradients on random
weights) and complete (every registered module has one), so the speed table cannot drift into
comparing different computations. No timing here: timings live in the benchmark only.
"""

import importlib.util
from pathlib import Path

import pytest
import torch

import attncourse

ROOT = Path(__file__).resolve().parents[1]
NAMES = attncourse.available()


def _load_benchmark():
    spec = importlib.util.spec_from_file_location("attncourse_benchmark", ROOT / "tools" / "benchmark.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


bench = _load_benchmark()  # the timing code; it puts tools/ on the path, so the references import
refs = bench.refs


def _randomise(module):
    """Random weights and batch-norm statistics, so that a wrongly copied tensor shows."""
    with torch.no_grad():
        for t in list(module.parameters()) + [b for b in module.buffers() if b.is_floating_point()]:
            t.copy_(torch.rand_like(t) + 0.5 if "running_var" in _name(module, t) else torch.randn_like(t) * 0.5)
    return module


def _name(module, tensor):
    return next(n for n, t in module.state_dict(keep_vars=True).items() if t is tensor)


@pytest.mark.parametrize("name", NAMES)
def test_every_registered_module_has_a_reference(name):
    part = refs.part_of(name)
    assert name in refs.REFERENCES, f"add a plain-PyTorch reference for {name!r} to tools/refs/{part}.py"
    # in the file that mirrors the module's part of the package
    assert refs.REFERENCES[name].__module__ == f"refs.{part}", f"move the reference of {name!r} to tools/refs/{part}.py"


def test_the_reference_files_mirror_the_package():
    parts = {p.name for p in (ROOT / "attncourse").iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    parts = {p for p in parts if any(refs.part_of(n) == p for n in NAMES)}
    assert parts == set(refs.PARTS)
    assert {f.stem for f in (ROOT / "tools" / "refs").glob("*.py")} == set(refs.PARTS) | {"__init__"}


def test_the_benchmark_holds_no_reference():
    assert bench.REFERENCES is refs.REFERENCES
    assert not [n for n, v in vars(bench).items() if isinstance(v, type) and n.endswith("Ref")]


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_reference_equals_module(name, training):
    m = _randomise(attncourse.create(name, 64)).double().train(training)
    ref = refs.reference_for(m)
    x = torch.randn(3, 64, 7, 5, dtype=torch.float64)
    refs.check_reference(m, ref, x, rtol=1e-10, atol=1e-12)


# Settings other than the defaults that the references implement. DANet's official affinity
# subtracts a row maximum that the module detaches (a per-row shift changes no softmax): the
# official code differentiates through it, so equal input gradients here show that the term the
# module drops is zero.
OPTIONS = [("cam", {"channel_affinity": "official"}), ("danet", {"channel_affinity": "official"}),
           ("nonlocal", {"subsample": True}), ("nonlocal", {"scale": True}), ("flatten", {"kernel_size": None}),
           ("masa", {"decomposed": True})]


@pytest.mark.parametrize("name,settings", OPTIONS, ids=[f"{n}-{'-'.join(map(str, s.values()))}" for n, s in OPTIONS])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_reference_equals_module_with_options(name, settings, training):
    m = _randomise(attncourse.create(name, 64, **settings)).double().train(training)
    x = torch.randn(3, 64, 7, 5, dtype=torch.float64)
    refs.check_reference(m, refs.reference_for(m), x, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", NAMES)
def test_reference_equals_module_float32(name):
    m = _randomise(attncourse.create(name, 64))
    if name == "nonlocal":
        # Weights of std 0.5 give Non-local's unscaled logits a spread of about 90: a one-hot
        # softmax whose input gradient is float32 rounding (at 2 threads one element of 6,912 differed
        # by 5e-4). Smaller queries keep the comparison meaningful; the float64 test keeps the full scale.
        with torch.no_grad():
            m.theta.weight.mul_(0.05)
    if name == "window":  # the same one-hot softmax from std-0.5 query/key weights (logits spread ~100)
        with torch.no_grad():
            m.qkv.weight.mul_(0.05)
    # float32 rounding through batch statistics: the float64 test above is the strict one
    refs.check_reference(m, refs.reference_for(m), torch.randn(2, 64, 6, 9), rtol=1e-3, atol=1e-4)


def test_a_wrong_reference_is_caught():
    m = _randomise(attncourse.create("se", 64)).double()
    ref = refs.reference_for(m)
    with torch.no_grad():
        ref.fc2.bias.add_(1e-3)
    with pytest.raises(AssertionError):
        refs.check_reference(m, ref, torch.randn(2, 64, 5, 5, dtype=torch.float64), rtol=1e-10, atol=1e-12)


def test_a_module_without_reference_is_refused():
    with pytest.raises(ValueError, match="not a registered mechanism"):
        refs.reference_for(torch.nn.Conv2d(4, 4, 1))


def test_unsupported_settings_are_refused_not_silently_compared():
    with pytest.raises(NotImplementedError, match="aggregation"):
        refs.reference_for(attncourse.create("scse", 64, aggregation="max"))


def test_stripped_module_has_no_gates_and_computes_the_same():
    m = _randomise(attncourse.create("cbam", 64)).double()
    stripped = bench._Stripped(m)
    assert not any(isinstance(s, attncourse.Gate) for s in stripped.modules())
    x = torch.randn(2, 64, 5, 7, dtype=torch.float64)
    torch.testing.assert_close(stripped(x), m(x))
    with pytest.raises(ValueError):  # the checks are back outside the stripped module's forward
        m(torch.randn(2, 32, 5, 7))


def test_stripped_module_skips_every_input_check(monkeypatch):
    import attncourse.channel.se as se_file
    import attncourse.hybrid.scse as scse_file

    calls = []
    for ns in (se_file, scse_file):
        monkeypatch.setattr(ns, "check_input", lambda module, x, *a, **k: calls.append(module) or x)
    m = attncourse.create("scse", 16, aggregation="max")  # runs its submodules' forwards
    m(torch.randn(2, 16, 3, 3))
    assert len(calls) == 3  # SCSE, its ChannelSE (SqueezeExcite.forward in se.py), its SpatialSE
    calls.clear()
    bench._Stripped(m)(torch.randn(2, 16, 3, 3))
    assert calls == []


def test_interleaved_timing_returns_one_figure_per_module():
    m = attncourse.create("se", 16)
    t = bench.time_interleaved([m, refs.reference_for(m)], torch.randn(2, 16, 4, 4), blocks=1, per_block=2, warmup=0)
    assert len(t) == 2 and all(s > 0 for s in t)
