"""Every error the API answers has one shape (``Problem``), close to the Kubernetes ``Status`` it relays."""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, Field
from starlette.responses import JSONResponse

REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    409: "Conflict",
    413: "RequestEntityTooLarge",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    502: "BadGateway",
    503: "ServiceUnavailable",
    504: "Timeout",
}


class Problem(BaseModel):
    """An error: HTTP status, a CamelCase reason, a sentence for people, and details where they help."""

    status: int = Field(ge=400, le=599)
    reason: str
    message: str
    details: list[dict[str, Any]] = Field(default_factory=list)


class ApiProblemError(Exception):
    """Raised by routes and adapters; rendered by the app's exception handler."""

    def __init__(
        self, status: int, message: str, reason: str = "", details: list[dict[str, Any]] | None = None
    ) -> None:
        super().__init__(message)
        self.problem = Problem(
            status=status,
            reason=reason or REASONS.get(status, "Error"),
            message=message,
            details=details or [],
        )


def problem_response(problem: Problem, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(problem.model_dump(), status_code=problem.status, headers=headers)


def problem_bytes(status: int, message: str, reason: str = "") -> tuple[bytes, list[tuple[bytes, bytes]]]:
    """For the ASGI guard, which answers before there is a Starlette response object."""
    body = Problem(status=status, reason=reason or REASONS.get(status, "Error"), message=message)
    headers = [(b"content-type", b"application/json")]
    if status == 401:
        headers.append((b"www-authenticate", b'Bearer realm="stoa"'))
    return json.dumps(body.model_dump()).encode(), headers


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": Problem, "description": REASONS[status]}
    for status in (400, 401, 403, 404, 409, 413, 422, 503)
}
