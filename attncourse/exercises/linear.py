"""Checkers for the exercises of the linear chapter (Part IV)."""

from __future__ import annotations

__all__: list[str] = []
