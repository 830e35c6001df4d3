"""What the routes share: settings, the Kubernetes client, reviews, the store, the gateways, metrics."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from stoa_api.base import API_VERSION
from stoa_web.auth import Authenticator, Caller
from stoa_web.gateways import Gateways
from stoa_web.kube import JSON, Kube, KubeError
from stoa_web.metrics import ApiMetrics
from stoa_web.problems import ApiProblemError
from stoa_web.settings import ApiSettings
from stoa_web.store import Store

FIELD_MANAGER = "stoa-api"
BEARER = HTTPBearer(auto_error=False, description="A Kubernetes bearer token (e.g. `kubectl create token`)")


@dataclass
class Services:
    settings: ApiSettings
    kube: Kube
    auth: Authenticator
    store: Store
    gateways: Gateways
    metrics: ApiMetrics
    streams: int = 0

    def path(self, namespace: str, plural: str, name: str | None = None) -> str:
        base = f"/apis/{API_VERSION}/namespaces/{namespace}/{plural}"
        return f"{base}/{name}" if name else base

    async def as_caller(
        self,
        caller: Caller,
        method: str,
        path: str,
        *,
        body: JSON | None = None,
        params: dict[str, str] | None = None,
        content_type: str = "application/json",
    ) -> JSON:
        """A request to the API server with the caller's own token: its RBAC, its admission, its name in
        the audit log. API server errors are relayed with their status and message."""
        try:
            return await self.kube.request(
                method, path, token=caller.token, body=body, params=params, content_type=content_type
            )
        except KubeError as exc:
            raise relayed(exc) from exc


def relayed(exc: KubeError) -> ApiProblemError:
    if exc.status == 0:
        return ApiProblemError(503, exc.message, "ServiceUnavailable")
    causes = exc.details.get("causes") if isinstance(exc.details, dict) else None
    details = [c for c in causes if isinstance(c, dict)] if isinstance(causes, list) else []
    return ApiProblemError(exc.status, exc.message, exc.reason, details)


def services(request: Request) -> Services:
    found: Services = request.app.state.services
    return found


def caller(
    request: Request, _bearer: Annotated[HTTPAuthorizationCredentials | None, Security(BEARER)] = None
) -> Caller:
    """The caller the guard admitted (the bearer dependency only documents the scheme in OpenAPI)."""
    found = request.scope.get("state", {}).get("caller")
    if not isinstance(found, Caller):  # the guard admits every /v1 call; never serve one it did not
        raise ApiProblemError(401, "not authenticated")
    return found
