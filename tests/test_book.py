"""The book keeps its promises to readers: solutions stay folded (input and output), the
executing kernel is one without the known fault, equations render with the network off, and a
push publishes it.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import jupytext
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import check_book  # noqa: E402
from small_book import build_small_book  # noqa: E402

CHAPTERS = sorted(p for p in (ROOT / "chapters").rglob("*.md") if "{code-cell}" in p.read_text())
SOLUTION = re.compile(r"^\s*(?:def\s+|class\s+)?solution_\w*", re.M)


def _solution_cells(md: Path):
    for cell in jupytext.read(md).cells:
        if cell.cell_type == "code" and SOLUTION.search(cell.source):
            yield cell


@pytest.mark.parametrize("md", CHAPTERS, ids=lambda p: str(p.relative_to(ROOT / "chapters")))
def test_solutions_are_folded_whole(md):
    """A folded input whose output stays visible ("✓ 8563 is right") gives the answer away."""
    cells = list(_solution_cells(md))
    assert cells, f"{md.name} has no solution cell"
    for cell in cells:
        first = cell.source.strip().splitlines()[0]
        assert "hide-cell" in cell.metadata.get("tags", []), f"{md.name}: {first!r} must be tagged hide-cell (input and output folded in the book)"
        folded = cell.metadata.get("jupyter", {})
        assert folded.get("source_hidden") and folded.get("outputs_hidden"), f"{md.name}: {first!r} must fold source and outputs in JupyterLab"


def test_no_solution_is_folded_only_halfway():
    for md in CHAPTERS:
        assert "hide-input" not in md.read_text() or "solution_" not in md.read_text().split("hide-input")[1][:400], md.name


def test_the_kernel_is_not_ipykernel_7():
    """ipykernel 7 sends shell replies from a second thread over inproc socket pairs; under load
    a reply failed with ZMQError 'Socket operation on non-socket' and the book build hung."""
    major = int(importlib.metadata.version("ipykernel").split(".")[0])
    assert major == 6, f"ipykernel {importlib.metadata.version('ipykernel')} is installed; the project pins <7"
    course = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["course"]
    assert any(r.replace(" ", "").startswith("ipykernel") and "<7" in r for r in course)


def test_publish_workflow_runs_the_readme_book_command():
    wf = yaml.safe_load((ROOT / ".github/workflows/book.yml").read_text())
    steps = [s for job in wf["jobs"].values() for s in job.get("steps", [])]
    runs = [line.strip() for s in steps for line in s.get("run", "").splitlines()]
    assert "make book" in runs, "the workflow must build the book with the README's command"
    uploads = [s for s in steps if s.get("uses", "").startswith("actions/upload-pages-artifact")]
    assert uploads and uploads[0]["with"]["path"] == "build/book/_build/html"
    assert any(s.get("uses", "").startswith("actions/deploy-pages") for s in steps)
    # torch must come from the CPU index (the default index's Linux wheel pulls CUDA).
    assert any("torch==2.13.0" in line and "whl/cpu" in line for line in runs)


def test_check_book_finds_external_scripts(tmp_path):
    (tmp_path / "_static" / "mathjax").mkdir(parents=True)
    (tmp_path / "_static" / "mathjax" / "tex-chtml.js").write_text("")
    (tmp_path / "ok.html").write_text('<script src="_static/mathjax/tex-chtml.js"></script><link rel="stylesheet" href="_static/a.css">')
    assert check_book.external_resources(tmp_path) == []
    assert check_book.main([str(tmp_path)]) == 0
    (tmp_path / "bad.html").write_text(
        '<script defer src="https://cdn.jsdelivr.net/npm/mathjax@3/es5/tex-chtml.js"></script>'
        '<link rel="stylesheet" href="//fonts.example.org/a.css"><a href="https://arxiv.org">paper</a>'
    )
    found = check_book.external_resources(tmp_path)
    assert [ref for _, ref in found] == ["https://cdn.jsdelivr.net/npm/mathjax@3/es5/tex-chtml.js", "//fonts.example.org/a.css"]
    assert check_book.main([str(tmp_path)]) == 1


def test_make_book_checks_the_built_pages():
    book = (ROOT / "Makefile").read_text().split("\nbook:")[1].split("\n\n")[0]
    assert "tools/check_book.py build/book/_build/html" in book


@pytest.fixture(scope="module")
def small_book(tmp_path_factory):
    """The book's own configuration (book.yml) on two small pages with equations, built without executing."""
    tmp = tmp_path_factory.mktemp("book")
    result = build_small_book(tmp, {
        "index": "# Offline\n\nInline $x^2$ and a display:\n\n$$\n\\mathbf{s} = \\sigma(W_2 \\delta(W_1 \\mathbf{z})) \\tag{3}\n$$\n",
        "second": "# A second page\n\n```{math}\n:label: eq-gate\n\\omega = \\sigma(\\mathrm{C1D}_k(\\mathbf{y}))\n```\n",
    })
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return tmp / "out" / "_build" / "html"


