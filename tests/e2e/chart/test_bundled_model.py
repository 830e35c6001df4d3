"""The chart's bundled demo model on the real API server: ``helm install`` with ``bundled.enabled``, the node
agent runs the model pod (``stoa model-server``: SmolLM2-135M on llama.cpp's server) as a local process,
and a chat completion reaches it through the Service ``stoa-model:8080``, the address the debate example's
ModelPolicy uses. Shape only: a 135M model's words are nobody's contract.

Needs the model extra (``make model``), like ``make demo``; without it the pod never gets Ready and the
test fails with the pod's log (``stoa model-server`` says what to install).
"""

from __future__ import annotations

import json
import time
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from stoa_agents.local.embedded import MODEL_ALIAS
from stoa_devenv.cluster import ControlPlane
from tests.e2e.chart.test_chart_install import CHART, helm, kubectl
from tests.e2e.nodeagent.agent import NodeAgent
from tests.e2e.nodeagent.fixtures import NodeAgentFactory
from tests.e2e.kube import Kube

MODEL_SELECTOR = "app.kubernetes.io/component=model"


@pytest.fixture
def release(control_plane: ControlPlane) -> Iterator[tuple[str, str]]:
    """(release, namespace): bundled services with the model; no operator pod (replicas 0) and no
    connection Secret outside the release namespace. RabbitMQ and PostgreSQL stay Pending: the node agent
    runs local commands, not their images, so it only takes the model pod."""
    suffix = uuid.uuid4().hex[:4]
    name, namespace = f"stoa-model-{suffix}", f"stoa-model-{suffix}"
    helm(
        control_plane,
        "install",
        name,
        str(CHART),
        "--namespace",
        namespace,
        "--create-namespace",
        "--skip-crds",  # no custom resources here
        "--set",
        "bundled.enabled=true",
        "--set-json",
        "bundled.agentNamespaces=[]",
        "--set",
        "operator.replicas=0",
    )
    yield name, namespace
    helm(control_plane, "uninstall", name, "--namespace", namespace)
    kubectl(control_plane, "delete", "namespace", namespace, "--wait=false")


def _ready_model_pod(kube: Kube, namespace: str, node: NodeAgent, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pods = kube.get(f"/api/v1/namespaces/{namespace}/pods", labelSelector=MODEL_SELECTOR)["items"]
        for pod in pods:
            conditions = pod.get("status", {}).get("conditions") or []
            if any(c["type"] == "Ready" and c["status"] == "True" for c in conditions):
                return str(pod["metadata"]["name"])
        time.sleep(0.25)
    raise AssertionError(f"no Ready model pod after {timeout:.0f}s\n{node.describe()}")


def _models_through_service(port: int, timeout: float) -> list[str]:
    """GET /v1/models through the Service proxy; it follows the pod's readiness within a node-agent tick,
    and without a backend it closes connections at once, as a Service without endpoints does."""
    deadline = time.monotonic() + timeout
    url = f"http://127.0.0.1:{port}/v1/models"
    while True:
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                return [m["id"] for m in json.loads(response.read())["data"]]
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def _chat(port: int, body: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/chat/completions",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310 (loopback proxy)
        assert response.status == 200
        answer: dict[str, Any] = json.loads(response.read())
    return answer


def test_bundled_model_answers_a_chat_completion_through_its_service(
    control_plane: ControlPlane, release: tuple[str, str], node_agent_factory: NodeAgentFactory
) -> None:
    name, namespace = release
    kube = Kube.from_kubeconfig(control_plane.kubeconfig)
    (service,) = kube.get(f"/api/v1/namespaces/{namespace}/services", labelSelector=MODEL_SELECTOR)["items"]
    assert service["metadata"]["name"] == "stoa-model"
    node = node_agent_factory(namespaces=[namespace], label_selector=MODEL_SELECTOR)

    pod = _ready_model_pod(kube, namespace, node, timeout=60)
    assert pod.startswith(f"{name}-model-")
    # The chart's env port (8080) was remapped to the pod's host port, and the server listens there.
    assert node.pod_env(pod, namespace)["STOA_MODEL_SERVER_PORT_NUMBER"] == str(
        node.pod_port(pod, namespace, "http")
    )

    port = node.service_port("stoa-model", namespace, 8080)  # stoa-model.<namespace>.svc:8080
    assert _models_through_service(port, timeout=5) == [MODEL_ALIAS]
    answer = _chat(
        port,
        {
            "model": MODEL_ALIAS,
            "messages": [
                {"role": "system", "content": "You are brief."},
                {"role": "user", "content": "Say hello."},
            ],
            "max_tokens": 16,
        },
    )
    assert answer["object"] == "chat.completion"
    assert answer["model"] == MODEL_ALIAS
    message = answer["choices"][0]["message"]
    assert message["role"] == "assistant"
    assert isinstance(message["content"], str)
    assert message["content"].strip()
    assert answer["usage"]["prompt_tokens"] > 0
    assert 0 < answer["usage"]["completion_tokens"] <= 16
