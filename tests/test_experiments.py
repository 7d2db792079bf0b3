"""The parts' stored comparisons: present, complete, and still those of the current code."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from attncourse import experiments
from attncourse.nets import TinyNet, TinyViT
from attncourse.train import Comparison, History, fit, numerics_fingerprint, pinned_threads


@pytest.mark.parametrize("name", sorted(experiments.PROTOCOLS))
def test_stored_results_match_the_current_protocol(name):
    stored = experiments.load(name)  # raises if the protocol or a parameter count changed
    p = experiments.protocol(name)
    assert set(stored.result.histories) == set(p.variants)
    assert len(stored.result.seeds) >= 3
    for variant, runs in stored.result.histories.items():
        assert len(runs) == len(stored.result.seeds)
        for h in runs:
            assert len(h.test_acc) == p.epochs and all(0.0 <= a <= 1.0 for a in h.test_acc)


def _tiny(tmp_path, name="channel"):
    p = experiments.protocol(name)
    params = {v: sum(q.numel() for q in p.network(v)().parameters()) for v in p.variants}
    hist = {v: [History([0.7] * p.epochs, [0.5] * p.epochs, 1.0)] for v in p.variants}
    return experiments.save(Comparison([0], hist, params), name, tmp_path / f"{name}.json")


def test_save_load_round_trip(tmp_path):
    path = _tiny(tmp_path)
    stored = experiments.load("channel", path)
    assert stored.result.seeds == [0] and stored.result.mean("ECA") == 0.5
    assert stored.machine["torch"].startswith("2.")


def test_corrupted_accuracies_and_vit_variants_round_trip(tmp_path):
    p = experiments.protocol("blocks")
    assert p.corruptions and p.num_classes == 10 and any(a == "tinyvit" for a, _ in p.variants.values())
    assert isinstance(p.network("FAN")(), TinyViT) and isinstance(p.network("TinyNet + CBAM")(), TinyNet)
    params = {v: sum(q.numel() for q in p.network(v)().parameters()) for v in p.variants}
    hist = {v: [History([0.7] * p.epochs, [0.5] * p.epochs, 1.0, {c: 0.25 for c in p.corruptions})] for v in p.variants}
    path = experiments.save(Comparison([0], hist, params), "blocks", tmp_path / "blocks.json")
    stored = experiments.load("blocks", path)
    assert stored.result.histories["FAN"][0].corrupted == {c: 0.25 for c in p.corruptions}
    tests = p.corrupted_tests(p.data())
    assert set(tests) == set(p.corruptions) and all(t.shape == p.data().x_test.shape for t in tests.values())


def test_run_evaluates_every_network_on_every_corruption(monkeypatch):
    from attncourse import data as data_module

    p = experiments.protocol("blocks")
    small = data_module.digits()
    small = data_module.Split(small.x_train[:64], small.y_train[:64], small.x_test[:50], small.y_test[:50], 10)
    monkeypatch.setattr(experiments.Protocol, "data", lambda self: small)
    monkeypatch.setattr(experiments.Protocol, "fit_kwargs", lambda self: {"epochs": 1, "lr": 1e-3, "batch_size": 64})
    r = experiments.run("blocks", seeds=[0], variants=["TinyNet", "ViT"], progress=False)
    assert not r.models  # kept only to evaluate them
    for v in ("TinyNet", "ViT"):
        c = r.histories[v][0].corrupted
        assert set(c) == set(p.corruptions) and all(0 <= a <= 1 and abs(a * 50 - round(a * 50)) < 1e-9 for a in c.values())


def _tampered(tmp_path, edit):
    """Stored results of the current protocol, then changed by ``edit(doc)`` as stale results would be."""
    path = _tiny(tmp_path)
    doc = json.loads(path.read_text())
    edit(doc)
    path.write_text(json.dumps(doc))
    return path


def test_stale_protocol_is_refused(tmp_path):
    path = _tampered(tmp_path, lambda doc: doc["protocol"].update(epochs=doc["protocol"]["epochs"] + 1))
    with pytest.raises(ValueError, match="stale"):
        experiments.load("channel", path)
    assert experiments.load("channel", path, check=False).result.seeds == [0]


def test_changed_parameter_count_is_refused(tmp_path):
    path = _tampered(tmp_path, lambda doc: doc["parameters"].update(ECA=doc["parameters"]["ECA"] + 1))
    with pytest.raises(ValueError, match="'ECA' to have 5,064 parameters"):
        experiments.load("channel", path)


def test_unknown_names_are_clear_errors():
    with pytest.raises(ValueError, match="expected a protocol in"):
        experiments.protocol("spatial")
    with pytest.raises(ValueError, match="expected a variant in"):
        experiments.protocol("hybrid").network("CBAM (r=16)")


def test_run_trains_the_named_variants(monkeypatch):
    p = experiments.protocol("channel")
    small = experiments.Protocol(**{**p.__dict__, "task_kwargs": {"n_train": 64, "n_test": 32, "seed": 0}, "epochs": 1})
    monkeypatch.setitem(experiments.PROTOCOLS, "channel", small)
    result = experiments.run("channel", seeds=(0,), variants=["baseline", "ECA"], progress=False)
    assert list(result.histories) == ["baseline", "ECA"] and result.parameters["ECA"] == result.parameters["baseline"] + 6


_ACC = r"\d\.\d{2,3}"


def _quoted_row(line: str):
    """(variant, five seeds, 'mean ± sd') of a typed table row quoting five stored seeds, else None:
    | variant | ... | a, b, c, d, e | m ± s |, to two or three decimals."""
    cells = [c.strip() for c in line.strip().strip("|").split("|")]
    seeds = [c for c in cells if re.fullmatch(rf"{_ACC}(, {_ACC}){{4}}", c)]
    if line.startswith("|") and seeds and re.fullmatch(rf"{_ACC} ± {_ACC}", cells[-1]):
        return cells[0], seeds[0], cells[-1]
    return None


def _quoted_rows():
    """Typed table rows in the chapters that quote five stored seeds (most chapters print their
    tables from the store instead; a typed one must still be the store's)."""
    chapters = Path(__file__).resolve().parents[1] / "chapters"
    for part in sorted({p.name for p in chapters.iterdir() if p.is_dir()} & set(experiments.PROTOCOLS)):
        for md in sorted((chapters / part).glob("*.md")):
            for line in md.read_text().splitlines():
                if (row := _quoted_row(line)) is not None:
                    yield (part, md.name, *row)


def _within(quoted: str, value: float) -> bool:
    """Whether ``value`` rounds to ``quoted`` at the quoted number of decimals (half a unit of slack)."""
    decimals = len(quoted.split(".")[1])
    return abs(float(quoted) - value) <= 0.51 * 10**-decimals


def test_quoted_rows_are_recognised():
    assert _quoted_row("| SE (r=4) | 580 | 0.918, 0.593, 0.939, 0.938, 0.952 | 0.868 ± 0.154 |") == \
        ("SE (r=4)", "0.918, 0.593, 0.939, 0.938, 0.952", "0.868 ± 0.154")
    assert _quoted_row("| SE | 0.92, 0.59, 0.94, 0.94, 0.95 | 0.87 ± 0.15 |")[2] == "0.87 ± 0.15"
    assert _quoted_row("| SE | 0.92, 0.59 | 0.87 ± 0.15 |") is None and _quoted_row("SE 0.87 ± 0.15") is None
    assert _within("0.868", 0.8682) and not _within("0.868", 0.8692) and _within("0.87", 0.8682)


def test_numbers_quoted_in_the_chapters_are_the_stored_ones():
    """Prose tables typed by hand quote the stored runs; after `make results` they must be rewritten, or this fails."""
    stored = {name: experiments.load(name).result for name in experiments.PROTOCOLS}
    for part, page, variant, seeds, mean_sd in _quoted_rows():
        # a part's chapters may quote any of its protocols ("hybrid" and "hybrid2", "selfattn" and
        # "selfattn_far"): the row must be one of them, to the rounding
        quoted, (mean, sd) = seeds.split(", "), mean_sd.split(" ± ")
        candidates = [stored[name].accuracies(variant) for name in stored
                      if name.startswith(part) and variant in stored[name].histories]
        assert any(all(_within(q, a) for q, a in zip(quoted, accs)) and _within(mean, accs.mean())
                   and _within(sd, accs.std(ddof=1)) for accs in candidates) or not candidates, \
            (page, variant, quoted, mean_sd, [a.round(3) for a in candidates])


def test_stored_networks_round_trip_and_stale_ones_are_refused(tmp_path):
    import torch

    net = experiments.protocol("channel").network("SE (r=4)")()  # random weights stand in for trained ones
    with torch.no_grad():
        for t in net.parameters():
            t.normal_()
    result = Comparison([0], {"SE (r=4)": [History([0.5], [0.5], 1.0)]}, {"SE (r=4)": sum(t.numel() for t in net.parameters())},
                        {"SE (r=4)": [net]})
    path = experiments.save(result, "channel", tmp_path / "channel.json")
    stored = experiments.load_model("channel", "SE (r=4)", path.with_suffix(".models.pt"))
    x = torch.randn(2, 2, 16, 16)
    torch.testing.assert_close(stored(x), net.eval()(x))
    with pytest.raises(ValueError, match="expected a variant"):
        experiments.load_model("channel", "ECA", path.with_suffix(".models.pt"))
    with pytest.raises(ValueError, match="expected stored networks"):
        experiments.load_model("channel", "SE (r=4)", tmp_path / "none.models.pt")
    doc = torch.load(path.with_suffix(".models.pt"), weights_only=True)
    doc["weights"]["SE (r=4)"].popitem()
    torch.save(doc, tmp_path / "stale.models.pt")
    with pytest.raises(ValueError, match="does not fit the current code"):
        experiments.load_model("channel", "SE (r=4)", tmp_path / "stale.models.pt")


def test_only_the_protocols_networks_are_stored(tmp_path, monkeypatch):
    """A protocol that names its ``networks`` stores those seed-0 networks and no other, on save and merge."""
    import dataclasses

    p = experiments.protocol("channel")
    monkeypatch.setitem(experiments.PROTOCOLS, "channel", dataclasses.replace(p, networks=("SE (r=4)",)))
    nets = {v: p.network(v)() for v in p.variants}
    hist = {v: [History([0.7] * p.epochs, [0.5] * p.epochs, 1.0)] for v in p.variants}
    params = {v: sum(t.numel() for t in n.parameters()) for v, n in nets.items()}
    path = experiments.save(Comparison([0], hist, params, {v: [n] for v, n in nets.items()}), "channel", tmp_path / "channel.json")
    assert list(torch.load(path.with_suffix(".models.pt"), weights_only=True)["weights"]) == ["SE (r=4)"]
    again = Comparison([0], {"ECA": hist["ECA"]}, {"ECA": params["ECA"]}, {"ECA": [nets["ECA"]]})
    experiments.merge(again, "channel", path)
    assert list(torch.load(path.with_suffix(".models.pt"), weights_only=True)["weights"]) == ["SE (r=4)"]
    assert experiments.protocol("where").networks == ("MHSA (relative)",)
    assert all(set(q.networks) <= set(q.variants) for q in experiments.PROTOCOLS.values() if q.networks)


@pytest.mark.parametrize("name", [n for n in sorted(experiments.PROTOCOLS) if experiments.models_path(n).exists()])
def test_stored_networks_are_the_ones_that_made_the_stored_seed_0_numbers(name):
    """Every stored seed-0 network fits the current code and, evaluated now, gives its stored final
    accuracy (within two test images of 1,000: another thread count may round a logit otherwise)."""
    from attncourse.train import evaluate

    stored = experiments.load(name).result
    data = experiments.protocol(name).data()
    variants = torch.load(experiments.models_path(name), map_location="cpu", weights_only=True)["weights"]
    assert set(variants) <= set(stored.histories) and variants
    for variant in variants:
        acc = evaluate(experiments.load_model(name, variant), data.x_test, data.y_test)
        assert abs(acc - stored.accuracies(variant)[0]) <= 2 / len(data.y_test), (name, variant, acc)


# One variant of each protocol; Non-local is the one whose seed 0 ended at 0.725, 0.516 or 0.501
# with 2, 1 or 4 threads before training pinned the thread count.
REPEATED = {"channel": "SE (r=4)", "hybrid": "CBAM (r=4)", "hybrid2": "EMA (G=8)", "selfattn": "Non-local",
            "selfattn_far": "GC (r=4)", "linear": "FLatten", "where": "SE (r=4)",
            # Part V: the baselines (the quickest to train); local_where's is the run copied from
            # "where", so this also checks that the copy is what this protocol trains
            "local": "baseline", "local_where": "baseline",
            # Part VI: a TinyViT, the part's new network (the ViT on digits takes about 5 s)
            "blocks": "ViT", "blocks_where": "ViT", "blocks_phase": "ViT (no positions)",
            # Part VII: the ResNet-20 (about 8 s an epoch)
            "networks": "ResNet-20"}


def test_every_protocol_has_a_repeated_variant():
    assert set(REPEATED) == set(experiments.PROTOCOLS)
    assert all(v in experiments.protocol(n).variants for n, v in REPEATED.items())


# Every protocol's repeated run once, under a caller's 1 or 4 threads in turn, and the two quickest
# protocols under both: what the thread pinning protects is fit's, the same for every protocol, and
# each run costs up to half a minute of the suite's 15.
_QUICK = ("channel", "local")
_REPEATS = sorted({(n, (1, 4)[i % 2]) for i, n in enumerate(sorted(REPEATED))} | {(n, t) for n in _QUICK for t in (1, 4)})


def test_every_protocol_is_repeated_and_both_thread_counts_are_tried():
    assert {n for n, _ in _REPEATS} == set(REPEATED)
    assert {t for _, t in _REPEATS} == {1, 4}
    assert all({(n, 1), (n, 4)} <= set(_REPEATS) for n in _QUICK)


@pytest.mark.parametrize("name, caller_threads", _REPEATS)
def test_seed_zero_repeats_its_stored_run_whatever_the_callers_threads(name, caller_threads):
    """A reader's machine with 1 or 4 cores gets the stored numbers: fit pins the thread count."""
    variant, stored = REPEATED[name], experiments.load(name)
    if not stored.repeats_here(variant):
        m = stored.machine_of(variant)
        pytest.skip(f"{name}/{variant} was stored on a machine that rounds differently (torch {m.get('torch')}, "
                    f"numerics {m.get('numerics')}; here torch {torch.__version__}, {numerics_fingerprint()}): "
                    f"`make results` re-runs it here")
    p = experiments.protocol(name)
    # the whole run for the quickest protocol, the first two epochs of the schedule for the others
    # (one for the ResNet-20): they repeat the stored run's first epochs exactly (same start, batches, rounding)
    k = None if name == "channel" else 1 if name == "networks" else 2
    with pinned_threads(caller_threads):                              # the reader's setting
        _, h = fit(p.network(variant), p.data(), seed=0, progress=False, stop_after=k, **p.fit_kwargs())
        assert torch.get_num_threads() == caller_threads            # the caller's setting is restored
    run = stored.result.histories[variant][stored.result.seeds.index(0)]
    assert h.train_loss == run.train_loss[:k] and h.test_acc == run.test_acc[:k]
    assert len(h.train_loss) == (k or p.epochs)


def test_stop_after_repeats_the_first_epochs_of_the_full_schedule():
    from attncourse.data import digits
    from attncourse.nets import TinyNet

    d = digits()
    small = type(d)(d.x_train[:128], d.y_train[:128], d.x_test[:64], d.y_test[:64], 10)
    make = lambda: TinyNet(1, 10, widths=(4,))
    _, full = fit(make, small, seed=1, epochs=3, progress=False)
    _, first = fit(make, small, seed=1, epochs=3, stop_after=2, progress=False)
    _, short = fit(make, small, seed=1, epochs=2, progress=False)
    assert first.train_loss == full.train_loss[:2] and first.test_acc == full.test_acc[:2]
    assert short.train_loss[1] != full.train_loss[1]  # a 2-epoch schedule is another run
    for bad in (0, 4, 1.5, True):
        with pytest.raises(ValueError, match="stop_after"):
            fit(make, small, epochs=3, stop_after=bad, progress=False)


def test_pinned_threads_restores_and_refuses_bad_counts():
    before = torch.get_num_threads()
    with pinned_threads(3):
        assert torch.get_num_threads() == 3
    assert torch.get_num_threads() == before
    with pinned_threads(None):
        assert torch.get_num_threads() == before
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="pinned_threads expected a positive int"):
            with pinned_threads(bad):
                pass


