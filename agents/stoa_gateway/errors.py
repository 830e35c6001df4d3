"""OpenAI-style error responses: ``{"error": {"message", "type", "code", "param"}}``."""

from __future__ import annotations

import math

from aiohttp import web


def error_payload(
    message: str, *, type_: str, code: str | None, param: str | None = None
) -> dict[str, dict[str, str | None]]:
    return {"error": {"message": message, "type": type_, "code": code, "param": param}}


def error_response(
    status: int,
    message: str,
    *,
    type_: str,
    code: str | None,
    retry_after: float | None = None,
    headers: dict[str, str] | None = None,
    param: str | None = None,
) -> web.Response:
    out = dict(headers or {})
    if retry_after is not None:
        out["Retry-After"] = str(max(1, math.ceil(retry_after)))
    return web.json_response(
        error_payload(message, type_=type_, code=code, param=param), status=status, headers=out
    )
