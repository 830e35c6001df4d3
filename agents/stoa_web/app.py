"""The ``stoa api`` application: FastAPI routes behind the guard, the console's static files, health.

``create_app(settings)`` builds it; the Kubernetes client, store pools and gateway client open in the
lifespan. ``openapi_document()`` is the OpenAPI document (also committed as docs/api/openapi.json).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from starlette.exceptions import HTTPException
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from stoa_web.auth import Authenticator
from stoa_web.gateways import Gateways
from stoa_web.guard import Guard, check_routes
from stoa_web.kube import Kube, load_credentials
from stoa_web.metrics import ApiMetrics
from stoa_web.models import EVENT_MODELS
from stoa_web.problems import REASONS, ApiProblemError, Problem, problem_response
from stoa_web.routes import conversations
from stoa_web.routes import resources as resource_routes
from stoa_web.services import Services
from stoa_web.settings import ApiSettings
from stoa_web.store import Store

log = logging.getLogger("stoa.api")
VERSION = "0.2.0"
STATIC = Path(str(resources.files("stoa_web") / "static"))
# The console loads only its own files; nothing may frame it.
SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (
        b"content-security-policy",
        b"default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        b"connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    ),
]


class SecurityHeaders:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *SECURITY_HEADERS]
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _validation_problem(exc: RequestValidationError) -> Problem:
    errors = list(exc.errors())
    if any(e.get("type") == "json_invalid" for e in errors):
        return Problem(status=400, reason="BadRequest", message="request body is not valid JSON")
    details = [
        {"field": ".".join(str(p) for p in e.get("loc", ())), "message": str(e.get("msg", ""))}
        for e in errors
    ]
    first = details[0] if details else {"field": "", "message": "invalid request"}
    return Problem(
        status=422, reason="Invalid", message=f"{first['field']}: {first['message']}", details=details[:20]
    )


def _install_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiProblemError)
    async def on_problem(_request: Request, exc: ApiProblemError) -> JSONResponse:
        return problem_response(exc.problem)

    @app.exception_handler(RequestValidationError)
    async def on_invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return problem_response(_validation_problem(exc))

    @app.exception_handler(HTTPException)
    async def on_http(_request: Request, exc: HTTPException) -> JSONResponse:
        reason = REASONS.get(exc.status_code, "Error")
        return problem_response(Problem(status=exc.status_code, reason=reason, message=str(exc.detail)))


def _console(app: FastAPI) -> None:
    index = STATIC / "index.html"
    if (STATIC / "assets").is_dir():
        app.mount("/assets", StaticFiles(directory=STATIC / "assets"), name="assets")

    @app.get("/", include_in_schema=False)
    async def console() -> Response:
        if not index.exists():
            return Response(
                "the console is not built (make console)", status_code=404, media_type="text/plain"
            )
        return FileResponse(index, headers={"Cache-Control": "no-cache"})


def _health(app: FastAPI) -> None:
    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", include_in_schema=False)
    async def readyz(request: Request) -> JSONResponse:
        svc: Services = request.app.state.services
        try:
            await svc.kube.request("GET", "/readyz")
        except Exception as exc:
            return JSONResponse({"status": "not ready", "reason": str(exc)[:300]}, status_code=503)
        return JSONResponse({"status": "ready"})


def build_app(settings: ApiSettings) -> FastAPI:
    """The routes and handlers, without connections (what the OpenAPI document is made from)."""
    app = FastAPI(
        title="Stoa API",
        version=VERSION,
        description=(
            "Conversations, agents and model policies of Stoa, with Kubernetes authentication and "
            "authorization: every call carries a bearer token (TokenReview) and is allowed by a "
            "SubjectAccessReview on the matching stoa.dev resource and verb; writes reach the API server "
            "with the caller's own token."
        ),
        docs_url=None,
        redoc_url=None,
        openapi_url="/openapi.json",
    )
    conversations.router.register(app)
    resource_routes.router.register(app)
    _install_handlers(app)
    _health(app)
    _console(app)
    check_routes(app.routes)
    app.openapi = lambda: openapi_document(app)  # type: ignore[method-assign]
    return app


def openapi_document(app: FastAPI) -> dict[str, Any]:
    """FastAPI's document plus the event stream's payload types (one schema per SSE event name)."""
    if app.openapi_schema:
        return app.openapi_schema
    doc = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    ref = "#/components/schemas/{model}"
    refs = {}
    for event, model in EVENT_MODELS.items():
        schema = model.model_json_schema(by_alias=True, ref_template=ref)
        for name, nested in schema.pop("$defs", {}).items():
            schemas.setdefault(name, nested)
        schemas.setdefault(model.__name__, schema)
        refs[event] = {"$ref": ref.format(model=model.__name__)}
    for path, item in doc.get("paths", {}).items():
        if path.endswith("/events"):
            content = item["get"]["responses"]["200"]["content"]["text/event-stream"]
            content["x-stoa-events"] = refs
            content["schema"] = {"type": "string", "description": "event: <name>, id: <cursor>, data: <JSON>"}
    app.openapi_schema = doc
    return doc


def create_app(settings: ApiSettings) -> FastAPI:
    metrics = ApiMetrics()
    kube = Kube(load_credentials(settings.kubeconfig), settings.request_timeout_seconds)
    auth = Authenticator(kube, settings.auth_cache_seconds)
    svc = Services(
        settings=settings,
        kube=kube,
        auth=auth,
        store=Store(kube, settings),
        gateways=Gateways(kube, settings),
        metrics=metrics,
    )

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await kube.start()
        await svc.gateways.start()
        log.info("Stoa API started server=%s", kube.credentials.server)
        try:
            yield
        finally:
            await svc.gateways.close()
            await svc.store.close()
            await kube.close()

    app = build_app(settings)
    app.router.lifespan_context = lifespan
    app.state.services = svc
    app.add_middleware(
        Guard, routes=app.routes, auth=auth, metrics=metrics, max_body_bytes=settings.max_body_bytes
    )
    app.add_middleware(SecurityHeaders)
    return app
