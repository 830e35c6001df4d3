"""Builders: pure functions of their inputs, checked as tables and against golden YAML."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from stoa_api.agent import AgentSpec
from stoa_gateway.policy import ModelPolicySpec
from stoa_operator.builders.agent import AgentInputs, build_agent
from stoa_operator.builders.common import Owner
from stoa_operator.builders.gateway import GatewayInputs, build_gateway, key_envs, render_config
from stoa_operator.k8s.resources import resource_for

GOLDEN = Path(__file__).parent / "golden"
OWNER = Owner("stoa.dev/v1alpha1", "Agent", "pro", "uid-1", "ns").reference()


def _agent_inputs(**spec: Any) -> AgentInputs:
    base = {"role": "pro", "persona": "Argue for.", "modelPolicyRef": {"name": "models"}}
    return AgentInputs(
        name="pro",
        namespace="ns",
        spec=AgentSpec.model_validate(base | spec),
        owner=OWNER,
        image="img:1",
        connection_secret="stoa-connections",
        model_base_url="http://stoa-gateway.ns.svc:8080/v1",
    )


def _policy(**extra: Any) -> ModelPolicySpec:
    return ModelPolicySpec.model_validate(
        {
            "targets": [
                {
                    "name": "a",
                    "baseURL": "https://a/v1",
                    "model": "m",
                    "apiKeySecretRef": {"name": "k", "key": "key"},
                }
            ]
        }
        | extra
    )


def _golden(name: str, docs: list[dict[str, Any]]) -> None:
    text = yaml.safe_dump_all(docs, sort_keys=True)
    path = GOLDEN / name
    if os.environ.get("STOA_UPDATE_GOLDEN") or not path.exists():
        path.parent.mkdir(exist_ok=True)
        path.write_text(text)
    assert text == path.read_text(), f"{name} changed; rerun with STOA_UPDATE_GOLDEN=1 if intended"


def test_agent_children_golden() -> None:
    _golden("agent.yaml", build_agent(_agent_inputs(replicas=3, env=[{"name": "LOG", "value": "json"}])))


def test_gateway_children_golden() -> None:
    inputs = GatewayInputs(namespace="ns", policies={"models": _policy()}, owners=[OWNER], image="img:1")
    _golden("gateway.yaml", build_gateway(inputs))


def test_builders_are_pure() -> None:
    assert build_agent(_agent_inputs()) == build_agent(_agent_inputs())


def test_every_child_kind_is_declared_for_rbac() -> None:
    inputs = GatewayInputs(namespace="ns", policies={"models": _policy()}, owners=[OWNER], image="img:1")
    for child in [*build_agent(_agent_inputs()), *build_gateway(inputs)]:
        assert "patch" in resource_for(child["apiVersion"], child["kind"]).verbs


def _env(deployment: dict[str, Any]) -> dict[str, Any]:
    return {
        e["name"]: e.get("value", e.get("valueFrom"))
        for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]
    }


def test_agent_env_follows_the_runtime_contract() -> None:
    deployment = build_agent(_agent_inputs(fallbackPolicies=[{"name": "cheap"}]))[-1]
    env = _env(deployment)
    assert env["STOA_AGENT_NAME"] == "pro"
    assert env["STOA_MODEL_NAME"] == "models"
    assert env["STOA_MODEL_FALLBACKS"] == "cheap"  # the runtime's name (was a dead copy before)
    assert "STOA_MODEL_FALLBACK_POLICIES" not in env
    assert env["STOA_POD_NAME"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert env["STOA_RABBITMQ_URL"] == {"secretKeyRef": {"name": "stoa-connections", "key": "rabbitmqUrl"}}
    assert env["STOA_MEMORY_RETENTION_DAYS"] == "30"


def test_agent_resources_default_and_override() -> None:
    default = build_agent(_agent_inputs())[-1]["spec"]["template"]["spec"]["containers"][0]["resources"]
    assert default == {"requests": {"cpu": "50m", "memory": "128Mi"}, "limits": {"memory": "256Mi"}}
    custom = build_agent(_agent_inputs(resources={"requests": {"cpu": "1"}}))[-1]
    assert custom["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"] == {"cpu": "1"}


def test_gateway_config_change_does_not_touch_the_pod_template() -> None:
    before = GatewayInputs(namespace="ns", policies={"models": _policy()}, owners=[OWNER], image="img:1")
    after = GatewayInputs(
        namespace="ns", policies={"models": _policy(strategy="roundRobin")}, owners=[OWNER], image="img:1"
    )
    assert build_gateway(before)[1]["data"] != build_gateway(after)[1]["data"]
    assert build_gateway(before)[-1] == build_gateway(after)[-1]


def test_api_keys_are_env_from_secrets_never_config() -> None:
    inputs = GatewayInputs(namespace="ns", policies={"models": _policy()}, owners=[OWNER], image="img:1")
    env = _env(build_gateway(inputs)[-1])
    assert env["STOA_KEY_K_KEY"] == {"secretKeyRef": {"name": "k", "key": "key", "optional": True}}
    assert "secretKeyRef" not in render_config({"models": _policy()})


def test_key_env_conflicts_are_reported() -> None:
    other = ModelPolicySpec.model_validate(
        {
            "targets": [
                {
                    "name": "b",
                    "baseURL": "https://b/v1",
                    "model": "m",
                    "apiKeyEnv": "STOA_KEY_K_KEY",
                    "apiKeySecretRef": {"name": "z", "key": "key"},
                }
            ]
        }
    )
    keys, conflicts = key_envs({"a-models": _policy(), "b-models": other})
    assert [k.secret for k in keys] == ["k"]
    assert "b-models" in conflicts
