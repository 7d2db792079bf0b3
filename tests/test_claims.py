"""attncourse.claims: one paper claim per registered module, each number traceable to papers.md."""

from __future__ import annotations

import dataclasses
import doctest
import inspect
import re
from pathlib import Path

import pytest

import attncourse
from attncourse import claims as claims_module
from attncourse.claims import CLAIMS, Claim, claim

PAPERS = Path(__file__).resolve().parents[2] / "shared" / "papers.md"


def _numbers(c: Claim) -> list[float]:
    return [v for v in (c.baseline, c.with_module) if v is not None]


# ----- the table itself (no papers.md needed) -----


def test_one_claim_per_registered_module_and_no_other():
    names = attncourse.available()
    assert sorted(CLAIMS) == sorted(names), (
        f"missing: {sorted(set(names) - set(CLAIMS))}, extra: {sorted(set(CLAIMS) - set(names))}"
    )
    assert len(CLAIMS) == len(names)
    for name, c in CLAIMS.items():
        assert isinstance(c, Claim)
        assert c.module == name, f"CLAIMS[{name!r}] holds the claim of {c.module!r}"


def test_claim_returns_the_table_entry():
    for name in attncourse.available():
        assert claim(name) is CLAIMS[name]


def test_unknown_name_raises_naming_the_known_ones():
    with pytest.raises(ValueError) as info:
        claim("nope")
    message = str(info.value)
    assert "'nope'" in message
    for name in attncourse.available():
        assert name in message, f"{name} missing from {message!r}"


def test_claims_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        CLAIMS["se"].baseline = 0.0  # type: ignore[misc]


def test_gain_is_with_module_minus_baseline():
    paired = 0
    for name, c in CLAIMS.items():
        if c.baseline is None or c.with_module is None:
            assert c.gain is None, name
        else:
            assert c.gain == c.with_module - c.baseline, name
            paired += 1
    assert paired >= 15  # most modules have a pair; a change that drops them all must show here
    made = Claim("x", "p", "m (%)", "b", "d", 70.0, 72.5, True, "s", None)
    assert made.gain == 2.5
    assert dataclasses.replace(made, baseline=None).gain is None
    assert dataclasses.replace(made, with_module=None).gain is None


def test_a_baseline_always_comes_with_its_pair_and_a_gain_without_one_is_explained():
    for name, c in CLAIMS.items():
        if c.baseline is not None:
            assert c.with_module is not None, f"{name}: a baseline without the with-module figure"
        if c.gain is None:
            assert c.note, f"{name}: no gain and no note saying why"
        if c.with_module is None:
            assert not c.checked, f"{name}: checked=True but there is no number"


def test_every_pair_the_papers_report_is_a_gain():
    for name, c in CLAIMS.items():
        if c.gain is not None:
            assert c.gain > 0, f"{name}: {c.baseline} -> {c.with_module}"


def test_metric_units_are_sensible():
    for name, c in CLAIMS.items():
        assert c.paper and c.metric and c.backbone and c.dataset and c.source, name
        for v in _numbers(c):
            assert isinstance(v, float), f"{name}: {v!r} is not a float"
            assert v > 0, f"{name}: {v}"
            if "speed-up" not in c.metric:  # accuracies, mIoU, AP, BLEU, PSNR in dB
                assert v <= 100, f"{name}: {v} for {c.metric}"
        if "(%)" in c.metric and c.gain is not None:
            assert c.gain < 10, f"{name}: a gain of {c.gain} points is not a plausible claim"


def test_errors_are_recorded_as_accuracies():
    assert claims_module._from_error(24.80) == 75.2
    assert claims_module._from_error(20.79) == 79.21
    se = claim("se")
    assert (se.baseline, se.with_module) == (75.2, 76.71)  # the paper's 24.80 -> 23.29 % error
    assert "100 - error" in se.note
    for name in ("se", "sk", "cbam", "bam"):
        assert "100 - error" in claim(name).note, name


def test_the_choices_the_brief_asked_for():
    assert claim("se").checked is False and "22.37" in claim("se").note  # re-implementation pair, ckpt in note
    assert claim("nonlocal").metric.startswith("Kinetics") and claim("gc").metric == "COCO box AP"
    assert "PSNR" in claim("hab").metric and claim("hab").gain == claim("ocab").gain
    assert claim("danet").metric.startswith("Cityscapes")
    for name in ("vit", "muse", "mobilevit"):
        assert claim(name).gain is None and claim(name).with_module is not None, name


def test_docstring_example_runs_and_no_torch_is_imported():
    result = doctest.testmod(claims_module, verbose=False)
    assert result.attempted >= 5 and result.failed == 0
    assert not re.search(r"^\s*(import|from)\s+torch", inspect.getsource(claims_module), re.M)


# ----- every number traced to papers.md (skipped where it is not present) -----


def _papers_text() -> str:
    if not PAPERS.exists():
        pytest.skip(f"{PAPERS} is not here (it lives outside the repository, in /work/shared)")
    return PAPERS.read_text(encoding="utf-8")


def _sections(text: str) -> dict[int, str]:
    """papers.md's numbered sections ('## 12. CCNet ...' up to the next '## ' heading)."""
    heads = list(re.finditer(r"^## (\d+)\. ", text, re.M))
    ends = [m.start() for m in re.finditer(r"^## ", text, re.M)] + [len(text)]
    out = {}
    for h in heads:
        end = min(e for e in ends if e > h.start())
        out[int(h.group(1))] = text[h.start():end]
    return out


