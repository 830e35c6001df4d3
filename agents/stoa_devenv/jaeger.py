"""A real trace backend for tests: Jaeger v2 (``cmd/jaeger``) built from the Go module proxy.

``jaeger_binary()`` builds the version pinned in ``hack/jaeger/go.mod`` once (~3-4 min on 2 cores) and
caches it under ``~/.cache/stoa/jaeger/<version>/jaeger`` behind a file lock, as ``tools.k8s_bindir`` does
for the control plane. ``JaegerServer`` runs it with in-memory storage on free loopback ports: OTLP/HTTP
for the exporters and the query API (``GET /api/traces``) for the assertions.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stoa_devenv.errors import ComponentFailedError, ComponentMissingError
from stoa_devenv.procs import free_port, log_tail, port_open, stop_group, wait_until
from stoa_devenv.tools import CACHE, REPO_ROOT

JAEGER_MODULE = REPO_ROOT / "hack" / "jaeger"
JAEGER_PACKAGE = "github.com/jaegertracing/jaeger/cmd/jaeger"


def jaeger_version() -> str:
    """The github.com/jaegertracing/jaeger version pinned in hack/jaeger/go.mod."""
    text = (JAEGER_MODULE / "go.mod").read_text()
    match = re.search(r"^\s*github\.com/jaegertracing/jaeger (v\S+)", text, re.MULTILINE)
    if match is None:
        raise ComponentFailedError(
            f"no github.com/jaegertracing/jaeger requirement in {JAEGER_MODULE}/go.mod"
        )
    return match.group(1)


def _go() -> str:
    go = shutil.which("go") or ("/usr/local/go/bin/go" if Path("/usr/local/go/bin/go").exists() else None)
    if go is None:
        raise ComponentMissingError("Go toolchain not found: install Go >= 1.24 to build Jaeger")
    return go


def jaeger_binary() -> Path:
    """The cached Jaeger binary, built on first use (one builder at a time, others wait on the lock)."""
    out = CACHE / "jaeger" / jaeger_version()
    binary = out / "jaeger"
    if binary.exists():
        return binary
    out.mkdir(parents=True, exist_ok=True)
    with (out / ".build.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if binary.exists():
            return binary
        started = time.monotonic()
        print(
            f"Building Jaeger {jaeger_version()} from the Go module proxy into {out} (first time only,"
            " ~4 min on 2 cores)",
            file=sys.stderr,
            flush=True,
        )
        tmp = out / "jaeger.tmp"
        # nice: the build competes with tests and other builds on small machines.
        cmd = [
            "nice",
            "-n",
            "10",
            _go(),
            "build",
            "-trimpath",
            "-ldflags=-s -w",
            "-o",
            str(tmp),
            JAEGER_PACKAGE,
        ]
        proc = subprocess.run(
            cmd,
            cwd=JAEGER_MODULE,
            env={**os.environ, "GOFLAGS": "-mod=mod"},
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            raise ComponentFailedError(f"go build of Jaeger failed:\n{(proc.stdout + proc.stderr)[-4000:]}")
        tmp.replace(binary)
        print(f"Built Jaeger in {time.monotonic() - started:.0f}s", file=sys.stderr, flush=True)
    return binary


_CONFIG = """\
service:
  extensions: [jaeger_storage, jaeger_query, healthcheckv2]
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [jaeger_storage_exporter]
  telemetry:
    logs:
      level: warn
    metrics:
      level: none
extensions:
  healthcheckv2:
    use_v2: true
    http:
      endpoint: 127.0.0.1:{health}
  jaeger_query:
    storage:
      traces: memstore
    http:
      endpoint: 127.0.0.1:{query}
    grpc:
      endpoint: 127.0.0.1:{query_grpc}
  jaeger_storage:
    backends:
      memstore:
        memory:
          max_traces: 100000
receivers:
  otlp:
    protocols:
      http:
        endpoint: 127.0.0.1:{otlp_http}
processors:
  batch:
    timeout: 100ms
exporters:
  jaeger_storage_exporter:
    trace_storage: memstore
"""


@dataclass
class JaegerServer:
    """Jaeger all-in-one with in-memory storage; ``otlp_endpoint`` for ``OTEL_EXPORTER_OTLP_ENDPOINT``."""

    base: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="stoa-jaeger-")))
    otlp_http_port: int = field(default_factory=free_port)
    query_port: int = field(default_factory=free_port)
    query_grpc_port: int = field(default_factory=free_port)
    health_port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def otlp_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.otlp_http_port}"

    @property
    def query_url(self) -> str:
        return f"http://127.0.0.1:{self.query_port}"

    @property
    def log(self) -> Path:
        return self.base / "jaeger.log"

    def start(self, timeout: float = 60.0) -> JaegerServer:
        binary = jaeger_binary()
        config = self.base / "config.yaml"
        config.write_text(
            _CONFIG.format(
                health=self.health_port,
                query=self.query_port,
                query_grpc=self.query_grpc_port,
                otlp_http=self.otlp_http_port,
            )
        )
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [str(binary), "--config", f"file:{config}"],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        wait_until(
            lambda: self._exited() or (port_open(self.otlp_http_port) and port_open(self.query_port)),
            timeout,
            "Jaeger",
            self.log,
        )
        if self._exited():
            raise ComponentFailedError(f"Jaeger exited at start{log_tail(self.log)}")
        return self

    def _exited(self) -> bool:
        return self.proc is not None and self.proc.poll() is not None

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        stop_group(self.proc.pid, grace=10)
        self.proc.wait(timeout=10)  # already reaped: records the exit code

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.base, ignore_errors=True)

    # ---- query API ---------------------------------------------------------------------------------

    def _get(self, path: str, **params: Any) -> Any:
        query = urllib.parse.urlencode({k: v for k, v in params.items() if v is not None})
        url = f"{self.query_url}{path}" + (f"?{query}" if query else "")
        with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 (loopback URL we built)
            return json.loads(response.read())

    def services(self) -> list[str]:
        return list(self._get("/api/services").get("data") or [])

    def traces(self, service: str, limit: int = 1000, **params: Any) -> list[dict[str, Any]]:
        """Jaeger's JSON traces of a service (each ``{traceID, spans, processes}``)."""
        return list(self._get("/api/traces", service=service, limit=limit, **params).get("data") or [])

    def trace(self, trace_id: str) -> dict[str, Any] | None:
        try:
            data = self._get(f"/api/traces/{trace_id}").get("data") or []
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            raise
        return data[0] if data else None


def main() -> int:
    """Build (first time) or locate the Jaeger binary and print its path (``make observability-bins``)."""
    print(f"{'jaeger':24} {jaeger_binary()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
