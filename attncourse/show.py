"""Show a class's real source in a notebook, so chapters never paste a second copy."""

from __future__ import annotations

import inspect
from typing import Any

__all__ = ["show_source", "source_of"]


def source_of(obj: Any, *, docstring: bool = True) -> str:
    """The source code of a class or function, optionally without its docstring."""
    src = inspect.getsource(obj)
    if docstring or not inspect.getdoc(obj):
        return src
    import ast

    tree = ast.parse(src)
    node = tree.body[0]
    first = node.body[0]
    if isinstance(first, ast.Expr) and isinstance(getattr(first, "value", None), ast.Constant):
        lines = src.splitlines(keepends=True)
        del lines[first.lineno - 1 : first.end_lineno]
        return "".join(lines)
    return src


def show_source(obj: Any, *, docstring: bool = True) -> Any:
    """Display the source of ``obj`` with its file name, highlighted in Jupyter.

    Returns an ``IPython.display.Markdown`` object in a notebook (so it renders as code in the
    book), and the plain source string elsewhere.
    """
    src = source_of(obj, docstring=docstring)
    try:
        path = inspect.getsourcefile(obj) or ""
        module = inspect.getmodule(obj)
        where = module.__name__ if module is not None else path
    except TypeError:
        where = ""
    try:
        from IPython.display import Markdown
    except ImportError:  # pragma: no cover - IPython ships with Jupyter
        return src
    return Markdown(f"From `{where}`:\n\n```python\n{src}```")
