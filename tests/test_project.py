"""The project keeps its promises: one environment, every chapter in the book, CI = README."""

from __future__ import annotations

import re
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml

import attncourse

ROOT = Path(__file__).resolve().parents[1]


def _name(req: str) -> str:
    return re.split(r"[<>=!~ \[;]", req.strip(), maxsplit=1)[0].lower().replace("_", "-")


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_environment_yml_matches_pyproject():
    project = _pyproject()["project"]
    reqs = list(project["dependencies"])
    for extra in ("course", "test", "book"):
        reqs += project["optional-dependencies"][extra]
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    env_reqs = {_name(r): r.replace(" ", "") for r in pip if not r.startswith("-")}
    for r in reqs:
        name = _name(r)
        assert name in env_reqs, f"{name} is in pyproject.toml but not in environment.yml"
        if name != "torch":
            assert env_reqs[name] == r.replace(" ", ""), f"{name}: pyproject says {r!r}, environment.yml {env_reqs[name]!r}"
    assert set(env_reqs) == {_name(r) for r in reqs}, "environment.yml lists packages pyproject.toml does not"


def test_torch_is_pinned_to_the_cpu_build_everywhere():
    assert "torch==2.13.0" in (ROOT / "constraints.txt").read_text()
    assert "torch==2.13.0" in (ROOT / "environment.yml").read_text()
    assert "-c constraints.txt" in (ROOT / "Makefile").read_text()


def test_ci_runs_the_readme_test_command():
    ci = [l for l in (ROOT / ".ci/run").read_text().splitlines() if l.strip() and not l.startswith("#")]
    assert ci[-1].strip() == "make test"
    readme = (ROOT / "README.md").read_text()
    quick = readme.split("## Quick start")[1].split("```bash")[1].split("```")[0]
    commands = [l.split("#")[0].strip() for l in quick.strip().splitlines()]
    assert commands == ["make book", "make test"]


def _toc_files(node) -> list[str]:
    out = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("file", "root"):
                out.append(value)
            else:
                out += _toc_files(value)
    elif isinstance(node, list):
        for item in node:
            out += _toc_files(item)
    return out


def test_every_chapter_is_in_the_toc_and_every_toc_entry_exists():
    toc = set(_toc_files(yaml.safe_load((ROOT / "toc.yml").read_text())))
    pages = {str(p.relative_to(ROOT / "chapters").with_suffix("")) for p in (ROOT / "chapters").rglob("*.md")}
    assert toc == pages, f"in toc only: {toc - pages}; chapters not in toc: {pages - toc}"


@pytest.mark.parametrize("name", attncourse.available())
def test_every_mechanism_has_its_chapter_and_tests(name):
    cls = attncourse.get(name)
    part, stem = cls.__module__.split(".")[1:3]
    stem = stem.rstrip("_")
    assert (ROOT / "chapters" / part / f"{stem}.md").exists(), f"{cls.__name__} has no chapter chapters/{part}/{stem}.md"
    assert (ROOT / "tests" / f"test_{stem}.py").exists(), f"{cls.__name__} has no tests/test_{stem}.py"
    doc = cls.__doc__ or ""
    assert "arXiv" in doc or "PMLR" in doc or "doi" in doc.lower(), f"{cls.__name__}'s docstring must cite its paper"


def test_every_chapter_checks_itself_and_has_exercises():
    for md in (ROOT / "chapters").rglob("*.md"):
        text = md.read_text()
        if "{code-cell}" not in text:
            continue
        assert re.search(r"assert|assert_close", text), f"{md} has code but no assert"
        assert re.search(r"^#+ .*Exercise", text, re.M), f"{md} has no Exercises section"
        assert ".assert_ok()" in text, f"{md}: solutions must assert their checker"


def test_no_placeholders_left_in_chapters():
    """Drafts mark unwritten prose with a token like SOME_PROSE or TODO; none may ship."""
    for md in (ROOT / "chapters").rglob("*.md"):
        for n, line in enumerate(md.read_text().splitlines(), start=1):
            if re.fullmatch(r"\.\. autodata:: [\w.]+", line):  # the API reference documents a constant (EA_EPS)
                continue
            assert not re.search(r"\b[A-Z][A-Z0-9]+(?:_[A-Z0-9]+)+\b", line), f"{md.name}:{n}: placeholder in {line!r}"
            assert not re.search(r"\b(?:TODO|FIXME|XXX)\b", line), f"{md.name}:{n}: {line.strip()!r}"


def test_chapters_cite_with_footnotes():
    """A key cited on several pages breaks per-page {bibliography} blocks (duplicate citation
    warnings fail the -W build); {footcite} + {footbibliography} give each page its own list."""
    for md in (ROOT / "chapters").rglob("*.md"):
        text = md.read_text()
        assert "{bibliography}" not in text and not re.search(r"\{cite(?::\w+)?\}", text), md.name
        if "{footcite" in text:
            assert "{footbibliography}" in text, f"{md.name} cites but has no footbibliography"


def test_every_cited_key_is_in_the_bibliography():
    bib = (ROOT / "chapters/references.bib").read_text()
    keys = set(re.findall(r"@\w+\{([^,]+),", bib))
    for md in (ROOT / "chapters").rglob("*.md"):
        for group in re.findall(r"\{(?:foot)?cite(?::\w+)?\}`([^`]+)`", md.read_text()):
            for key in group.split(","):
                assert key.strip() in keys, f"{md.name} cites {key.strip()!r}, not in references.bib"


def test_no_notebooks_or_outputs_are_tracked():
    try:
        tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    assert not [f for f in tracked.splitlines() if f.endswith(".ipynb")]


def _control_characters(text: str) -> list[tuple[int, int, str]]:
    """(line, column, character) of every control character but the newline: a tab or a stray
    escape in Markdown breaks the math it lands in (``$N \\times N$`` with ``\\t`` read as a tab
    renders as broken math) and shows nowhere in an editor."""
    found = []
    for n, line in enumerate(text.split("\n"), start=1):
        for col, ch in enumerate(line, start=1):
            if (ord(ch) < 32 or 127 <= ord(ch) < 160) and ch != "\n":
                found.append((n, col, repr(ch)))
    return found


def test_control_characters_are_found():
    assert _control_characters("a $N \times N$\nb") == [(1, 6, repr("\t"))]  # "\t" of "\times" read as a tab
    assert _control_characters("ok\r\nx\x1b") == [(1, 3, repr("\r")), (2, 2, repr("\x1b"))]
    assert _control_characters("plain text, $N \\times N$, é ∑\n") == []


@pytest.mark.parametrize("pattern", ["chapters/**/*.md", "chapters/*.bib", "attncourse/**/*.py", "tests/*.py",
                                     "tools/**/*.py", "*.md", "*.yml", "*.toml"])
def test_no_control_characters_in_sources(pattern):
    """Chapter sources (and the code and configuration beside them) hold no control character but
    the newline: no tabs, carriage returns or escapes."""
    files = sorted(ROOT.glob(pattern))
    assert files, f"no files match {pattern}"
    bad = {str(f.relative_to(ROOT)): hits[:3] for f in files if (hits := _control_characters(f.read_text(encoding="utf-8")))}
    assert not bad, f"control characters (line, column, character): {bad}"