def _summary_row(text: str, section: int) -> str:
    rows = re.findall(rf"^\| {section} \|.*$", text, re.M)
    assert len(rows) == 1, f"papers.md: {len(rows)} summary-table rows for section {section}"
    return rows[0]


def _pattern(v: float) -> re.Pattern:
    """v as papers.md writes it: 75.2 matches '75.20', not '175.2' or '75.21'."""
    s = f"{v:.3f}".rstrip("0").rstrip(".")
    tail = "0*" if "." in s else r"(?:\.0*)?"
    return re.compile(rf"(?<![\d.]){re.escape(s)}{tail}(?!\d)")


_TAG = re.compile(r"\[V[^\]]*\]|UNVERIFIED")


def _tag(lines: list[str], i: int, pos: int) -> str | None:
    """The confidence tag that covers the text at lines[i][pos]: the first tag after it on its line,
    else the last one before it on its line, else the last tag of the nearest line above with one
    (a bullet's heading, '- **Headline** [V-README]:', covers the lines under it)."""
    after = _TAG.search(lines[i], pos)
    if after:
        return after.group()
    for j in range(i, -1, -1):
        tags = _TAG.findall(lines[j][:pos] if j == i else lines[j])
        if tags:
            return tags[-1]
    return None


def _tags_of(v: float, lines: list[str]) -> list[str | None]:
    return [_tag(lines, i, m.start()) for i, line in enumerate(lines) for m in _pattern(v).finditer(line)]


def _occurrences(c: Claim, v: float, lines: list[str]) -> list[str | None]:
    """The tags of every place papers.md writes v (or, for an accuracy recorded from an error,
    100 - v): '[V-README]', 'UNVERIFIED', ... or None where no tag covers it."""
    found = _tags_of(v, lines)
    if not found:
        found = _tags_of(round(100 - v, 3), lines)
        if found:
            assert "error" in c.note, f"{c.module}: {v} is read as the error {100 - v:.3f}; the note must say so"
    return found


def test_the_number_pattern_and_its_tag():
    lines = ["- **Headline** [V-README]:", "  - SwinIR: 27.45.", "  - base 24.80 -> 23.29 err **UNVERIFIED**."]
    assert _tags_of(27.45, lines) == ["[V-README]"]
    assert _tags_of(23.29, lines) == ["UNVERIFIED"]
    assert _tags_of(71.7, ["README: 71.7 % [V-README]. The others are **UNVERIFIED**."]) == ["[V-README]"]
    assert _pattern(75.2).search("ResNet-50 **75.20 → 77.48**")
    assert not _pattern(75.2).search("175.2 and 75.21")
    assert _pattern(4000.0).search("up to 4000× faster")
    assert not _pattern(38.5).search("38.55")


def test_papers_md_sections_hold_each_claims_paper():
    text = _papers_text()
    sections = _sections(text)
    assert set(sections) == set(range(1, 36))
    for name, c in CLAIMS.items():
        if c.section is None:
            assert "no section" in c.note, f"{name}: no section of papers.md and no note saying so"
            continue
        body = sections[c.section]
        author = c.paper.split()[0]
        paper_line = re.search(r"\*\*Papers?\.\*\*", body)
        assert paper_line, f"section {c.section} has no **Paper.** entry"
        first = re.search(r"([A-Z][\w-]+),", body[paper_line.end():]).group(1)
        assert first == author, f"{name}: the first author in section {c.section} is {first}, not {author}"
        year = re.search(r"\d{4}", c.paper).group()
        assert year in body + _summary_row(text, c.section), f"{name}: {year} not in section {c.section}"


def test_checked_numbers_appear_in_papers_md_not_marked_unverified():
    text = _papers_text()
    sections = _sections(text)
    n = 0
    for name, c in CLAIMS.items():
        if not c.checked:
            continue
        lines = (sections[c.section] + "\n" + _summary_row(text, c.section)).splitlines()
        for v in _numbers(c):
            found = _occurrences(c, v, lines)
            assert found, f"{name}: {v} is not in papers.md section {c.section} or its summary row"
            assert any(t and t.startswith("[V") for t in found), (
                f"{name}: no place in papers.md tags {v} as read ([V...]), yet checked=True: {found}"
            )
            n += 1
    assert n >= 20


def test_unchecked_claims_are_marked_unverified_in_papers_md():
    text = _papers_text()
    sections = _sections(text)
    n = 0
    for name, c in CLAIMS.items():
        if c.checked or c.section is None:
            continue
        body = sections[c.section]
        assert "UNVERIFIED" in body, f"{name}: checked=False but section {c.section} marks nothing UNVERIFIED"
        lines = (body + "\n" + _summary_row(text, c.section)).splitlines()
        near = []
        for v in _numbers(c):
            found = _occurrences(c, v, lines)
            assert found, f"{name}: {v} is not in papers.md section {c.section} or its summary row"
            near += [t for t in found if t == "UNVERIFIED"]
        if _numbers(c):
            assert near, f"{name}: checked=False, yet papers.md marks none of {_numbers(c)} UNVERIFIED"
        n += 1
    assert n >= 8
