"""The ASGI guard in front of every ``/v1`` route: bearer token -> TokenReview -> SubjectAccessReview.

It runs before routing and body parsing. No token, or one the API server rejects: 401. A valid token
whose user may not make the call: 403 (the message says which verb on which object). The API server
cannot answer: 503. The caller (user + token) is left in ``scope["state"]["caller"]`` for the route.
"""

from __future__ import annotations

import logging
from typing import Any

from starlette.exceptions import HTTPException
from starlette.routing import Match, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from stoa_web.access import access_of, check_for, denial_message, invalid_path_params
from stoa_web.auth import Authenticator, Caller
from stoa_web.kube import KubeError
from stoa_web.metrics import ApiMetrics
from stoa_web.problems import problem_bytes

log = logging.getLogger("stoa.api.guard")
PROTECTED_PREFIXES = ("/v1/", "/openapi.json")
MAX_TOKEN_BYTES = 16 * 1024


def bearer_token(scope: Scope) -> str | None:
    for key, value in scope.get("headers") or ():
        if key == b"authorization":
            if len(value) > MAX_TOKEN_BYTES:
                return None
            scheme, _, token = value.decode("latin-1").partition(" ")
            token = token.strip()
            return token if scheme.lower() == "bearer" and token else None
    return None


def content_length(scope: Scope) -> int | None:
    for key, value in scope.get("headers") or ():
        if key == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _limited(receive: Receive, limit: int) -> Receive:
    """A body sent without Content-Length (chunked) is counted as it arrives; over the limit: 413."""
    total = 0

    async def receive_limited() -> Message:
        nonlocal total
        message = await receive()
        if message["type"] == "http.request":
            total += len(message.get("body", b""))
            if total > limit:
                raise HTTPException(413, f"request body is over the limit of {limit} bytes")
        return message

    return receive_limited


def find_route(routes: list[Any], scope: Scope) -> tuple[Route | None, dict[str, str], bool]:
    """(route, path params, method allowed); (None, {}, False) when no route has this path."""
    partial: Route | None = None
    params: dict[str, str] = {}
    for route in routes:
        if not isinstance(route, Route):
            continue
        match, child = route.matches(scope)
        if match is Match.FULL:
            return route, dict(child.get("path_params") or {}), True
        if match is Match.PARTIAL and partial is None:
            partial, params = route, dict(child.get("path_params") or {})
    return partial, params, False


def check_routes(routes: list[Any]) -> None:
    """Refuse to serve a ``/v1`` route that does not declare the access it needs, or a route this guard
    cannot see (anything but a plain route, e.g. an included router, outside the console's static files)."""
    hidden = [r for r in routes if not isinstance(r, Route) and getattr(r, "path", None) != "/assets"]
    if hidden:
        raise RuntimeError(f"routes the guard cannot match (register them on the app itself): {hidden}")
    missing = [
        r.path
        for r in routes
        if isinstance(r, Route) and r.path.startswith("/v1/") and not access_of(r.endpoint)
    ]
    if missing:
        raise RuntimeError(f"routes without a declared access (stoa_web.access.requires): {missing}")


class Guard:
    def __init__(
        self,
        app: ASGIApp,
        *,
        routes: list[Any],
        auth: Authenticator,
        metrics: ApiMetrics,
        max_body_bytes: int,
    ) -> None:
        self.app = app
        self.routes = routes
        self.auth = auth
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(PROTECTED_PREFIXES):
            await self.app(scope, receive, send)
            return
        caller_or_error = await self._admit(scope)
        if isinstance(caller_or_error, tuple):
            status, message = caller_or_error
            self.metrics.denied.labels(str(status)).inc()
            await _answer(send, status, message)
            return
        scope.setdefault("state", {})["caller"] = caller_or_error
        length = content_length(scope)
        if length is not None and length > self.max_body_bytes:
            self.metrics.denied.labels("413").inc()
            await _answer(
                send, 413, f"request body of {length} bytes is over the limit of {self.max_body_bytes}"
            )
            return
        route, _, _ = find_route(self.routes, scope)
        template = route.path if route is not None else scope["path"]

        async def counted(message: Message) -> None:
            if message["type"] == "http.response.start":
                self.metrics.requests.labels(template, scope["method"], str(message["status"])).inc()
            await send(message)

        await self.app(scope, _limited(receive, self.max_body_bytes), counted)

    async def _admit(self, scope: Scope) -> Caller | tuple[int, str]:  # noqa: PLR0911 - one per answer
        token = bearer_token(scope)
        if token is None:
            return 401, "a bearer token is required (Authorization: Bearer <token>)"
        try:
            user = await self.auth.authenticate(token)
        except KubeError as exc:
            log.warning("TokenReview failed error=%s", exc.message)
            return 503, f"cannot review the token with the Kubernetes API: {exc.message}"
        if user is None:
            return 401, "the Kubernetes API server does not accept this token"
        caller = Caller(user, token)
        if scope["path"] == "/openapi.json":
            return caller
        route, params, allowed = find_route(self.routes, scope)
        if route is None:
            return 404, f"no such path: {scope['path']}"
        if not allowed:
            return 405, f"{scope['method']} is not allowed on {scope['path']}"
        bad = invalid_path_params(params)
        if bad:
            return 400, bad
        access = access_of(route.endpoint)
        if access is None:  # check_routes makes this unreachable; never serve an undeclared route
            return 403, "this route declares no access"
        check = check_for(access, params)
        if check is None:
            return caller
        try:
            allowed_, reason = await self.auth.authorize(user, check)
        except KubeError as exc:
            log.warning("SubjectAccessReview failed error=%s", exc.message)
            return 503, f"cannot review access with the Kubernetes API: {exc.message}"
        if not allowed_:
            log.info("Denied user=%s check=%r reason=%r", user.username, check.describe(), reason)
            return 403, denial_message(user, check)
        return caller


async def _answer(send: Send, status: int, message: str) -> None:
    body, headers = problem_bytes(status, message)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
