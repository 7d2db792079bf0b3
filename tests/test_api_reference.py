"""The API reference (chapters/api/, issue 22): a page per part whose autodoc entries cover every
registered class and every public name, each class linked to its chapter and each chapter's
"The module" section linked back to its class. Read from the pages' sources, without building
the book; the built pages are checked too where `make book` has left them in build/book.
"""

from __future__ import annotations

import importlib
import inspect
import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml

import attncourse

from small_book import build_small_book

ROOT = Path(__file__).resolve().parents[1]
API = ROOT / "chapters" / "api"
PARTS = ["channel", "hybrid", "selfattn", "linear", "local", "blocks"]
SUPPORT = ["nets", "data", "train", "experiments", "cost", "plot"]
PAGES = ["registry", *PARTS, "guide", "support"]
HTML = ROOT / "build" / "book" / "_build" / "html" / "api"

_DIRECTIVE = re.compile(r"^\.\. (currentmodule|automodule|autoclass|autofunction|autodata):: (\S+)\s*$")


def documented(page: str) -> dict[str, str]:
    """Every object an autodoc directive of ``chapters/api/<page>.md`` documents, by full dotted
    name, with the text of its entry (the directive and its indented content)."""
    entries: dict[str, str] = {}
    module, current = "", None
    for line in (API / f"{page}.md").read_text().splitlines():
        m = _DIRECTIVE.match(line)
        if m:
            kind, name = m.groups()
            current = None
            if kind == "currentmodule":
                module = name
            elif kind == "automodule":
                module = name
                entries[name] = ""
            else:
                full = name if name.startswith("attncourse.") else f"{module}.{name}"
                entries[full] = line
                current = full
        elif current and (line.startswith("   ") or not line.strip()):
            entries[current] += "\n" + line
        else:
            current = None
    return entries


def _chapter(cls) -> tuple[str, str]:
    """(part, chapter stem) of a registered class: its module ``attncourse.<part>.<stem>``."""
    _, part, stem = cls.__module__.split(".")
    return part, stem.rstrip("_")


def _public(module_name: str) -> list[str]:
    """The classes and functions a module exports (``__all__``), as full names under that module."""
    module = importlib.import_module(module_name)
    return [f"{module_name}.{n}" for n in module.__all__
            if inspect.isclass(getattr(module, n)) or inspect.isfunction(getattr(module, n))]


def test_every_registered_class_is_on_its_parts_page():
    """The count the issue asks for: the classes documented on the part pages are exactly the
    registered ones (plus building blocks), one entry per registered name."""
    found = {}
    for name in attncourse.available():
        cls = attncourse.get(name)
        part, _ = _chapter(cls)
        full = f"attncourse.{part}.{cls.__name__}"
        entry = documented(part).get(full)
        assert entry is not None and entry.startswith(".. autoclass::"), f"{name!r} ({full}) has no autoclass on chapters/api/{part}.md"
        assert f'Registered as ``"{name}"``' in entry, f"{full}'s entry does not say it is registered as {name!r}"
        found[name] = full
    assert len(found) == len(attncourse.available()) == len(set(found.values()))


@pytest.mark.parametrize("part", PARTS)
def test_every_public_name_of_a_part_is_documented(part):
    missing = set(_public(f"attncourse.{part}")) - set(documented(part))
    assert not missing, f"chapters/api/{part}.md documents none of {sorted(missing)}"


@pytest.mark.parametrize("module", SUPPORT)
def test_every_public_name_of_a_support_module_is_documented(module):
    missing = set(_public(f"attncourse.{module}")) - set(documented("support"))
    assert not missing, f"chapters/api/support.md documents none of {sorted(missing)}"


@pytest.mark.parametrize("module", ["guide", "claims"])
def test_the_guide_page_documents_the_guide_and_the_claims(module):
    missing = set(_public(f"attncourse.{module}")) - set(documented("guide"))
    assert not missing, f"chapters/api/guide.md documents none of {sorted(missing)}"
    assert f"attncourse.{module}" in documented("guide")  # the module's own docstring, by automodule


def test_the_registry_page_documents_create_available_get_register_and_insert():
    names = {f"attncourse.{n}" for n in ("create", "available", "get", "register")}
    if hasattr(attncourse, "insert"):  # issue 22, section 1: attncourse.insert is attncourse.insert.insert
        assert attncourse.insert is importlib.import_module("attncourse.insert").insert
        names |= {"attncourse.insert", *_public("attncourse.insert")}  # the module's page entry, its names
    missing = names - set(documented("registry"))
    assert not missing, f"chapters/api/registry.md documents none of {sorted(missing)}"


