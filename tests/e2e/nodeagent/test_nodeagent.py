"""The node agent runs a real Deployment's Pods as local processes on the real control plane.

A 2-replica Deployment of ``python -m http.server`` (port from env, content from a ConfigMap volume, a
Secret and the downward API in its env, an httpGet readiness probe): both pods Running and Ready; the
ConfigMap change reaches the files; ``kubectl delete pod`` -> graceful stop and a replacement from the
ReplicaSet; kill -9 -> the container restarts and restartCount goes up.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest

from stoa_devenv.cluster import ControlPlane
from stoa_devenv.tools import kubectl_binary
from tests.e2e.manifests import deployment
from tests.e2e.nodeagent.agent import NodeAgent
from tests.e2e.kube import JSON, Kube, KubeError

T = TypeVar("T")


def wait_for(check: Callable[[], T | None], timeout: float, what: str, node: NodeAgent | None = None) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    detail = f"\n{node.describe()}" if node else ""
    raise AssertionError(f"timed out after {timeout}s waiting for {what}{detail}")


@pytest.fixture(scope="module")
def kube(control_plane: ControlPlane) -> Kube:
    return Kube.from_kubeconfig(control_plane.kubeconfig)


@pytest.fixture(scope="module")
def namespace(kube: Kube) -> Iterator[str]:
    name = f"node-{uuid.uuid4().hex[:6]}"
    kube.create("/api/v1/namespaces", {"metadata": {"name": name}})
    wait_for(lambda: kube.get_or_none(f"/api/v1/namespaces/{name}/serviceaccounts/default"), 30, "default SA")
    yield name
    kube.delete(f"/api/v1/namespaces/{name}")


@pytest.fixture(scope="module")
def node(
    control_plane: ControlPlane, namespace: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[NodeAgent]:
    agent = NodeAgent(
        control_plane.kubeconfig, namespaces=[namespace], workdir=tmp_path_factory.mktemp("node")
    ).start()
    yield agent
    print(agent.describe())
    agent.stop()


def _deployment(name: str) -> JSON:
    return deployment(
        name,
        {
            "terminationGracePeriodSeconds": 5,
            "containers": [
                {
                    "name": "web",
                    "image": "example.invalid/python:3.11",
                    "command": ["python", "-m", "http.server"],
                    "args": ["$(WEB_PORT)", "--bind", "127.0.0.1", "--directory", "/srv/www"],
                    "env": [
                        {"name": "WEB_PORT", "value": "8000"},
                        {
                            "name": "POD_NAME",
                            "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}},
                        },
                        {
                            "name": "GREETING",
                            "valueFrom": {"secretKeyRef": {"name": "web-secret", "key": "greeting"}},
                        },
                        {"name": "MESSAGE", "value": "$(GREETING) from $(POD_NAME)"},
                    ],
                    "ports": [{"name": "http", "containerPort": 8000}],
                    "readinessProbe": {
                        "httpGet": {"path": "/index.html", "port": "http"},
                        "periodSeconds": 1,
                        "failureThreshold": 1,
                    },
                    "volumeMounts": [{"name": "www", "mountPath": "/srv/www"}],
                }
            ],
            "volumes": [{"name": "www", "configMap": {"name": "web-content"}}],
        },
    )


def _pods(kube: Kube, namespace: str, app: str) -> list[JSON]:
    items: list[JSON] = kube.get(f"/api/v1/namespaces/{namespace}/pods", labelSelector=f"app={app}")["items"]
    return items


def _ready(pod: JSON) -> bool:
    status = pod.get("status") or {}
    conditions = {c["type"]: c["status"] for c in status.get("conditions") or []}
    return (
        status.get("phase") == "Running"
        and conditions.get("Ready") == "True"
        and not pod["metadata"].get("deletionTimestamp")
    )


def _ready_pods(kube: Kube, namespace: str, app: str, count: int) -> list[JSON] | None:
    pods = [p for p in _pods(kube, namespace, app) if _ready(p)]
    return pods if len(pods) == count else None


def _get(port: int, path: str = "/index.html") -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as resp:
        body: bytes = resp.read()
    return body.decode()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture(scope="module")
def web(kube: Kube, namespace: str, node: NodeAgent) -> list[JSON]:
    base = f"/api/v1/namespaces/{namespace}"
    kube.create(f"{base}/configmaps", {"metadata": {"name": "web-content"}, "data": {"index.html": "v1"}})
    kube.create(f"{base}/secrets", {"metadata": {"name": "web-secret"}, "stringData": {"greeting": "hello"}})
    kube.create(f"/apis/apps/v1/namespaces/{namespace}/deployments", _deployment("web"))
    return wait_for(lambda: _ready_pods(kube, namespace, "web", 2), 60, "2 Running+Ready web pods", node)


def test_deployment_pods_run_ready_on_their_own_ports(
    kube: Kube, namespace: str, node: NodeAgent, web: list[JSON]
) -> None:
    ports = set()
    for pod in web:
        name = pod["metadata"]["name"]
        assert pod["spec"]["nodeName"] == node.name
        assert pod["status"]["podIP"] == "127.0.0.1"
        (status,) = pod["status"]["containerStatuses"]
        assert status["ready"] is True
        assert status["started"] is True
        assert status["restartCount"] == 0
        assert "running" in status["state"]
        port = node.pod_port(name, namespace, "http")
        assert port != 8000
        ports.add(port)
        assert _get(port) == "v1"
        env = node.pod_env(name, namespace)
        assert env["WEB_PORT"] == str(port)
        assert env["MESSAGE"] == f"hello from {name}"
    assert len(ports) == 2
    deployment = kube.get(f"/apis/apps/v1/namespaces/{namespace}/deployments/web")
    wait_for(
        lambda: (
            kube.get(f"/apis/apps/v1/namespaces/{namespace}/deployments/web")["status"].get(
                "availableReplicas"
            )
            == 2
        ),
        30,
        "Deployment availableReplicas=2",
    )
    assert deployment["metadata"]["name"] == "web"
    node_obj = kube.get(f"/api/v1/nodes/{node.name}")
    ready = next(c for c in node_obj["status"]["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "True"


def test_configmap_change_reaches_the_volume(
    kube: Kube, namespace: str, node: NodeAgent, web: list[JSON]
) -> None:
    kube.patch(
        f"/api/v1/namespaces/{namespace}/configmaps/web-content",
        {"data": {"index.html": "v2"}},
        "merge-patch",
    )
    port = node.pod_port(web[0]["metadata"]["name"], namespace, "http")
    wait_for(lambda: _get(port) == "v2", 15, "the new ConfigMap content served", node)


def test_kubectl_delete_pod_stops_it_gracefully_and_the_replicaset_replaces_it(
    control_plane: ControlPlane, kube: Kube, namespace: str, node: NodeAgent, web: list[JSON]
) -> None:
    victim = web[0]["metadata"]["name"]
    pid = int(wait_for(lambda: _pid(kube, namespace, victim), 10, "victim containerID"))
    started = time.monotonic()
    subprocess.run(
        [
            *(str(kubectl_binary()), "--kubeconfig", str(control_plane.kubeconfig), "-n", namespace),
            *("delete", "pod", victim, "--wait=true", "--timeout=60s"),
        ],
        check=True,
        capture_output=True,
        timeout=90,
    )
    assert time.monotonic() - started < 5  # SIGTERM stops http.server at once: no wait for the grace period
    assert not _alive(pid)
    pods = wait_for(lambda: _ready_pods(kube, namespace, "web", 2), 60, "a replacement pod, Ready", node)
    names = {p["metadata"]["name"] for p in pods}
    assert victim not in names
    for name in names:
        assert _get(node.pod_port(name, namespace, "http")) == "v2"


def _pid(kube: Kube, namespace: str, name: str) -> int | None:
    try:
        pod = kube.get(f"/api/v1/namespaces/{namespace}/pods/{name}")
    except KubeError:
        return None
    statuses = pod["status"].get("containerStatuses") or []
    cid = statuses[0].get("containerID", "") if statuses else ""
    return int(cid.rsplit("/", 1)[-1]) if cid else None


def test_kill_9_restarts_the_container_and_counts_it(kube: Kube, namespace: str, node: NodeAgent) -> None:
    pods = wait_for(lambda: _ready_pods(kube, namespace, "web", 2), 60, "2 ready pods", node)
    name = pods[0]["metadata"]["name"]
    old_pid = node.kill_pod_process(name, namespace, sig=signal.SIGKILL)

    def restarted() -> dict[str, Any] | None:
        pod = kube.get(f"/api/v1/namespaces/{namespace}/pods/{name}")
        (status,) = pod["status"]["containerStatuses"]
        return status if status["restartCount"] == 1 and _ready(pod) else None

    status = wait_for(restarted, 30, "restartCount=1 and Ready again", node)
    assert status["lastState"]["terminated"]["exitCode"] == 137
    assert status["containerID"] != f"stoa-node://{old_pid}"
    assert _get(node.pod_port(name, namespace, "http")) == "v2"
    # The same pod, not a replacement.
    assert name in {p["metadata"]["name"] for p in _pods(kube, namespace, "web")}


def test_restart_policy_never_reports_the_exit_code(kube: Kube, namespace: str, node: NodeAgent) -> None:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "once", "labels": {"app": "once"}},
        "spec": {
            "restartPolicy": "Never",
            "automountServiceAccountToken": False,
            "containers": [
                {
                    "name": "main",
                    "image": "example.invalid/python:3.11",
                    "command": ["python", "-c", "import sys; print('bye'); sys.exit(3)"],
                }
            ],
        },
    }
    kube.create(f"/api/v1/namespaces/{namespace}/pods", pod)

    def failed() -> JSON | None:
        current = kube.get(f"/api/v1/namespaces/{namespace}/pods/once")
        return current if current["status"].get("phase") == "Failed" else None

    current = wait_for(failed, 30, "phase=Failed", node)
    (status,) = current["status"]["containerStatuses"]
    assert status["state"]["terminated"]["exitCode"] == 3
    assert status["restartCount"] == 0
    assert "bye" in node.logs("once", namespace)
