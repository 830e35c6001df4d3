"""Running the operator as a subprocess against the real control plane, with its generated RBAC."""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

from stoa_devenv.cluster import ControlPlane, write_kubeconfig
from stoa_devenv.procs import free_port
from stoa_devenv.tools import kubectl_binary

REPO = Path(__file__).resolve().parents[3]
GROUP, VERSION = "stoa.dev", "v1alpha1"
T = TypeVar("T")


def wait_for(predicate: Callable[[], T], timeout: float, what: str, interval: float = 0.25) -> T:
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def kubectl(
    plane: ControlPlane, *args: str, check: bool = True, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(kubectl_binary()), "--kubeconfig", str(plane.kubeconfig), *args],
        capture_output=True,
        text=True,
        check=check,
        input=stdin,
    )


def install_crds(plane: ControlPlane) -> None:
    kubectl(plane, "apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds"))
    kubectl(plane, "wait", "--for=condition=Established", "crd", "--all", "--timeout=60s")


def operator_kubeconfig(plane: ControlPlane, api: client.ApiClient) -> Path:
    """A kubeconfig for the stoa-operator ServiceAccount bound to the generated RBAC (least privilege)."""
    core = client.CoreV1Api(api)
    try:
        core.create_namespace({"metadata": {"name": "stoa-system"}})
    except ApiException as exc:
        if exc.status != 409:
            raise
    kubectl(
        plane,
        "apply",
        "--server-side",
        "--force-conflicts",
        "-f",
        str(REPO / "operator" / "rbac" / "operator.yaml"),
    )
    token = core.create_namespaced_service_account_token(
        "stoa-operator",
        "stoa-system",
        {"spec": {"audiences": ["https://kubernetes.default.svc"], "expirationSeconds": 7200}},
    ).status.token
    path = plane.base / "operator-kubeconfig"
    write_kubeconfig(path, plane.server, plane.base / "pki" / "apiserver.crt", "stoa-operator", token)
    return path


@dataclass
class OperatorProcess:
    kubeconfig: Path
    namespaces: list[str]
    log_path: Path
    env_extra: dict[str, str] = field(default_factory=dict)
    metrics_port: int = field(default_factory=free_port)
    liveness_port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> OperatorProcess:
        env = {
            **os.environ,
            "KUBECONFIG": str(self.kubeconfig),
            "STOA_OPERATOR_NAMESPACES": ",".join(self.namespaces),
            "STOA_OPERATOR_RESYNC_SECONDS": "5",
            "STOA_OPERATOR_CONVERSATION_SYNC_SECONDS": "2",
            "STOA_OPERATOR_RETRY_SECONDS": "2",
            "STOA_OPERATOR_METRICS_PORT_NUMBER": str(self.metrics_port),
            "STOA_OPERATOR_LIVENESS_PORT_NUMBER": str(self.liveness_port),
            "STOA_OPERATOR_MAX_WORKERS": "8",
            **self.env_extra,
        }
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "stoa_operator.cli"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        return self

    def kill(self) -> None:
        """SIGKILL: no graceful shutdown, as a crashed pod would be."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()
        self.proc = None

    def log_tail(self, lines: int = 80) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


class Cluster:
    """Small helpers over the admin client for tests."""

    def __init__(self, api: client.ApiClient, namespace: str) -> None:
        self.api = api
        self.ns = namespace
        self.custom = client.CustomObjectsApi(api)
        self.apps = client.AppsV1Api(api)
        self.core = client.CoreV1Api(api)

    def create(self, plural: str, body: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = self.custom.create_namespaced_custom_object(
            GROUP, VERSION, self.ns, plural, body
        )
        return result

    def get(self, plural: str, name: str) -> dict[str, Any] | None:
        try:
            result: dict[str, Any] = self.custom.get_namespaced_custom_object(
                GROUP, VERSION, self.ns, plural, name
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return result

    def patch(self, plural: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = self.custom.patch_namespaced_custom_object(
            GROUP, VERSION, self.ns, plural, name, patch
        )
        return result

    def delete(self, plural: str, name: str) -> None:
        self.custom.delete_namespaced_custom_object(GROUP, VERSION, self.ns, plural, name)

    def deployment(self, name: str) -> Any:
        try:
            return self.apps.read_namespaced_deployment(name, self.ns)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def secret(self, name: str, data: dict[str, str]) -> None:
        body = {
            "metadata": {"name": name},
            "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
        }
        try:
            self.core.create_namespaced_secret(self.ns, body)
        except ApiException as exc:
            if exc.status != 409:
                raise
            self.core.replace_namespaced_secret(name, self.ns, body)


def wait_object(
    cluster: Cluster,
    plural: str,
    name: str,
    check: Callable[[dict[str, Any]], bool],
    timeout: float = 30,
) -> dict[str, Any]:
    """Wait until the custom object exists and ``check`` holds; return it."""

    def probe() -> dict[str, Any] | None:
        obj = cluster.get(plural, name)
        return obj if obj is not None and check(obj) else None

    found = wait_for(probe, timeout, f"{plural}/{name}")
    assert found is not None
    return found


def cond(obj: dict[str, Any], type_: str) -> dict[str, Any]:
    found = condition(obj, type_)
    assert found is not None, f"no {type_} condition in {obj.get('status')}"
    return found


def condition(obj: dict[str, Any] | None, type_: str) -> dict[str, Any] | None:
    for item in ((obj or {}).get("status") or {}).get("conditions") or []:
        if item.get("type") == type_:
            return dict(item)
    return None


def settled(obj: dict[str, Any] | None, type_: str, status: str, reason: str | None = None) -> bool:
    """Condition has ``status`` (and ``reason``) and reflects the current generation."""
    cond = condition(obj, type_)
    if obj is None or cond is None:
        return False
    gen = obj["metadata"]["generation"]
    return bool(
        cond["status"] == status
        and (reason is None or cond["reason"] == reason)
        and cond.get("observedGeneration") == gen
        and obj["status"].get("observedGeneration") == gen
    )


def load_samples() -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for path in sorted((REPO / "crds" / "samples").glob("*.yaml")):
        docs.extend(d for d in yaml.safe_load_all(path.read_text()) if d)
    return docs
