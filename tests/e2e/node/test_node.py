"""The test bed's node itself, with the Stoa image: pods run non-root on a read-only root filesystem and
get Ready by their probes; Services route host -> Service, pod -> Service and pod -> pod; cluster DNS
names them; in-cluster config works; ``kubectl logs/exec`` reach the kubelet; and nothing leaves the
machine (a pod's packet to another interface and a packet to a Service address nobody serves are
rejected at once, names outside the cluster do not resolve)."""

from __future__ import annotations

import functools
import socket
import subprocess
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import yaml

from tests.e2e.manifests import deployment
from tests.e2e.node.bed import Bed, pod_ready, wait_for

SECURE_CONTAINER = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "runAsNonRoot": True,
    "capabilities": {"drop": ["ALL"]},
}
# A documentation-range address routed into a dead end of the test bed's own: a veth pair whose peer sits
# alone in a network namespace of its own. A packet the guard failed to reject would die there, never
# leave the machine.
PROBE_NET = "203.0.113.0/24"
PROBE_ADDRESS = "203.0.113.7"
PROBE_IFACE = "stoa-probe0"
PROBE_NETNS = "stoa-probe"


def _web(bed: Bed, name: str) -> dict[str, Any]:
    """A Deployment of one pod serving HTTP on 8080 from the Stoa image, with a readiness probe."""
    pod_spec = {
        "enableServiceLinks": False,
        "securityContext": {
            "runAsUser": 10001,
            "runAsGroup": 10001,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [
            {
                "name": "web",
                "image": bed.images["stoa"],
                "imagePullPolicy": "Never",
                "command": ["python", "-m", "http.server", "8080", "--directory", "/opt/stoa"],
                "ports": [{"name": "http", "containerPort": 8080}],
                "readinessProbe": {"httpGet": {"path": "/", "port": "http"}, "periodSeconds": 1},
                "securityContext": SECURE_CONTAINER,
            }
        ],
    }
    return deployment(name, pod_spec, replicas=1)


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:  # noqa: S310 (test bed address)
            return int(resp.status) == 200
    except OSError:
        return False


def _service(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name},
        "spec": {"selector": {"app": name}, "ports": [{"port": 80, "targetPort": "http"}]},
    }


def _run_pod(bed: Bed, namespace: str, name: str, script: str, **spec: Any) -> str:
    """Run ``python -c script`` in a pod of the Stoa image to completion; return its log."""
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "restartPolicy": "Never",
            "enableServiceLinks": False,
            "securityContext": {"runAsUser": 10001, "runAsGroup": 10001},
            "containers": [
                {
                    "name": "main",
                    "image": bed.images["stoa"],
                    "imagePullPolicy": "Never",
                    "command": ["python", "-c", script],
                    "securityContext": SECURE_CONTAINER,
                }
            ],
            **spec,
        },
    }
    bed.kubectl("apply", "-n", namespace, "-f", "-", stdin=yaml.safe_dump(pod))

    def finished() -> str | None:
        phase = bed.get("pod", name, "-n", namespace)["status"].get("phase")
        return phase if phase in ("Succeeded", "Failed") else None

    phase = wait_for(finished, 120, f"pod {name} to finish")
    log = bed.kubectl("logs", "-n", namespace, name)
    assert phase == "Succeeded", f"pod {name} {phase}:\n{log}"
    return log


@pytest.fixture
def web(bed: Bed, bed_namespace: Callable[[str], str]) -> tuple[str, dict[str, Any]]:
    namespace = bed_namespace("node")
    docs = [_web(bed, "web"), _service("web")]
    bed.kubectl("apply", "-n", namespace, "-f", "-", stdin=yaml.safe_dump_all(docs))

    def ready_pod() -> dict[str, Any] | None:
        pods = bed.pods(namespace, "app=web")
        return pods[0] if pods and pod_ready(pods[0]) else None

    return namespace, wait_for(ready_pod, 120, "the web pod Running and Ready")


