"""Checkers for the exercises of the external chapter (Part IV)."""

from __future__ import annotations

__all__: list[str] = []