def test_the_fingerprint_sees_the_thread_count():
    assert numerics_fingerprint() == numerics_fingerprint()
    assert numerics_fingerprint(1) != numerics_fingerprint(2)   # what pinning protects against


def test_merge_adds_a_variant_and_keeps_the_others(tmp_path, monkeypatch):
    path = _tiny(tmp_path)
    p = experiments.protocol("channel")
    grown = experiments.Protocol(**{**p.__dict__, "variants": {**p.variants, "SE (r=2)": ("se", {"reduction": 2})}})
    monkeypatch.setitem(experiments.PROTOCOLS, "channel", grown)
    with pytest.raises(ValueError, match="stale"):
        experiments.load("channel", path)                     # the new variant has no runs yet
    new = Comparison([0], {"SE (r=2)": [History([0.1] * p.epochs, [0.9] * p.epochs, 2.0)]},
                     {"SE (r=2)": sum(q.numel() for q in grown.network("SE (r=2)")().parameters())})
    experiments.merge(new, "channel", path)
    stored = experiments.load("channel", path)
    assert list(stored.result.histories) == list(grown.variants)
    assert stored.result.mean("SE (r=2)") == 0.9 and stored.result.mean("ECA") == 0.5
    assert stored.machine_of("SE (r=2)")["variants"] == ["SE (r=2)"] and stored.machine_of("ECA") is stored.machine


def test_merge_refuses_what_would_mix_protocols(tmp_path, monkeypatch):
    path = _tiny(tmp_path)
    p = experiments.protocol("channel")
    one = Comparison([0], {"ECA": [History([0.1] * p.epochs, [0.9] * p.epochs, 2.0)]}, {"ECA": 0})
    with pytest.raises(ValueError, match="expected the stored seeds"):
        experiments.merge(Comparison([1], one.histories, one.parameters), "channel", path)
    changed = experiments.Protocol(**{**p.__dict__, "variants": {**p.variants, "SE (r=4)": ("se", {"reduction": 8})}})
    monkeypatch.setitem(experiments.PROTOCOLS, "channel", changed)
    with pytest.raises(ValueError, match="'SE \\(r=4\\)' is not the current protocol's"):
        experiments.merge(one, "channel", path)
    monkeypatch.setitem(experiments.PROTOCOLS, "channel", experiments.Protocol(**{**p.__dict__, "epochs": 3}))
    with pytest.raises(ValueError, match="beyond its variants"):
        experiments.merge(one, "channel", path)
