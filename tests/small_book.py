"""Build a few pages with the book's own configuration (book.yml, ``-W -n``, nothing executed), for
tests that need Sphinx's verdict without building the whole book."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def build_small_book(tmp: Path, pages: dict[str, str], *, env: dict[str, str] | None = None,
                     timeout: int = 600) -> subprocess.CompletedProcess:
    """Write ``pages`` (name -> MyST source; the first is the root, the others its chapters) under
    ``tmp/src`` and build them into ``tmp/out`` (HTML in ``tmp/out/_build/html``)."""
    src = tmp / "src"
    src.mkdir()
    shutil.copy(ROOT / "chapters" / "references.bib", src)
    for name, text in pages.items():
        (src / f"{name}.md").write_text(text)
    root, *rest = pages
    toc = f"format: jb-book\nroot: {root}\n" + ("chapters:\n" + "".join(f"  - file: {p}\n" for p in rest) if rest else "")
    (tmp / "toc.yml").write_text(toc)
    config = yaml.safe_load((ROOT / "book.yml").read_text())
    config["execute"]["execute_notebooks"] = "off"
    (tmp / "book.yml").write_text(yaml.safe_dump(config))
    jb = Path(sys.executable).with_name("jupyter-book")
    return subprocess.run(
        [str(jb), "build", str(src), "--config", str(tmp / "book.yml"), "--toc", str(tmp / "toc.yml"),
         "--path-output", str(tmp / "out"), "-W", "-n"],
        capture_output=True, text=True, timeout=timeout, env=env,
    )
