"""The operator against a real kube-apiserver + controller-manager: children, status, drift, references."""

from __future__ import annotations

import copy
import functools
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from stoa_devenv.cluster import ControlPlane
from tests.e2e.operator.harness import (
    Cluster,
    OperatorProcess,
    cond,
    load_samples,
    settled,
    wait_for,
    wait_object,
)


@pytest.fixture(scope="module")
def ns(api: client.ApiClient, crds: ControlPlane) -> Iterator[str]:
    name = f"rec-{uuid.uuid4().hex[:6]}"
    client.CoreV1Api(api).create_namespace({"metadata": {"name": name}})
    yield name
    client.CoreV1Api(api).delete_namespace(name)


@pytest.fixture(scope="module")
def kube(api: client.ApiClient, ns: str) -> Cluster:
    return Cluster(api, ns)


@pytest.fixture(scope="module")
def operator(op_kubeconfig: Path, control_plane: ControlPlane, ns: str) -> Iterator[OperatorProcess]:
    proc = OperatorProcess(op_kubeconfig, [ns], control_plane.base / f"operator-{ns}.log").start()
    yield proc
    proc.stop()
    print(f"--- operator log ---\n{proc.log_tail(60)}")


@pytest.fixture(scope="module")
def samples(operator: OperatorProcess, kube: Cluster, ns: str) -> None:
    """The sample ModelPolicy and Agents with their Secrets, applied once for the module and waited for:
    each test that builds on them asks for this fixture, so every test can also run alone."""
    kube.secret(
        "stoa-connections",
        {"postgresDsn": "postgresql://x@127.0.0.1:1/none", "rabbitmqUrl": "amqp://x@127.0.0.1:1/"},
    )
    kube.secret("openai-key", {"apiKey": "sk-test"})
    for doc in load_samples():
        if doc["kind"] != "Conversation":
            kube.create(_plural(doc["kind"]), copy.deepcopy(doc))
    wait_for(lambda: kube.deployment("stoa-gateway"), 30, "gateway Deployment")
    for name in ("pro", "con", "moderator"):
        wait_for(functools.partial(kube.deployment, f"agent-{name}"), 30, f"agent-{name} Deployment")


def _plural(kind: str) -> str:
    return {"ModelPolicy": "modelpolicies", "Agent": "agents", "Conversation": "conversations"}[kind]


def _env(deployment: Any) -> dict[str, Any]:
    return {
        e.name: (e.value if e.value is not None else e.value_from)
        for e in deployment.spec.template.spec.containers[0].env
    }