def test_every_entry_links_to_a_chapter_that_exists():
    labels = {m for md in (ROOT / "chapters").rglob("*.md") for m in re.findall(r"^\((chapter-[\w-]+)\)=$", md.read_text(), re.M)}
    for part in PARTS:
        for full, entry in documented(part).items():
            if not entry.startswith((".. autoclass::", ".. autofunction::")):
                continue
            links = re.findall(r"\.\. seealso:: .*:ref:`(chapter-[\w-]+)`", entry)
            assert links, f"{full} on chapters/api/{part}.md links to no chapter"
            assert set(links) <= labels, f"{full} links to {links}, not a chapter label"
    for name in attncourse.available():
        cls = attncourse.get(name)
        part, stem = _chapter(cls)
        entry = documented(part).get(f"attncourse.{part}.{cls.__name__}", "")
        assert f":ref:`chapter-{stem}`" in entry, f"{cls.__name__} must link to its chapter chapter-{stem}"


def test_every_chapters_module_section_links_to_its_classes():
    for name in attncourse.available():
        cls = attncourse.get(name)
        part, stem = _chapter(cls)
        text = (ROOT / "chapters" / part / f"{stem}.md").read_text()
        section = text.split("\n## The module\n", 1)
        assert len(section) == 2, f"chapters/{part}/{stem}.md has no '## The module' section"
        section = section[1].split("\n## ", 1)[0]
        ref = f"{{py:class}}`~attncourse.{part}.{cls.__name__}`"
        assert ref in section, f"chapters/{part}/{stem}.md: 'The module' must link to {ref}"


def test_the_reference_is_the_books_last_part():
    toc = yaml.safe_load((ROOT / "toc.yml").read_text())
    last = toc["parts"][-1]
    assert last["caption"] == "API reference"
    assert [c["file"] for c in last["chapters"]] == [f"api/{p}" for p in PAGES]
    assert sorted(p.stem for p in API.glob("*.md")) == sorted(PAGES)


def test_the_book_renders_docstrings_without_writing_into_chapters():
    """autodoc and napoleon render the docstrings (their warnings fail the -W build); autosummary
    makes summary tables only, never stub files in chapters/."""
    sphinx = yaml.safe_load((ROOT / "book.yml").read_text())["sphinx"]
    assert {"sphinx.ext.autodoc", "sphinx.ext.autosummary", "sphinx.ext.napoleon"} <= set(sphinx["extra_extensions"])
    assert sphinx["config"]["autosummary_generate"] is False
    assert "intersphinx" not in " ".join(sphinx["extra_extensions"]), "intersphinx fetches inventories from the network"
    for page in PAGES:
        assert ":toctree:" not in (API / f"{page}.md").read_text()


def _build_one_autodoc_page(tmp_path: Path, docstring: str) -> subprocess.CompletedProcess:
    """The book's configuration (book.yml, -W -n) on one page that documents ``brokendoc.f``."""
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "brokendoc.py").write_text(f'def f(x):\n    """{docstring}"""\n')
    return build_small_book(
        tmp_path, {"index": "# One page\n\n```{eval-rst}\n.. autofunction:: brokendoc.f\n```\n"},
        env={**os.environ, "PYTHONPATH": str(tmp_path / "pkg")}, timeout=300,
    )


@pytest.mark.parametrize("docstring, renders", [
    ("Weights decay as γ^(|Δx| + |Δy|).\n\n    Args:\n        x: the input.\n    ", False),  # |Δx| is an RST substitution
    ("Weights decay as ``γ^(|Δx| + |Δy|)``.\n\n    Args:\n        x: the input.\n    ", True),
])
def test_a_docstring_that_does_not_render_fails_the_build(tmp_path, docstring, renders):
    result = _build_one_autodoc_page(tmp_path, docstring)
    log = result.stdout[-3000:] + result.stderr[-3000:]
    assert (result.returncode == 0) == renders, log
    if not renders:
        assert "docstring of brokendoc.f" in log and "Δx" in log


@pytest.mark.skipif(not HTML.is_dir(), reason="the book is not built (make book): the HTML pages were not checked")
@pytest.mark.parametrize("part", PARTS)
def test_the_built_page_of_each_part_has_every_registered_class(part):
    html = (HTML / f"{part}.html").read_text()
    for name in attncourse.available():
        cls = attncourse.get(name)
        if _chapter(cls)[0] == part:
            assert f'id="attncourse.{part}.{cls.__name__}"' in html, f"build/book: api/{part}.html has no entry for {cls.__name__}"
