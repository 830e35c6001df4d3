"""Services on the node agent: Service addresses in env/args reach the Ready pods through loopback proxies.

Pure rules first (which addresses name a Service, which pods back it, ``--port`` flags), then the real
thing: a 2-replica Deployment behind a ClusterIP Service and a client pod that only knows
``http://web.<ns>.svc:80`` from its env; a deleted backend pod leaves the endpoints at once.
"""

from __future__ import annotations

import subprocess
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from typing import TypeVar

import pytest

from stoa_devenv.cluster import ControlPlane
from stoa_devenv.tools import kubectl_binary
from tests.e2e.manifests import deployment
from tests.e2e.nodeagent import spec
from tests.e2e.nodeagent.agent import NodeAgent
from tests.e2e.nodeagent.fixtures import NodeAgentFactory
from tests.e2e.kube import JSON, Kube
from tests.e2e.nodeagent.services import (
    Backend,
    ServiceKey,
    backend_ports,
    rewrite_service_addresses,
    service_references,
)

T = TypeVar("T")


# ---- pure ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("value", "refs"),
    [
        ("http://stoa-gateway.demo.svc:8080/v1", [ServiceKey("demo", "stoa-gateway", 8080)]),
        ("http://gw.other.svc.cluster.local:80/x", [ServiceKey("other", "gw", 80)]),
        ("amqp://u:p@rabbit.infra.svc:5672/vh", [ServiceKey("infra", "rabbit", 5672)]),
        ("web:80,web.demo:81", [ServiceKey("demo", "web", 80), ServiceKey("demo", "web", 81)]),
        ("unknown:80 unknown.demo:81", []),  # short names only when that Service exists
        ("postgresql://postgres@127.0.0.1:5432/postgres", []),
        ("http://example.com:8080/ x.svc.example:1", []),
        ("web:80x web:http", []),
    ],
)
def test_service_references(value: str, refs: list[ServiceKey]) -> None:
    assert service_references(value, "demo", {("demo", "web")}) == refs


def test_rewrite_service_addresses_only_where_a_proxy_exists() -> None:
    proxies = {ServiceKey("demo", "stoa-gateway", 8080): 41001, ServiceKey("demo", "web", 80): 41002}
    value = "http://stoa-gateway.demo.svc:8080/v1 web:80 web:81 other.demo.svc:1"
    assert rewrite_service_addresses(value, "demo", {("demo", "web")}, proxies) == (
        "http://127.0.0.1:41001/v1 127.0.0.1:41002 web:81 other.demo.svc:1"
    )


def _backend(name: str, ready: bool, ns: str = "demo", app: str = "web") -> Backend:
    containers: list[JSON] = [{"name": "c", "ports": [{"name": "http", "containerPort": 8000}]}]
    port = 41000 + int(name[-1])
    return Backend(ns, name, {"app": app}, containers, {8000: port}, ready)


