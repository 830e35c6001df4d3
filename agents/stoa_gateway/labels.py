"""Bounded metric label values: the first N distinct values pass, later ones become ``other``."""

from __future__ import annotations

import re

OTHER = "other"
NONE = "none"
_UNSAFE = re.compile(r"[^A-Za-z0-9_.:/-]")


class BoundedLabels:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._seen: set[str] = set()

    def value(self, raw: str | None) -> str:
        if not raw:
            return NONE
        value = _UNSAFE.sub("_", raw)[:64]
        if value in self._seen:
            return value
        if len(self._seen) >= self.limit:
            return OTHER
        self._seen.add(value)
        return value
