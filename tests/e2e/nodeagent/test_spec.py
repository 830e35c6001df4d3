"""The node agent's pure Pod-spec translation (no cluster): env, ports, paths, argv, probes, phases."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from tests.e2e.nodeagent import spec

POD: dict[str, Any] = {
    "metadata": {"name": "web-1", "namespace": "demo", "uid": "u1", "labels": {"app": "web"}},
    "spec": {"nodeName": "n1", "containers": []},
}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("$(A)-$(B)", "1-$(B)"),
        ("$$(A)", "$(A)"),
        ("$A", "$A"),
        ("x$(A)y", "x1y"),
    ],
)
def test_expand_follows_kubernetes_rules(value: str, expected: str) -> None:
    assert spec.expand(value, {"A": "1"}) == expected


def test_env_resolution_with_refs_ports_and_expansion() -> None:
    container = {
        "name": "c",
        "env": [
            {"name": "STOA_METRICS_PORT", "value": "9090"},
            {"name": "OTHER_PORT", "value": "1234"},
            {"name": "REPLICAS", "value": "9090"},
            {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
            {"name": "URL", "valueFrom": {"secretKeyRef": {"name": "conn", "key": "rabbitmqUrl"}}},
            {"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "mode"}}},
            {"name": "GONE", "valueFrom": {"secretKeyRef": {"name": "nope", "key": "k", "optional": True}}},
            {"name": "ADDR", "value": "$(IP):$(STOA_METRICS_PORT)"},
        ],
        "envFrom": [{"configMapRef": {"name": "cfg"}, "prefix": "CFG_"}],
    }
    sources = {
        ("Secret", "conn"): {"data": {"rabbitmqUrl": base64.b64encode(b"amqp://x").decode()}},
        ("ConfigMap", "cfg"): {"data": {"mode": "fast"}},
    }
    env = spec.resolve_env(POD, container, sources, {9090: 41000})
    assert env == {
        "CFG_mode": "fast",
        "STOA_METRICS_PORT": "41000",
        "OTHER_PORT": "1234",
        "REPLICAS": "9090",  # not a *_PORT variable: left alone
        "POD": "web-1",
        "IP": "127.0.0.1",
        "APP": "web",
        "URL": "amqp://x",
        "MODE": "fast",
        "ADDR": "127.0.0.1:41000",
    }


def test_missing_required_reference_blocks_the_container() -> None:
    container = {
        "name": "c",
        "env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}],
    }
    with pytest.raises(spec.MissingReferenceError, match="Secret s not found"):
        spec.resolve_env(POD, container, {}, {})


def test_paths_and_argv() -> None:
    mounts = {"/etc/stoa": "/tmp/v/cfg", "/etc/stoa/keys": "/tmp/v/keys", "/tmp": "/tmp/v/tmp"}
    assert spec.rewrite_paths("--config=/etc/stoa/gateway.yaml", mounts) == "--config=/tmp/v/cfg/gateway.yaml"
    assert spec.rewrite_paths("/etc/stoa/keys/a", mounts) == "/tmp/v/keys/a"
    assert spec.rewrite_paths("/etc/stoamore /x/etc/stoa", mounts) == "/etc/stoamore /x/etc/stoa"
    assert spec.rewrite_paths("/tmp", mounts) == "/tmp/v/tmp"  # one pass: the result is not rewritten again
    container = {"name": "g", "args": ["gateway", "--config", "/etc/stoa/gateway.yaml", "--port", "$(P)"]}
    argv = spec.command_argv(container, {"P": "41001"}, mounts, ["stoa"], {"stoa": ["/venv/bin/stoa"]})
    assert argv == ["/venv/bin/stoa", "gateway", "--config", "/tmp/v/cfg/gateway.yaml", "--port", "41001"]
    python = spec.command_argv(
        {"name": "p", "command": ["/usr/bin/python3", "-V"]}, {}, {}, [], {"python3": ["/py"]}
    )
    assert python == ["/py", "-V"]


def test_probe_targets_use_host_ports() -> None:
    container = {"name": "c", "ports": [{"name": "metrics", "containerPort": 9090}]}
    ports = {9090: 41000}
    http = spec.probe_target({"httpGet": {"path": "/ready", "port": "metrics"}}, container, ports)
    assert http == spec.ProbeTarget("http", 41000, "/ready")
    assert spec.probe_target({"tcpSocket": {"port": 9090}}, container, ports) == spec.ProbeTarget(
        "tcp", 41000
    )
    assert spec.probe_target({"exec": {"command": ["true"]}}, container, ports) == spec.ProbeTarget(
        "exec", command=("true",)
    )


def test_volume_files_with_items_and_binary_data() -> None:
    sources = {("ConfigMap", "cfg"): {"data": {"a": "1", "b": "2"}, "binaryData": {"c": "Mw=="}}}
    assert spec.volume_files({"name": "v", "configMap": {"name": "cfg"}}, sources) == {
        "a": "1",
        "b": "2",
        "c": "3",
    }
    items = {"name": "v", "configMap": {"name": "cfg", "items": [{"key": "a", "path": "sub/x.yaml"}]}}
    assert spec.volume_files(items, sources) == {"sub/x.yaml": "1"}


@pytest.mark.parametrize(
    ("policy", "states", "phase"),
    [
        ("Always", [{"waiting": {}, "ever_started": False}], "Pending"),
        ("Always", [{"running": {}, "ever_started": True}], "Running"),
        ("Always", [{"waiting": {}, "ever_started": True}], "Running"),
        ("Never", [{"terminated": {"exitCode": 0}, "final": True}], "Succeeded"),
        ("OnFailure", [{"terminated": {"exitCode": 2}, "final": True}], "Failed"),
    ],
)
def test_pod_phase(policy: str, states: list[dict[str, Any]], phase: str) -> None:
    assert spec.pod_phase(policy, states) == phase


def test_restart_and_backoff() -> None:
    assert spec.should_restart("Always", 0)
    assert spec.should_restart("OnFailure", 137)
    assert not spec.should_restart("OnFailure", 0)
    assert not spec.should_restart("Never", 1)
    assert [spec.next_backoff(n, 0.5, 5) for n in range(6)] == [0.0, 0.5, 1.0, 2.0, 4.0, 5.0]
    assert spec.exit_code_of(-9) == 137
