"""A minimal JSON client for the Kubernetes API (stdlib only), for the e2e tests.

Token auth and the cluster CA from a kubeconfig; one keep-alive connection per thread.
"""

from __future__ import annotations

import http.client
import json
import ssl
import threading
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

JSON = dict[str, Any]


class KubeError(Exception):
    def __init__(self, status: int, method: str, path: str, body: str) -> None:
        super().__init__(f"{method} {path} -> {status}: {body[:500]}")
        self.status = status


@dataclass
class Kube:
    server: str
    token: str
    ca_file: str | None = None
    _local: threading.local = field(default_factory=threading.local, repr=False)

    @classmethod
    def from_kubeconfig(cls, path: Path) -> Kube:
        config = yaml.safe_load(path.read_text())
        context_name = config["current-context"]
        context = next(c["context"] for c in config["contexts"] if c["name"] == context_name)
        cluster = next(c["cluster"] for c in config["clusters"] if c["name"] == context["cluster"])
        user = next(u["user"] for u in config["users"] if u["name"] == context["user"])
        return cls(cluster["server"], user["token"], cluster.get("certificate-authority"))

    def _connection(self) -> http.client.HTTPSConnection:
        conn: http.client.HTTPSConnection | None = getattr(self._local, "conn", None)
        if conn is None:
            parsed = urllib.parse.urlsplit(self.server)
            ctx = ssl.create_default_context(cafile=self.ca_file)
            if self.ca_file is None:
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
            conn = http.client.HTTPSConnection(
                parsed.hostname or "", parsed.port or 443, context=ctx, timeout=30
            )
            self._local.conn = conn
        return conn

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        query: dict[str, str] | None = None,
        content_type: str = "application/json",
    ) -> JSON:
        if query:
            path = f"{path}?{urllib.parse.urlencode(query)}"
        payload = None if body is None else json.dumps(body).encode()
        headers = {"Authorization": f"Bearer {self.token}", "Accept": "application/json"}
        if payload is not None:
            headers["Content-Type"] = content_type
        for attempt in range(2):
            conn = self._connection()
            try:
                conn.request(method, path, body=payload, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                break
            except (http.client.HTTPException, OSError):
                conn.close()
                self._local.conn = None
                if attempt:
                    raise
        if resp.status >= 400:
            raise KubeError(resp.status, method, path, data.decode(errors="replace"))
        return json.loads(data) if data else {}

    def get(self, path: str, **query: str) -> JSON:
        return self.request("GET", path, query=query or None)

    def create(self, path: str, body: JSON) -> JSON:
        return self.request("POST", path, body)

    def patch(self, path: str, body: JSON, kind: str = "strategic-merge-patch") -> JSON:
        return self.request("PATCH", path, body, content_type=f"application/{kind}+json")

    def delete(self, path: str, body: JSON | None = None) -> JSON:
        return self.request("DELETE", path, body)

    def get_or_none(self, path: str) -> JSON | None:
        try:
            return self.get(path)
        except KubeError as err:
            if err.status == 404:
                return None
            raise
