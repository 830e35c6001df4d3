"""``stoa api`` against the real control plane: its identity with the chart's own RBAC, callers with
service-account tokens and RoleBindings, and the API as a subprocess (``stoa api``)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubernetes import client
from kubernetes.client.rest import ApiException
from prometheus_client.parser import text_string_to_metric_families

from stoa_devenv.cluster import ControlPlane, write_kubeconfig
from stoa_devenv.procs import free_port
from tests.unit.chart.helm import template

RELEASE = (
    "stoa-web-e2e"  # the chart's cluster-scoped names get this prefix: stoa-web-e2e-api, -viewer, -editor
)
API_ROLE = f"{RELEASE}-api"
VIEWER = f"{RELEASE}-viewer"
EDITOR = f"{RELEASE}-editor"


def chart_api_objects(namespace: str) -> list[dict[str, Any]]:
    """What the chart renders for the API's identity and for users: ServiceAccount, ClusterRoles, binding."""
    result = template(namespace=namespace, release=RELEASE)
    assert result.returncode == 0, result.stderr
    wanted = []
    for obj in result.objects():
        component = obj["metadata"].get("labels", {}).get("app.kubernetes.io/component")
        if (
            obj["kind"] in ("ClusterRole", "ClusterRoleBinding")
            and obj["metadata"]["name"]
            in (
                API_ROLE,
                VIEWER,
                EDITOR,
            )
        ) or (obj["kind"] == "ServiceAccount" and component == "api"):
            wanted.append(obj)
    assert {o["kind"] for o in wanted} == {"ServiceAccount", "ClusterRole", "ClusterRoleBinding"}, wanted
    return wanted


def apply(api: client.ApiClient, obj: dict[str, Any]) -> None:
    """Create, or replace what an earlier test module left (cluster-scoped roles are shared)."""
    kind, meta = obj["kind"], obj["metadata"]
    rbac, core = client.RbacAuthorizationV1Api(api), client.CoreV1Api(api)
    create, replace = {
        "ClusterRole": (rbac.create_cluster_role, rbac.replace_cluster_role),
        "ClusterRoleBinding": (rbac.create_cluster_role_binding, rbac.replace_cluster_role_binding),
    }.get(kind, (None, None))
    try:
        if kind == "ServiceAccount":
            core.create_namespaced_service_account(meta["namespace"], obj)
        elif kind == "RoleBinding":
            rbac.create_namespaced_role_binding(meta["namespace"], obj)
        elif kind == "Role":
            rbac.create_namespaced_role(meta["namespace"], obj)
        else:
            assert create is not None
            create(obj)
    except ApiException as exc:
        if exc.status != 409 or replace is None:
            if exc.status == 409:
                return
            raise
        replace(meta["name"], obj)


def namespace(api: client.ApiClient, name: str) -> str:
    client.CoreV1Api(api).create_namespace({"metadata": {"name": name}})
    return name


def service_account(api: client.ApiClient, ns: str, name: str) -> None:
    apply(api, {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name, "namespace": ns}})


def token(api: client.ApiClient, ns: str, sa: str, seconds: int = 3600) -> str:
    """A bound token of ServiceAccount ``ns/sa`` (TokenRequest API), for the API server's audience."""
    review = client.CoreV1Api(api).create_namespaced_service_account_token(
        sa, ns, {"spec": {"audiences": ["https://kubernetes.default.svc"], "expirationSeconds": seconds}}
    )
    return str(review.status.token)


def bind(
    api: client.ApiClient, ns: str, sa_ns: str, sa: str, cluster_role: str, *, name: str | None = None
) -> str:
    """RoleBinding in ``ns`` of ClusterRole ``cluster_role`` to ServiceAccount ``sa_ns/sa``."""
    binding = name or f"{sa}-{cluster_role}"[:63]
    apply(
        api,
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": binding, "namespace": ns},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": cluster_role},
            "subjects": [{"kind": "ServiceAccount", "name": sa, "namespace": sa_ns}],
        },
    )
    return binding


def role(api: client.ApiClient, ns: str, name: str, rules: list[dict[str, Any]]) -> None:
    apply(
        api,
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": name, "namespace": ns},
            "rules": rules,
        },
    )


def bind_role(api: client.ApiClient, ns: str, sa: str, role_name: str) -> None:
    apply(
        api,
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": f"{sa}-{role_name}"[:63], "namespace": ns},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role_name},
            "subjects": [{"kind": "ServiceAccount", "name": sa, "namespace": ns}],
        },
    )


def kubeconfig(plane: ControlPlane, bearer: str, path: Path) -> Path:
    write_kubeconfig(path, plane.server, plane.base / "pki" / "apiserver.crt", "u", bearer)
    return path


@dataclass
class ApiServer:
    """``stoa api`` as a subprocess with the API service account's kubeconfig."""

    kubeconfig: Path
    log_path: Path
    env_extra: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    metrics_port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ApiServer:
        env = {
            **os.environ,
            "STOA_API_KUBECONFIG": str(self.kubeconfig),
            "STOA_API_PORT_NUMBER": str(self.port),
            "STOA_API_METRICS_PORT_NUMBER": str(self.metrics_port),
            "STOA_API_POLL_SECONDS": "0.25",
            "STOA_API_GATEWAY_POLL_SECONDS": "0.5",
            **self.env_extra,
        }
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "stoa_cli.main", "api"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"stoa api exited {self.proc.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/healthz", timeout=1) as resp:  # noqa: S310 - loopback
                    if resp.status == 200:
                        return self
            except OSError:
                time.sleep(0.1)
        raise AssertionError(f"stoa api not healthy after 30s:\n{self.log_tail()}")

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as resp:
            return str(resp.read().decode())

    def metric(self, name: str, **labels: str) -> float:
        """The value of the sample ``name`` with exactly these labels (0 when absent)."""
        for family in text_string_to_metric_families(self.metrics()):
            for sample in family.samples:
                if sample.name == name and sample.labels == labels:
                    return float(sample.value)
        return 0.0

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self.proc = None

    def log_tail(self, lines: int = 60) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])
