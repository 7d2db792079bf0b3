"""Checkers for the exercises of the shuffle chapter (Part II)."""

from __future__ import annotations

__all__: list[str] = []
