"""The chapter pipeline can fail: a chapter whose assert fails makes the test command fail."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("export_notebooks", ROOT / "tools/export_notebooks.py")
export_notebooks = importlib.util.module_from_spec(spec)
spec.loader.exec_module(export_notebooks)

HEADER = """---
jupytext:
  text_representation:
    extension: .md
    format_name: myst
kernelspec:
  display_name: Python 3
  language: python
  name: python3
---
# A chapter

```{code-cell} ipython3
x = 1 + 1
```

```{code-cell} ipython3
assert x == %s, "the chapter's check"
```
"""


def _run_chapter(tmp_path: Path, expected: int) -> subprocess.CompletedProcess:
    chapters = tmp_path / "chapters" / "part"
    chapters.mkdir(parents=True)
    (chapters / "demo.md").write_text(HEADER % expected)
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    out = tmp_path / "build" / "notebooks"
    written = export_notebooks.export(tmp_path / "chapters", out)
    assert [p.name for p in written] == ["demo.ipynb"]
    return subprocess.run(
        [sys.executable, "-m", "pytest", "--nbval-lax", "--nbval-current-env", "-p", "no:cacheprovider", str(out)],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )


def test_a_chapter_with_a_failing_assert_fails(tmp_path):
    proc = _run_chapter(tmp_path, expected=3)
    assert proc.returncode == 1, proc.stdout[-2000:]
    assert "the chapter's check" in proc.stdout and "1 failed" in proc.stdout


def test_a_chapter_whose_asserts_hold_passes(tmp_path):
    proc = _run_chapter(tmp_path, expected=2)
    assert proc.returncode == 0, proc.stdout[-2000:]
    assert "2 passed" in proc.stdout


def test_export_refuses_to_write_into_the_chapters(tmp_path):
    (tmp_path / "chapters").mkdir()
    with pytest.raises(ValueError, match="refusing"):
        export_notebooks.export(tmp_path / "chapters", tmp_path / "chapters" / "nb")


def test_export_leaves_the_chapters_untouched(tmp_path):
    src = tmp_path / "chapters"
    src.mkdir()
    page = src / "a.md"
    page.write_text(HEADER % 2)
    before = page.read_bytes(), page.stat().st_mtime_ns
    export_notebooks.export(src, tmp_path / "out")
    assert (page.read_bytes(), page.stat().st_mtime_ns) == before
    assert sorted(p.name for p in src.iterdir()) == ["a.md"]