def test_pod_runs_non_root_on_a_read_only_root_and_is_served_by_its_service(
    bed: Bed, web: tuple[str, dict[str, Any]]
) -> None:
    namespace, pod = web
    assert pod["status"]["phase"] == "Running"
    assert pod["spec"]["nodeName"] == "stoa-node"
    assert pod["status"]["podIP"].startswith("10.244.0.")
    # kubectl exec and logs go through the API server to the kubelet (webhook authn/authz).
    identity = bed.kubectl("exec", "-n", namespace, pod["metadata"]["name"], "--", "id", "-u").strip()
    assert identity == "10001"
    touch = bed.kubectl(
        "exec", "-n", namespace, pod["metadata"]["name"], "--", "python", "-c",
        "open('/opt/stoa/x', 'w')", check=False,
    )  # fmt: skip
    assert "Read-only file system" in touch
    assert "GET / HTTP/1.1" in bed.kubectl("logs", "-n", namespace, pod["metadata"]["name"])
    # host -> Service (kube-proxy's DNAT, programmed asynchronously after the endpoint turns Ready: until
    # then the guard refuses the unknown ClusterIP) and host -> pod.
    cluster_ip = bed.get("service", "web", "-n", namespace)["spec"]["clusterIP"]
    for url in (f"http://{cluster_ip}/", f"http://{pod['status']['podIP']}:8080/"):
        assert wait_for(functools.partial(_http_ok, url), 30, f"GET {url}")


def test_pods_reach_services_by_cluster_dns_and_the_api_server_in_cluster(
    bed: Bed, web: tuple[str, dict[str, Any]]
) -> None:
    namespace, pod = web
    account = {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {"name": "reader"},
    }
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {"name": "reader"},
        "rules": [{"apiGroups": [""], "resources": ["services"], "verbs": ["get"]}],
    }
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": "reader"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "reader"},
        "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": namespace}],
    }
    bed.kubectl("apply", "-n", namespace, "-f", "-", stdin=yaml.safe_dump_all([account, role, binding]))
    script = f"""
import socket, time, urllib.request
from kubernetes import client, config
def get(url):
    for _ in range(60):  # kube-proxy programs a new Service asynchronously
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                return resp.status
        except OSError:
            time.sleep(0.5)
    return None
for name in ("web", "web.{namespace}", "web.{namespace}.svc", "web.{namespace}.svc.cluster.local"):
    print(name, get(f"http://{{name}}/"), socket.gethostbyname(name))
with urllib.request.urlopen("http://{pod["status"]["podIP"]}:8080/", timeout=5) as resp:
    print("pod", resp.status)
config.load_incluster_config()
svc = client.CoreV1Api().read_namespaced_service("web", "{namespace}")
print("in-cluster", svc.spec.cluster_ip)
"""
    log = _run_pod(bed, namespace, "client", script, serviceAccountName="reader")
    cluster_ip = bed.get("service", "web", "-n", namespace)["spec"]["clusterIP"]
    for name in ("web", f"web.{namespace}", f"web.{namespace}.svc", f"web.{namespace}.svc.cluster.local"):
        assert f"{name} 200 {cluster_ip}" in log, log
    assert "pod 200" in log
    assert f"in-cluster {cluster_ip}" in log


@pytest.fixture
def probe_interface() -> Iterator[None]:
    subprocess.run(["ip", "netns", "add", PROBE_NETNS], check=True)
    try:
        subprocess.run(
            [
                "ip",
                "link",
                "add",
                PROBE_IFACE,
                "type",
                "veth",
                "peer",
                "name",
                "stoa-probe1",
                "netns",
                PROBE_NETNS,
            ],
            check=True,
        )
        subprocess.run(["ip", "-n", PROBE_NETNS, "link", "set", "stoa-probe1", "up"], check=True)
        subprocess.run(["ip", "link", "set", PROBE_IFACE, "up"], check=True)
        subprocess.run(["ip", "route", "add", PROBE_NET, "dev", PROBE_IFACE], check=True)
        yield
    finally:
        subprocess.run(["ip", "link", "delete", PROBE_IFACE], check=False)
        subprocess.run(["ip", "netns", "delete", PROBE_NETNS], check=False)


@pytest.mark.usefixtures("probe_interface")
def test_nothing_leaves_the_machine(bed: Bed, bed_namespace: Callable[[str], str]) -> None:
    namespace = bed_namespace("guard")
    script = f"""
import socket
def connect(host, port):
    try:
        socket.create_connection((host, port), timeout=5).close()
        return "connected"
    except OSError as exc:
        return type(exc).__name__
print("other-interface", connect("{PROBE_ADDRESS}", 80))
print("unknown-service", connect("10.96.0.250", 80))
try:
    socket.gethostbyname("example.com")
    print("external-dns resolved")
except OSError as exc:
    print("external-dns", type(exc).__name__)
"""
    log = _run_pod(bed, namespace, "leak", script)
    # Rejected by the guard (an immediate refusal), not dropped or sent anywhere.
    assert "other-interface ConnectionRefusedError" in log, log
    assert "unknown-service ConnectionRefusedError" in log, log
    assert "external-dns gaierror" in log, log
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("10.96.0.250", 80), timeout=5)