def test_samples_create_children_and_status(samples: None, kube: Cluster, ns: str) -> None:
    # ModelPolicy: the namespace gateway exists, config rendered, the key env mapped from the Secret.
    gw = wait_for(lambda: kube.deployment("stoa-gateway"), 30, "gateway Deployment")
    env = _env(gw)
    assert env["STOA_KEY_OPENAI_KEY_APIKEY"].secret_key_ref.name == "openai-key"
    cm = kube.core.read_namespaced_config_map("stoa-gateway", ns)
    config = yaml.safe_load(cm.data["gateway.yaml"])
    assert [p["name"] for p in config["policies"]] == ["debate-models"]
    assert "sk-test" not in cm.data["gateway.yaml"]
    assert gw.metadata.owner_references[0].kind == "ModelPolicy"
    mp = wait_object(kube, "modelpolicies", "debate-models", lambda o: settled(o, "Progressing", "True"), 30)
    assert mp["status"]["endpoint"] == f"http://stoa-gateway.{ns}.svc:8080/v1"
    assert [t["name"] for t in mp["status"]["targets"]] == ["primary", "local"]
    assert all(t["circuit"] == "unknown" for t in mp["status"]["targets"])
    assert cond(mp, "Degraded")["status"] == "False"

    # Agents: Deployment agent-<name> running `stoa agent` with the runtime env contract.
    dep = wait_for(lambda: kube.deployment("agent-pro"), 30, "agent Deployment")
    assert dep.spec.replicas == 2
    pod = dep.spec.template.spec
    container = pod.containers[0]
    assert container.command == ["stoa", "agent"]
    assert container.security_context.read_only_root_filesystem is True
    assert pod.security_context.run_as_non_root is True
    assert container.readiness_probe.http_get.path == "/readyz"
    env = _env(dep)
    assert env["STOA_AGENT_NAME"] == "pro"
    assert env["STOA_MODEL_NAME"] == "debate-models"
    assert env["STOA_MODEL_BASE_URL"] == f"http://stoa-gateway.{ns}.svc:8080/v1"
    assert env["STOA_POSTGRES_DSN"].secret_key_ref.name == "stoa-connections"
    assert dep.metadata.owner_references[0].kind == "Agent"
    assert dep.metadata.owner_references[0].controller
    assert kube.core.read_namespaced_service("agent-pro", ns).spec.cluster_ip == "None"
    # No kubelet: pods never become ready, so an Agent settles at Progressing=True/Ready=False (honest).
    for name in ("pro", "con", "moderator"):
        ag = wait_object(kube, "agents", name, lambda o: settled(o, "Progressing", "True", "RollingOut"), 30)
        assert cond(ag, "Ready")["reason"] == "Unavailable"
        assert cond(ag, "Degraded")["status"] == "False"
        assert ag["status"]["queue"] == f"stoa.agent.{ns}.{name}"  # namespace-scoped
        assert cond(ag, "RuntimeSynced")["status"] == "False"  # Postgres unreachable
    events = kube.core.list_namespaced_event(ns).items
    assert any(e.reason == "RuntimeUnavailable" for e in events)


def test_spec_change_rolls_children_and_config_hot_reloads(samples: None, kube: Cluster, ns: str) -> None:
    kube.patch("agents", "con", {"spec": {"replicas": 3, "persona": "You argue against. Briefly."}})
    dep = wait_for(
        lambda: (d := kube.deployment("agent-con")) and d.spec.replicas == 3 and d, 20, "replicas 3"
    )
    assert _env(dep)["STOA_PERSONA"] == "You argue against. Briefly."
    wait_for(lambda: settled(kube.get("agents", "con"), "Progressing", "True"), 20, "observedGeneration 2")

    gw_before = kube.deployment("stoa-gateway")
    kube.patch("modelpolicies", "debate-models", {"spec": {"strategy": "roundRobin"}})
    wait_for(
        lambda: "roundRobin" in kube.core.read_namespaced_config_map("stoa-gateway", ns).data["gateway.yaml"],
        20,
        "config updated",
    )
    wait_for(
        lambda: settled(kube.get("modelpolicies", "debate-models"), "Progressing", "True"), 20, "mp gen 2"
    )
    # Hot reload: the pod template did not change, so no rollout.
    assert kube.deployment("stoa-gateway").metadata.generation == gw_before.metadata.generation


def test_deleted_children_are_restored(samples: None, kube: Cluster, ns: str) -> None:
    old = wait_for(lambda: kube.deployment("agent-moderator"), 30, "agent-moderator")
    kube.apps.delete_namespaced_deployment("agent-moderator", ns)
    kube.core.delete_namespaced_config_map("stoa-gateway", ns)
    new = wait_for(
        lambda: (d := kube.deployment("agent-moderator")) and d.metadata.uid != old.metadata.uid and d,
        20,
        "recreated",
    )
    assert new.spec.replicas == 3
    wait_for(lambda: _has_cm(kube, ns), 20, "gateway ConfigMap recreated")


def _has_cm(kube: Cluster, ns: str) -> bool:
    try:
        kube.core.read_namespaced_config_map("stoa-gateway", ns)
    except client.ApiException:
        return False
    return True