def test_backend_ports_follow_selector_readiness_and_target_port() -> None:
    service: JSON = {
        "metadata": {"name": "web", "namespace": "demo"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": "http"}]},
    }
    backends = [
        _backend("web-2", True),
        _backend("web-1", True),
        _backend("web-3", False),
        _backend("web-4", True, ns="other"),
        _backend("api-5", True, app="api"),
    ]
    assert backend_ports(service, 80, backends) == [41001, 41002]
    assert backend_ports(service, 81, backends) == []
    assert backend_ports(None, 80, backends) == []
    service["spec"]["publishNotReadyAddresses"] = True
    service["spec"]["ports"] = [{"port": 80, "targetPort": 8000}]
    assert backend_ports(service, 80, backends) == [41001, 41002, 41003]
    service["spec"]["ports"] = [{"port": 9000}]  # targetPort defaults to port, not declared: same number
    assert backend_ports(service, 9000, backends[:1]) == [9000]


def test_port_flags_follow_the_host_port() -> None:
    argv = ["gateway", "--port", "8080", "--metrics-port=9090", "--workers", "8080", "--port", "1"]
    assert spec.rewrite_port_args(argv, {8080: 41000, 9090: 41001}) == [
        *("gateway", "--port", "41000", "--metrics-port=41001", "--workers", "8080", "--port", "1"),
    ]


# ---- on the control plane --------------------------------------------------------------------------------
def wait_for(check: Callable[[], T | None], timeout: float, what: str, node: NodeAgent) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{node.describe()}")


@pytest.fixture
def namespace(control_plane: ControlPlane) -> Iterator[str]:
    kube = Kube.from_kubeconfig(control_plane.kubeconfig)
    name = f"svc-{uuid.uuid4().hex[:6]}"
    kube.create("/api/v1/namespaces", {"metadata": {"name": name}})
    yield name
    kube.delete(f"/api/v1/namespaces/{name}")


def _web(name: str) -> JSON:
    server = (
        "import http.server, os\n"
        "class H(http.server.BaseHTTPRequestHandler):\n"
        "    def do_GET(self):\n"
        "        body = os.environ['POD_NAME'].encode()\n"
        "        self.send_response(200); self.send_header('Content-Length', str(len(body)))\n"
        "        self.end_headers(); self.wfile.write(body)\n"
        "http.server.ThreadingHTTPServer(('127.0.0.1', int(os.environ['WEB_PORT'])), H).serve_forever()\n"
    )
    return deployment(
        name,
        {
            "automountServiceAccountToken": False,
            "terminationGracePeriodSeconds": 5,
            "containers": [
                {
                    "name": "web",
                    "image": "example.invalid/python:3.11",
                    "command": ["python", "-c", server],
                    "env": [
                        {"name": "WEB_PORT", "value": "8000"},
                        {
                            "name": "POD_NAME",
                            "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}},
                        },
                    ],
                    "ports": [{"name": "http", "containerPort": 8000}],
                    "readinessProbe": {"tcpSocket": {"port": "http"}, "periodSeconds": 1},
                }
            ],
        },
    )


CLIENT = (
    "import os, sys, time, urllib.request\n"
    "seen = set()\n"
    "deadline = time.time() + 60\n"
    "while len(seen) < 2 and time.time() < deadline:\n"
    "    for url in (os.environ['WEB_URL'], sys.argv[1]):\n"
    "        try:\n"
    "            seen.add(urllib.request.urlopen(url, timeout=2).read().decode())\n"
    "        except OSError as exc:\n"
    "            print('retry', url, exc, flush=True); time.sleep(0.3)\n"
    "print('served by', ' '.join(sorted(seen)), flush=True)\n"
    "sys.exit(0 if len(seen) == 2 else 1)\n"
)


def test_a_pod_reaches_a_deployment_by_service_name(
    control_plane: ControlPlane, namespace: str, node_agent_factory: NodeAgentFactory
) -> None:
    kube = Kube.from_kubeconfig(control_plane.kubeconfig)
    node = node_agent_factory(namespaces=[namespace])
    base = f"/api/v1/namespaces/{namespace}"
    # The client comes first: its FQDN Service address gets a proxy before the Service exists.
    client: JSON = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "client"},
        "spec": {
            "restartPolicy": "Never",
            "automountServiceAccountToken": False,
            "containers": [
                {
                    "name": "main",
                    "image": "example.invalid/python:3.11",
                    "command": ["python", "-c", CLIENT],
                    "args": [f"http://web.{namespace}.svc.cluster.local:80/"],
                    "env": [{"name": "WEB_URL", "value": f"http://web.{namespace}.svc:80/"}],
                }
            ],
        },
    }
    kube.create(f"{base}/pods", client)

    def prepared() -> bool:
        try:
            return "WEB_URL" in node.pod_env("client", namespace)
        except KeyError:
            return False

    wait_for(prepared, 30, "the client pod prepared", node)
    env = node.pod_env("client", namespace)
    proxy = node.service_port("web", namespace, 80)
    assert env["WEB_URL"] == f"http://127.0.0.1:{proxy}/"
    kube.create(f"/apis/apps/v1/namespaces/{namespace}/deployments", _web("web"))
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]},
    }
    kube.create(f"{base}/services", service)

    def phase() -> str | None:
        current = kube.get(f"{base}/pods/client")["status"].get("phase")
        return current if current in ("Succeeded", "Failed") else None

    assert wait_for(phase, 90, "the client pod to finish", node) == "Succeeded", node.logs(
        "client", namespace
    )
    assert "served by web-" in node.logs("client", namespace)

    # A deleted backend leaves the Service at once: no request lands on it any more.
    pods = kube.get(f"{base}/pods", labelSelector="app=web")["items"]
    victim = sorted(p["metadata"]["name"] for p in pods)[0]
    victim_port = node.pod_port(victim, namespace, "http")
    proxy_state = node.services.proxies[ServiceKey(namespace, "web", 80)]
    assert victim_port in proxy_state.backends
    subprocess.run(
        [
            *(str(kubectl_binary()), "--kubeconfig", str(control_plane.kubeconfig), "-n", namespace),
            *("delete", "pod", victim, "--wait=false"),
        ],
        check=True,
        capture_output=True,
    )
    wait_for(lambda: victim_port not in proxy_state.backends, 10, "the deleted pod out of the Service", node)
    for _ in range(4):
        with urllib.request.urlopen(f"http://127.0.0.1:{proxy}/", timeout=5) as resp:
            assert resp.read().decode() != victim
