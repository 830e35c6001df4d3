"""A small async client of the Kubernetes API over aiohttp: the API's own identity, or a caller's token.

The API server connection (address, CA, the API's own credentials) comes from the official client's
loaders (in-cluster service account with token rotation, or a kubeconfig); requests go over one pooled
aiohttp session, so a caller's bearer token costs no new connection.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import Any

import aiohttp

JSON = dict[str, Any]


class KubeError(Exception):
    """The API server answered with an error (``status`` >= 400) or could not be reached (``status`` 0)."""

    def __init__(self, status: int, message: str, reason: str = "", details: JSON | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.reason = reason
        self.details = details or {}


@dataclass(frozen=True)
class Credentials:
    server: str
    ssl_context: ssl.SSLContext | bool
    configuration: Any  # kubernetes.client.Configuration: own token (refreshed in-cluster), client certs

    def own_authorization(self) -> str | None:
        """The Authorization header of the API's own identity (re-read in-cluster as the token rotates)."""
        setting = self.configuration.auth_settings().get("BearerToken")
        value = setting.get("value") if setting else None
        return str(value) if value else None


def load_credentials(kubeconfig: str | None) -> Credentials:
    """In-cluster service account (``kubeconfig`` None) or a kubeconfig file."""
    from kubernetes import client, config  # noqa: PLC0415 - its loaders only, once at start

    configuration = client.Configuration()
    if kubeconfig:
        config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
    else:
        config.load_incluster_config(client_configuration=configuration)
    context: ssl.SSLContext | bool
    if configuration.verify_ssl:
        context = ssl.create_default_context(cafile=configuration.ssl_ca_cert)
    else:
        context = False
    if configuration.cert_file and isinstance(context, ssl.SSLContext):
        context.load_cert_chain(configuration.cert_file, configuration.key_file)
    return Credentials(str(configuration.host).rstrip("/"), context, configuration)


class Kube:
    """``request(...)`` as the API itself (``token=None``) or as the caller (``token=...``)."""

    def __init__(self, credentials: Credentials, timeout_seconds: float = 10.0) -> None:
        self.credentials = credentials
        self.timeout = aiohttp.ClientTimeout(total=timeout_seconds)
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(ssl=self.credentials.ssl_context, limit=100)
        self._session = aiohttp.ClientSession(connector=connector, timeout=self.timeout)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def request(
        self,
        method: str,
        path: str,
        *,
        token: str | None = None,
        body: JSON | None = None,
        params: dict[str, str] | None = None,
        content_type: str = "application/json",
    ) -> JSON:
        if self._session is None:
            raise RuntimeError("Kube client not started")
        authorization = f"Bearer {token}" if token is not None else self.credentials.own_authorization()
        headers = {"Accept": "application/json"}
        if authorization:
            headers["Authorization"] = authorization
        if body is not None:
            headers["Content-Type"] = content_type
        try:
            async with self._session.request(
                method, self.credentials.server + path, json=body, params=params, headers=headers
            ) as resp:
                try:
                    data = await resp.json(content_type=None)
                except ValueError:
                    data = None
                if resp.status >= 400:
                    raise _error(resp.status, data)
                return data if isinstance(data, dict) else {}
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise KubeError(0, f"Kubernetes API unreachable: {exc!r}", "ServiceUnavailable") from exc

    async def get_or_none(self, path: str, *, token: str | None = None) -> JSON | None:
        try:
            return await self.request("GET", path, token=token)
        except KubeError as exc:
            if exc.status == 404:
                return None
            raise


def _error(status: int, data: Any) -> KubeError:
    if isinstance(data, dict) and data.get("kind") == "Status":
        return KubeError(
            status, str(data.get("message") or ""), str(data.get("reason") or ""), data.get("details") or {}
        )
    return KubeError(status, f"Kubernetes API answered {status}", "")