def test_missing_references_degrade_then_recover(samples: None, kube: Cluster, ns: str) -> None:
    agent = {
        "apiVersion": "stoa.dev/v1alpha1",
        "kind": "Agent",
        "metadata": {"name": "judge"},
        "spec": {"role": "judge", "persona": "You judge.", "modelPolicyRef": {"name": "judge-models"}},
    }
    kube.create("agents", agent)
    ag = wait_object(
        kube, "agents", "judge", lambda o: settled(o, "Degraded", "True", "MissingReference"), 20
    )
    assert "ModelPolicy judge-models not found" in cond(ag, "Degraded")["message"]
    assert kube.deployment("agent-judge") is None
    policy = {
        "apiVersion": "stoa.dev/v1alpha1",
        "kind": "ModelPolicy",
        "metadata": {"name": "judge-models"},
        "spec": {
            "targets": [
                {
                    "name": "a",
                    "baseURL": "http://a.invalid/v1",
                    "model": "m",
                    "apiKeySecretRef": {"name": "judge-key", "key": "k"},
                }
            ]
        },
    }
    kube.create("modelpolicies", policy)
    wait_for(lambda: settled(kube.get("agents", "judge"), "Degraded", "False"), 30, "agent recovered")
    assert kube.deployment("agent-judge") is not None
    mp = wait_object(
        kube, "modelpolicies", "judge-models", lambda o: settled(o, "Degraded", "True", "SecretNotFound"), 20
    )
    assert "Secret judge-key not found" in cond(mp, "Degraded")["message"]
    kube.secret("judge-key", {"k": "v"})
    wait_for(
        lambda: settled(kube.get("modelpolicies", "judge-models"), "Degraded", "False"),
        30,
        "policy recovered",
    )
    cm = yaml.safe_load(kube.core.read_namespaced_config_map("stoa-gateway", ns).data["gateway.yaml"])
    assert sorted(p["name"] for p in cm["policies"]) == ["debate-models", "judge-models"]
    gw = kube.deployment("stoa-gateway")
    assert sorted(o.name for o in gw.metadata.owner_references) == ["debate-models", "judge-models"]


def _samples_by_name(text: str, name: str) -> dict[str, float]:
    """Prometheus text: labels string -> value, for every sample of metric ``name``."""
    out = {}
    for line in text.splitlines():
        if line.startswith(name + "{"):
            labels, _, value = line[len(name) :].rpartition(" ")
            out[labels] = float(value)
    return out


def test_operator_metrics_and_liveness(samples: None, operator: OperatorProcess, kube: Cluster) -> None:
    # Settled samples: each kind reconciled successfully at least once (a failing reconcile counts as
    # result="error"/"retry", so this fails if every reconcile failed).
    wait_object(kube, "agents", "pro", lambda o: settled(o, "Progressing", "True"), 30)
    wait_object(kube, "modelpolicies", "debate-models", lambda o: settled(o, "Progressing", "True"), 30)
    text = (
        urllib.request.urlopen(f"http://127.0.0.1:{operator.metrics_port}/metrics", timeout=5).read().decode()
    )
    reconciles = _samples_by_name(text, "stoa_operator_reconciles_total")
    for kind in ("Agent", "ModelPolicy"):
        ok = sum(
            v for labels, v in reconciles.items() if f'kind="{kind}"' in labels and 'result="ok"' in labels
        )
        assert ok >= 1, (kind, reconciles)
    errors = _samples_by_name(text, "stoa_operator_reconcile_errors_total")
    assert not any('error="InvalidSpec"' in labels and v for labels, v in errors.items()), errors
    durations = _samples_by_name(text, "stoa_operator_reconcile_duration_seconds_count")
    assert sum(v for labels, v in durations.items() if 'kind="Agent"' in labels) >= 3  # three sample Agents
    writes = _samples_by_name(text, "stoa_operator_status_writes_total")
    assert sum(writes.values()) >= 4  # a status per sample object, written through the status models
    health = urllib.request.urlopen(f"http://127.0.0.1:{operator.liveness_port}/healthz", timeout=5)
    assert health.status == 200
