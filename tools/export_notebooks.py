"""Convert every chapter (jupytext MyST Markdown) into a notebook under a build folder.

    python tools/export_notebooks.py chapters build/notebooks

The output folder is wiped and rebuilt, so deleted chapters leave no stale notebooks; the
chapters themselves are only read. Pages without code cells are skipped.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import jupytext


def export(src: Path, dst: Path) -> list[Path]:
    """Write one ``.ipynb`` per chapter of ``src`` into ``dst`` (same relative paths)."""
    src, dst = Path(src), Path(dst)
    if dst.resolve() == src.resolve() or src.resolve() in dst.resolve().parents:
        raise ValueError(f"refusing to write notebooks into the chapters folder {src}")
    if dst.exists():
        shutil.rmtree(dst)
    written = []
    for md in sorted(src.rglob("*.md")):
        if "_build" in md.parts or "{code-cell}" not in md.read_text(encoding="utf-8"):
            continue
        out = dst / md.relative_to(src).with_suffix(".ipynb")
        out.parent.mkdir(parents=True, exist_ok=True)
        jupytext.write(jupytext.read(md), out)
        written.append(out)
    return written


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python tools/export_notebooks.py CHAPTERS_DIR OUT_DIR")
    paths = export(Path(sys.argv[1]), Path(sys.argv[2]))
    print(f"exported {len(paths)} chapters to {sys.argv[2]}")
