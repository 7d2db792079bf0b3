"""A save from JupyterLab changes only what the reader changed.

JupyterLab reads and writes a chapter through the Jupyter server's contents API, which jupytext's
contents manager serves: `GET /api/contents/<path>` turns the `.md` into a notebook, `PUT` turns the
notebook back into Markdown. These tests make that round trip the way the browser does (the model
passes through JSON; the frontend adds cell ids, outputs, execution counts and the kernel's
`language_info`) and compare the bytes of the file:

- saved unchanged, every chapter is byte for byte the same (no jupytext version stamped into the
  front matter, no blank lines moved: `chapters/jupytext.toml` and chapters written in jupytext's
  own layout);
- saved after one edit, the file differs by exactly that edit;
- saved after unfolding a solution, the file differs by exactly one line, the solution's
  `source_hidden: true` (the README's notebook section says so).

The first three run in-process on every chapter; the last starts `make lab` itself and goes
through its HTTP contents API, on one chapter, so the settings are the ones a reader gets.
"""

from __future__ import annotations

import copy
import difflib
import json
import shutil
import urllib.request
from pathlib import Path

import pytest

from test_browser import lab_server  # noqa: F401  (the `make lab` fixture)

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted(p.relative_to(ROOT / "chapters").as_posix() for p in (ROOT / "chapters").rglob("*.md")
                  if "{code-cell}" in p.read_text(encoding="utf-8"))


def _as_the_frontend_sends_it(model: dict) -> dict:
    """The notebook as JupyterLab sends it back after a run: JSON, with outputs, execution counts,
    cell ids and the kernel's language_info (none of which belongs in the .md)."""
    model = json.loads(json.dumps(model, default=str))
    nb = model["content"]
    nb["metadata"]["language_info"] = {"name": "python", "version": "3.11.0", "mimetype": "text/x-python"}
    for i, cell in enumerate(nb["cells"]):
        cell["id"] = f"cell-{i}"
        if cell["cell_type"] == "code":
            cell["execution_count"] = i + 1
            cell["outputs"] = [{"output_type": "stream", "name": "stdout", "text": "ran\n"}]
    return {"type": "notebook", "format": "json", "content": nb}


def _diff(before: str, after: str) -> list[str]:
    return [line for line in difflib.unified_diff(before.splitlines(), after.splitlines(), lineterm="", n=0)
            if not line.startswith(("---", "+++", "@@"))]


@pytest.fixture(scope="module")
def contents(tmp_path_factory):
    """jupytext's contents manager (the one `make lab` serves) on a copy of the chapters."""
    jupytext = pytest.importorskip("jupytext")
    root = tmp_path_factory.mktemp("roundtrip") / "chapters"
    shutil.copytree(ROOT / "chapters", root)
    return root, jupytext.TextFileContentsManager(root_dir=str(root))


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_saving_a_chapter_unchanged_leaves_it_byte_for_byte(contents, chapter):
    root, cm = contents
    before = (root / chapter).read_bytes()
    cm.save(_as_the_frontend_sends_it(cm.get(chapter, content=True, type="notebook")), chapter)
    after = (root / chapter).read_bytes()
    assert after == before, "\n".join(_diff(before.decode(), after.decode())[:20])


def _solution_cell(nb: dict) -> int:
    return next(i for i, c in enumerate(nb["cells"])
                if c["cell_type"] == "code" and c["metadata"].get("jupyter", {}).get("source_hidden"))


def _answer_first_exercise(nb: dict) -> tuple[str, str]:
    """Edit the notebook as a reader answering the first exercise: its line `answer = ...  # ...`
    or `raise NotImplementedError  # your code here` becomes an answer. Returns (old, new) line."""
    for cell in nb["cells"]:
        for old in cell["source"].splitlines() if cell["cell_type"] == "code" else []:
            if "raise NotImplementedError  # your code" in old or " = ...  #" in old:
                new = old.replace("raise NotImplementedError", "return 42").replace(" = ...", " = 42")
                cell["source"] = cell["source"].replace(old, new, 1)
                return old, new
    raise AssertionError("no exercise cell found")


@pytest.mark.parametrize("chapter", ["primer/einops.md", "linear/linear.md"])
def test_one_edit_changes_exactly_that_edit(contents, chapter):
    root, cm = contents
    before = (root / chapter).read_text()
    model = _as_the_frontend_sends_it(cm.get(chapter, content=True, type="notebook"))
    old_line, new_line = _answer_first_exercise(model["content"])
    cm.save(model, chapter)
    after = (root / chapter).read_text()
    assert _diff(before, after) == [f"-{old_line}", f"+{new_line}"]
    (root / chapter).write_text(before)


def test_unfolding_a_solution_and_saving_records_the_unfolding(contents):
    """JupyterLab deletes `source_hidden` when the reader unfolds a cell's input (its outputs stay
    folded); saved, the solution opens unfolded next time. Folding it again and saving restores
    the file."""
    root, cm = contents
    chapter = "channel/se.md"
    before = (root / chapter).read_text()
    model = _as_the_frontend_sends_it(cm.get(chapter, content=True, type="notebook"))
    cell = model["content"]["cells"][_solution_cell(model["content"])]
    folded = copy.deepcopy(cell["metadata"]["jupyter"])
    del cell["metadata"]["jupyter"]["source_hidden"]
    cm.save(model, chapter)
    assert _diff(before, (root / chapter).read_text()) == ["-  source_hidden: true"]
    cell["metadata"]["jupyter"] = folded
    cm.save(model, chapter)
    assert (root / chapter).read_text() == before


def test_make_lab_saves_through_its_contents_api_without_changes(lab_server, tmp_path):  # noqa: F811
    """The same round trip over HTTP, against the server `make lab` starts (its settings, its
    jupytext, the configuration found from the folder it serves)."""
    base, token, _ = lab_server
    chapter = "linear/linear.md"
    url = f"{base}/api/contents/{chapter}?token={token}"
    path = tmp_path / "chapters" / chapter
    before = path.read_text()

    def get() -> dict:
        with urllib.request.urlopen(f"{url}&type=notebook&content=1", timeout=30) as r:
            return json.load(r)

    def put(model: dict) -> None:
        request = urllib.request.Request(url, data=json.dumps(model).encode(), method="PUT",
                                         headers={"Content-Type": "application/json"})
        urllib.request.urlopen(request, timeout=30).close()

    put(_as_the_frontend_sends_it(get()))
    assert path.read_text() == before, "\n".join(_diff(before, path.read_text())[:20])
    model = _as_the_frontend_sends_it(get())
    old_line, new_line = _answer_first_exercise(model["content"])
    put(model)
    assert _diff(before, path.read_text()) == [f"-{old_line}", f"+{new_line}"]
