"""Routes declared at module level, registered on the app itself (never through an included router):
the guard then finds every route and its declared access in ``app.routes``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from fastapi import FastAPI

F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class RouteTable:
    prefix: str = ""
    tags: list[str] = field(default_factory=list)
    entries: list[tuple[str, str, Callable[..., Any], dict[str, Any]]] = field(default_factory=list)

    def _add(self, method: str, path: str, **kwargs: Any) -> Callable[[F], F]:
        def record(fn: F) -> F:
            self.entries.append((method, self.prefix + path, fn, kwargs))
            return fn

        return record

    def get(self, path: str, **kwargs: Any) -> Callable[[F], F]:
        return self._add("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> Callable[[F], F]:
        return self._add("POST", path, **kwargs)

    def register(self, app: FastAPI) -> None:
        for method, path, fn, kwargs in self.entries:
            app.add_api_route(path, fn, methods=[method], tags=list(self.tags), **kwargs)
