"""The Kubernetes adapter: server-side apply, reads, status patches, Events; client errors converted here.

Synchronous on purpose (kopf runs sync handlers in its thread pool). Every call is checked against
``RESOURCES`` so the RBAC manifest rendered from it cannot silently fall behind the code.
"""

from __future__ import annotations

import json
import logging
import uuid
from typing import Any

from kubernetes import client, config
from kubernetes.client.rest import ApiException
from urllib3.exceptions import HTTPError

from stoa_operator.errors import NotFoundError, PermanentError, TemporaryError
from stoa_operator.k8s.resources import allowed, resource_for

log = logging.getLogger(__name__)
RETRY_STATUSES = {409, 429, 500, 502, 503, 504}


def convert(exc: Exception, what: str) -> Exception:
    """Client exception -> TemporaryError (retry) or PermanentError (a bug or an invalid object)."""
    if isinstance(exc, ApiException):
        status = exc.status or 0
        raw = exc.body or exc.reason or ""
        detail = (raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw))[:500]
        if status == 404:
            return NotFoundError(f"{what}: not found")
        if status in RETRY_STATUSES or status == 0:
            return TemporaryError(f"{what}: HTTP {status} {detail}", delay=5.0)
        if status == 403:
            return TemporaryError(f"{what}: forbidden (check the operator's RBAC): {detail}", delay=30.0)
        return PermanentError(f"{what}: HTTP {status} {detail}")
    return TemporaryError(f"{what}: {exc}", delay=5.0)


def _declared(ok: bool, message: str) -> None:
    if not ok:
        raise PermanentError(message)


class Kube:
    """The operator's view of the API: typed on plain dict manifests."""

    def __init__(self, api: client.ApiClient, field_manager: str) -> None:
        self.api = api
        self.field_manager = field_manager

    @classmethod
    def from_environment(cls, field_manager: str, pool_size: int = 32) -> Kube:
        try:
            config.load_incluster_config()
        except config.ConfigException:
            config.load_kube_config()
        configuration = client.Configuration.get_default_copy()
        configuration.connection_pool_maxsize = pool_size  # one connection per kopf worker thread
        return cls(client.ApiClient(configuration), field_manager)

    def _path(self, api_version: str, kind: str, namespace: str, name: str | None = None) -> str:
        res = resource_for(api_version, kind)
        prefix = f"/apis/{api_version}" if res.group else f"/api/{api_version}"
        path = f"{prefix}/namespaces/{namespace}/{res.plural}"
        return f"{path}/{name}" if name else path

    def _call(
        self,
        method: str,
        path: str,
        what: str,
        *,
        body: Any = None,
        query: list[tuple[str, str]] | None = None,
        content_type: str = "application/json",
    ) -> Any:
        headers = {"Accept": "application/json", "Content-Type": content_type}
        try:
            method, url, headers, _, _ = self.api.param_serialize(
                method, path, query_params=query or [], header_params=headers, auth_settings=["BearerToken"]
            )
            response = self.api.call_api(method, url, header_params=headers, body=body, _request_timeout=30)
            response.read()
            if not 200 <= response.status < 300:
                raise ApiException(http_resp=response)
            return json.loads(response.data) if response.data else {}
        except (ApiException, HTTPError, OSError, ValueError) as exc:
            raise convert(exc, what) from exc

    def apply(self, manifest: dict[str, Any]) -> dict[str, Any]:
        """Server-side apply with the operator's field manager (conflicts forced: we own these fields)."""
        meta = manifest["metadata"]
        kind, api_version = manifest["kind"], manifest["apiVersion"]
        _declared(allowed(api_version, kind, "patch"), f"{kind} patch not declared in RESOURCES")
        result = self._call(
            "PATCH",
            self._path(api_version, kind, meta["namespace"], meta["name"]),
            f"apply {kind}/{meta['name']} in {meta['namespace']}",
            body=manifest,
            query=[("fieldManager", self.field_manager), ("force", "true")],
            content_type="application/apply-patch+yaml",
        )
        return dict(result)

    def get(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        _declared(allowed(api_version, kind, "get"), f"{kind} get not declared in RESOURCES")
        try:
            return dict(
                self._call("GET", self._path(api_version, kind, namespace, name), f"get {kind}/{name}")
            )
        except NotFoundError:
            return None

    def list(
        self, api_version: str, kind: str, namespace: str, label_selector: str | None = None
    ) -> list[dict[str, Any]]:
        _declared(allowed(api_version, kind, "list"), f"{kind} list not declared in RESOURCES")
        query = [("labelSelector", label_selector)] if label_selector else []
        result = self._call(
            "GET", self._path(api_version, kind, namespace), f"list {kind} in {namespace}", query=query
        )
        return list(result.get("items") or [])

    def delete(self, api_version: str, kind: str, namespace: str, name: str) -> bool:
        """Delete one object; False when it was already gone."""
        _declared(allowed(api_version, kind, "delete"), f"{kind} delete not declared in RESOURCES")
        try:
            self._call("DELETE", self._path(api_version, kind, namespace, name), f"delete {kind}/{name}")
        except NotFoundError:
            return False
        return True

    def api_available(self, api_version: str, plural: str) -> bool:
        """Whether the API server serves ``plural`` in ``api_version`` (discovery, no RBAC needed)."""
        try:
            found = self._call("GET", f"/apis/{api_version}", f"discover {api_version}")
        except NotFoundError:
            return False
        return any(r.get("name") == plural for r in found.get("resources") or [])

    def patch_status(
        self, api_version: str, kind: str, namespace: str, name: str, status: dict[str, Any]
    ) -> dict[str, Any]:
        """Merge-patch ``status`` (lists such as conditions are replaced as a whole)."""
        _declared(allowed(api_version, kind, "patch", "status"), f"{kind}/status patch not declared")
        return dict(
            self._call(
                "PATCH",
                self._path(api_version, kind, namespace, name) + "/status",
                f"patch status of {kind}/{name}",
                body={"status": status},
                content_type="application/merge-patch+json",
            )
        )

    def event(self, involved: dict[str, Any], type_: str, reason: str, message: str, now: str) -> None:
        """A core/v1 Event about ``involved`` (best effort: an Event that fails to post is only logged)."""
        meta = involved["metadata"]
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": f"{meta['name']}.{uuid.uuid4().hex[:12]}", "namespace": meta["namespace"]},
            "involvedObject": {
                "apiVersion": involved["apiVersion"],
                "kind": involved["kind"],
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta.get("uid"),
            },
            "type": type_,
            "reason": reason,
            "message": message[:1000],
            "source": {"component": self.field_manager},
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
            "reportingComponent": self.field_manager,
        }
        try:
            self._call("POST", f"/api/v1/namespaces/{meta['namespace']}/events", "post event", body=body)
        except (TemporaryError, PermanentError) as exc:
            log.warning(
                "Event not posted kind=%s name=%s reason=%s error=%s",
                involved["kind"],
                meta["name"],
                reason,
                exc,
            )