def test_built_pages_load_nothing_from_the_network(small_book):
    assert check_book.external_resources(small_book) == []
    assert (small_book / "_static" / "mathjax" / "tex-chtml.js").exists()
    assert check_book.main([str(small_book)]) == 0


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(not CHROMIUM, reason="Chromium is not installed (apt-get install chromium): the offline rendering of equations was not checked")
def test_equations_render_with_the_network_off(small_book, tmp_path):
    """Headless Chromium with every network request refused renders the page's TeX with MathJax."""
    result = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--disable-quic", f"--user-data-dir={tmp_path / 'profile'}",
         "--proxy-server=127.0.0.1:9", "--proxy-bypass-list=<-loopback>",  # every http(s) request fails
         "--allow-file-access-from-files", "--virtual-time-budget=15000", "--dump-dom",
         (small_book / "index.html").as_uri()],
        capture_output=True, text=True, timeout=120, env={**os.environ, "HOME": str(tmp_path)},
    )
    dom = result.stdout
    assert "<mjx-container" in dom, f"MathJax did not typeset the page offline:\n{result.stderr[-2000:]}"
    assert "<mjx-merror" not in dom and "\\tag{3}" not in dom.split("<mjx-container", 1)[1]


def test_make_keeps_a_shared_machine_usable():
    """Spinning OpenMP threads made a training run 15x slower beside another process
    (CONTRIBUTING, tools/contention.py); make exports a short spin to every kernel it starts."""
    assert re.search(r"^export GOMP_SPINCOUNT \?= \d+$", (ROOT / "Makefile").read_text(), re.M)
    if "MAKELEVEL" in os.environ:  # run by `make test`: the kernels inherit this environment
        assert os.environ.get("GOMP_SPINCOUNT")


@pytest.mark.parametrize("md", CHAPTERS, ids=lambda p: str(p.relative_to(ROOT / "chapters")))
def test_every_chapter_has_a_notation_box_near_the_top(md):
    """A Notation admonition (a table: symbol, meaning, shape) before the chapter's first section."""
    text = md.read_text()
    first_section = text.index("\n## ")
    box = text.find("{admonition} Notation")
    assert 0 <= box < first_section, f"{md.name}: no Notation box before the first '## ' section"
    table = text[box:text.index("\n:::", box)]
    assert re.search(r"^\|\s*Symbol\s*\|\s*Meaning\s*\|", table, re.M), f"{md.name}: the Notation box has no Symbol | Meaning table"
    assert table.count("\n|") >= 4, f"{md.name}: the Notation box lists fewer than three symbols"


_IMSHOW = re.compile(r"\.(?:imshow|matshow|pcolormesh)\((?P<args>[^\n]*)")


@pytest.mark.parametrize("md", CHAPTERS, ids=lambda p: str(p.relative_to(ROOT / "chapters")))
def test_every_map_has_a_colour_bar(md):
    """A cell that draws a map (an imshow that is not a grey input image) also draws a colour bar:
    without one a reader cannot tell a weight of 0.9 from 0.1."""
    for cell in jupytext.read(md).cells:
        if cell.cell_type != "code":
            continue
        maps = [m.group("args") for m in _IMSHOW.finditer(cell.source) if 'cmap="gray"' not in m.group("args")]
        if maps:
            assert "colorbar(" in cell.source, f"{md.name}: a cell draws {len(maps)} map(s) without a colour bar: {cell.source[:120]!r}"
