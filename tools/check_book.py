"""Check a built book for what would break it offline: `python tools/check_book.py build/book/_build/html`.

A page that loads a script (or a stylesheet or font) from another host renders differently, or
not at all, without a network: equations stay raw TeX when MathJax comes from a CDN. The book
serves MathJax from its own `_static/` (the `sphinx-mathjax-offline` extension); this check
fails the build (`make book`) if any page references a script, stylesheet or module from
elsewhere, and says which page and which address.
"""

from __future__ import annotations

import re
import sys
from html.parser import HTMLParser
from pathlib import Path

__all__ = ["external_resources", "main"]

_REMOTE = re.compile(r"^(?:[a-z][a-z0-9+.-]*:)?//", re.I)  # http://, https://, //host, ...


class _Refs(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.refs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "script" and a.get("src"):
            self.refs.append(a["src"])
        elif tag == "link" and a.get("href") and (a.get("rel") or "").lower() in {
            "stylesheet", "preload", "modulepreload", "prefetch"
        }:
            self.refs.append(a["href"])


def external_resources(html_dir: str | Path) -> list[tuple[str, str]]:
    """``(page, address)`` for every script or stylesheet a page loads from another host."""
    html_dir = Path(html_dir)
    found = []
    for page in sorted(html_dir.rglob("*.html")):
        text = page.read_text(encoding="utf-8", errors="replace")
        parser = _Refs()
        parser.feed(text)
        # MathJax's address may also be written into inline configuration.
        inline = re.findall(r"""["'](https?://[^"']*mathjax[^"']*)["']""", text, re.I)
        for ref in dict.fromkeys(parser.refs + inline):  # in order, each once
            if _REMOTE.match(ref.strip()):
                found.append((str(page.relative_to(html_dir)), ref))
    return found


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python tools/check_book.py HTML_DIR", file=sys.stderr)
        return 2
    html = Path(argv[0])
    pages = list(html.rglob("*.html"))
    if not pages:
        print(f"check_book: no HTML pages under {html}", file=sys.stderr)
        return 1
    bad = external_resources(html)
    mathjax = html / "_static" / "mathjax" / "tex-chtml.js"
    if not mathjax.exists():
        print(f"check_book: {mathjax} is missing: equations would not render offline", file=sys.stderr)
        return 1
    for page, ref in bad:
        print(f"check_book: {page} loads {ref} from the network", file=sys.stderr)
    if bad:
        return 1
    print(f"check_book: {len(pages)} pages, no script or stylesheet from the network; MathJax served from _static/mathjax")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
