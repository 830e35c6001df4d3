"""The env seam between the operator and the runtime: the Deployment an Agent gets, its env resolved as a
kubelet would (Secrets, downward API, Service links), loaded into the runtime's own settings, yields what
the Agent spec asked for; ``stoa run`` builds the same settings from the same builder."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

import pytest

from stoa_agents.cli import agent_main
from stoa_agents.envcontract import SPEC_ENV, TUNABLE_ENV
from stoa_agents.local.wiring import LocalPlan, agent_envs
from stoa_agents.runtime import model_config
from stoa_agents.settings import AgentSettings
from stoa_api.agent import NEEDS_POLICY, AgentSpec
from stoa_api.conversation import ConversationSpec
from stoa_gateway.cli import main as gateway_main
from stoa_gateway.settings import GatewaySettings
from stoa_operator.builders.agent import AgentInputs, build_deployment
from stoa_operator.builders.common import Owner, gateway_endpoint
from stoa_operator.builders.gateway import GatewayInputs
from stoa_operator.builders.gateway import build_deployment as build_gateway_deployment
from stoa_operator.cli import run as operator_main
from stoa_operator.settings import OperatorSettings
from stoa_settings import (
    DEVELOPER_VARIABLES,
    UnknownSettingError,
    env_names,
    is_service_link_name,
    service_of_link,
)
from stoa_testing.kubelet import PodIdentity, Service, ServicePort, container_env
from stoa_web.settings import ApiSettings

NAMESPACE = "team-ns"
SECRETS = {
    "stoa-connections": {"rabbitmqUrl": "amqp://u:p@mq.team-ns:5672/", "postgresDsn": "postgresql://db/x"}
}
# A namespace as the real-node issue found it: Services whose links are STOA_* names.
SERVICES = [
    Service("stoa-gateway", "10.96.0.22", [ServicePort(8080, "http")]),
    Service("stoa-model", "10.96.0.23", [ServicePort(8080, "http")]),
    Service("stoa-metrics", "10.96.0.24", [ServicePort(9090, "metrics")]),
]
OWNER = Owner("stoa.dev/v1alpha1", "Agent", "ada", "uid-1", NAMESPACE).reference()
BASE: dict[str, Any] = {"role": "pro", "persona": "Argue for.", "modelPolicyRef": {"name": "debate"}}


def _deployment(spec: dict[str, Any]) -> dict[str, Any]:
    inputs = AgentInputs(
        name="ada",
        namespace=NAMESPACE,
        spec=AgentSpec.model_validate(spec),
        owner=OWNER,
        image="stoa:1",
        connection_secret="stoa-connections",
        model_base_url=gateway_endpoint(NAMESPACE, 8080),
    )
    return build_deployment(inputs)


def _pod_env(deployment: dict[str, Any]) -> dict[str, str]:
    pod_spec = deployment["spec"]["template"]["spec"]
    pod = PodIdentity(name="agent-ada-7d9f-x2", namespace=NAMESPACE)
    return container_env(pod_spec, pod_spec["containers"][0], pod, secrets=SECRETS, services=SERVICES)


def _operator_settings(spec: dict[str, Any]) -> AgentSettings:
    return AgentSettings.from_environ(_pod_env(_deployment(spec)))


def _local_settings(spec: dict[str, Any]) -> AgentSettings:
    args = argparse.Namespace(max_tokens=90, history_turns=None, model_api_key_env=None)
    conversation = ConversationSpec.model_validate({"topic": "t", "participants": [{"agentRef": "ada"}]})
    plan = LocalPlan({"ada": AgentSpec.model_validate(spec)}, {}, {"c": conversation})
    envs = agent_envs(
        plan,
        args=args,
        gateway_url="http://127.0.0.1:41000/v1",
        model_url="http://127.0.0.1:42000/v1",
        default_model="smollm2-135m",
        rabbitmq_url="amqp://local/",
        postgres_url="postgresql://local/db",
    )
    return AgentSettings.from_environ({**envs["ada"], "STOA_POD_NAME": "ada-0-g0"})


Check = Callable[[AgentSettings], object]
# Agent spec field -> (spec overrides, what the runtime's settings must say). Both paths.
SPEC_FIELDS: dict[str, tuple[dict[str, Any], Check, object]] = {
    "role": ({"role": "con"}, lambda s: s.agent_role, "con"),
    "persona": ({"persona": "You are Ben."}, lambda s: s.persona, "You are Ben."),
    "modelPolicyRef": ({}, lambda s: s.model_name, "debate"),
    # spec.model pins a target of the policy: the gateway's `<policy>/<target>` model name.
    "model": ({"model": "backup"}, lambda s: s.model_name, "debate/backup"),
    "fallbackPolicies": (
        {"fallbackPolicies": [{"name": "cheap"}, {"name": "big"}]},
        lambda s: model_config(s).fallback_models,
        ("cheap", "big"),
    ),
    "env (history)": (
        {"env": [{"name": "STOA_HISTORY_TURNS", "value": "0"}]},
        lambda s: s.history_turns,
        0,
    ),
    "env (knob)": ({"env": [{"name": "STOA_PREFETCH", "value": "4"}]}, lambda s: s.prefetch, 4),
    "memory.enabled": ({"memory": {"enabled": False}}, lambda s: s.memory_enabled, False),
    "memory.retentionDays": ({"memory": {"retentionDays": 7}}, lambda s: s.memory_retention_days, 7),
    "priority": ({"priority": "batch"}, lambda s: s.agent_priority, "batch"),
}


@pytest.mark.parametrize("field", sorted(SPEC_FIELDS))
@pytest.mark.parametrize("build", [_operator_settings, _local_settings], ids=["operator", "stoa-run"])
def test_each_spec_field_reaches_the_runtime_settings(
    field: str, build: Callable[[dict[str, Any]], AgentSettings]
) -> None:
    overrides, read, expected = SPEC_FIELDS[field]
    assert read(build(BASE | overrides)) == expected


def test_a_model_without_a_policy_is_refused_with_what_to_do() -> None:
    """On a cluster nothing would tell the agent where that model is: the CRD rejects it (the same message,
    tests/e2e/operator/invalid_inputs.py), and so does every other reader of the manifests (stoa run)."""
    with pytest.raises(ValueError, match=r"an Agent needs spec\.modelPolicyRef: name the ModelPolicy") as exc:
        AgentSpec.model_validate({"role": "pro", "persona": "p", "model": "gpt-4o-mini"})
    assert "spec.model alone names no endpoint" in str(exc.value)
    assert NEEDS_POLICY in str(exc.value)


def test_direct_calls_use_the_endpoints_model_whatever_the_pin() -> None:
    """stoa run --no-gateway: no policy is served, so the agent asks the endpoint for its own model."""
    args = argparse.Namespace(max_tokens=90, history_turns=None, model_api_key_env=None)
    conversation = ConversationSpec.model_validate({"topic": "t", "participants": [{"agentRef": "ada"}]})
    plan = LocalPlan({"ada": AgentSpec.model_validate(BASE | {"model": "backup"})}, {}, {"c": conversation})
    envs = agent_envs(
        plan, args=args, gateway_url=None, model_url="http://127.0.0.1:42000/v1",
        default_model="smollm2-135m", rabbitmq_url="amqp://local/", postgres_url="postgresql://local/db",
    )  # fmt: skip
    settings = AgentSettings.from_environ({**envs["ada"], "STOA_POD_NAME": "ada-0-g0"})
    assert (settings.model_name, settings.model_base_url) == ("smollm2-135m", "http://127.0.0.1:42000/v1")


def test_every_agent_spec_field_has_a_contract_row() -> None:
    """A new Agent field must get a row here (env) or in the Deployment test below (pod fields), or be one
    the operator acts on itself (SLO status and rules, probes: tests/e2e/operator/test_observability.py)."""
    env_fields = {k.split(" ")[0].split(".")[0] for k in SPEC_FIELDS}
    pod_fields = {"replicas", "resources", "image"}
    operator_fields = {"slo", "probe"}
    aliases = {f.alias or name for name, f in AgentSpec.model_fields.items()}
    assert aliases == env_fields | pod_fields | operator_fields


def test_env_that_is_no_setting_reaches_the_container_and_is_not_refused() -> None:
    env = _pod_env(_deployment(BASE | {"env": [{"name": "LOG_FORMAT", "value": "json"}]}))
    assert env["LOG_FORMAT"] == "json"
    assert AgentSettings.from_environ(env).agent_name == "ada"


def test_pod_fields_reach_the_deployment() -> None:
    deployment = _deployment(
        BASE | {"replicas": 3, "image": "mine:2", "resources": {"limits": {"memory": "1Gi"}}}
    )
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert deployment["spec"]["replicas"] == 3
    assert container["image"] == "mine:2"
    assert container["resources"]["limits"] == {"memory": "1Gi"}


def test_chart_image_settings_reach_agent_and_gateway_pods() -> None:
    """The operator's image, pull policy and pull Secrets (the chart's image.* and imagePullSecrets, as
    STOA_OPERATOR_* env: tests/unit/chart) on every pod it builds."""
    settings = OperatorSettings.from_environ(
        {"STOA_OPERATOR_IMAGE_PULL_SECRETS": "regcred, mirror", "STOA_OPERATOR_IMAGE_PULL_POLICY": "Always"}
    )
    spec = AgentSpec.model_validate(BASE)
    agent = build_deployment(
        AgentInputs(
            name="ada", namespace=NAMESPACE, spec=spec, owner=OWNER, image="reg:5000/stoa:9",
            connection_secret="stoa-connections", model_base_url=gateway_endpoint(NAMESPACE, 8080),
            image_pull_policy=settings.image_pull_policy, image_pull_secrets=settings.pull_secrets(),
        )
    )  # fmt: skip
    gateway = build_gateway_deployment(
        GatewayInputs(
            namespace=NAMESPACE, policies={}, owners=[], image="reg:5000/stoa:9",
            image_pull_policy=settings.image_pull_policy, image_pull_secrets=settings.pull_secrets(),
        )
    )  # fmt: skip
    for deployment in (agent, gateway):
        pod = deployment["spec"]["template"]["spec"]
        assert pod["imagePullSecrets"] == [{"name": "regcred"}, {"name": "mirror"}]
        (container,) = pod["containers"]
        assert (container["image"], container["imagePullPolicy"]) == ("reg:5000/stoa:9", "Always")
    plain = _deployment(BASE)["spec"]["template"]["spec"]
    assert "imagePullSecrets" not in plain


def test_the_pod_wiring_reaches_the_runtime_settings() -> None:
    settings = _operator_settings(BASE)
    assert settings.agent_name == "ada"
    assert settings.namespace == NAMESPACE  # downward API
    assert settings.pod_name == "agent-ada-7d9f-x2"
    assert settings.model_base_url == f"http://stoa-gateway.{NAMESPACE}.svc:8080/v1"
    assert settings.rabbitmq_url == SECRETS["stoa-connections"]["rabbitmqUrl"]
    assert settings.postgres_dsn == SECRETS["stoa-connections"]["postgresDsn"]
    ports = _deployment(BASE)["spec"]["template"]["spec"]["containers"][0]["ports"]
    assert settings.metrics_port_number == ports[0]["containerPort"] == 9090


def test_without_enable_service_links_false_the_agent_would_refuse_to_start() -> None:
    deployment = _deployment(BASE)
    pod_spec = deployment["spec"]["template"]["spec"]
    assert pod_spec["enableServiceLinks"] is False
    del pod_spec["enableServiceLinks"]
    env = _pod_env(deployment)
    assert env["STOA_GATEWAY_PORT"] == "tcp://10.96.0.22:8080"  # what crash-looped the gateway
    with pytest.raises(UnknownSettingError, match=r"STOA_GATEWAY_PORT .*Service named 'stoa-gateway'"):
        AgentSettings.from_environ(env)


def test_gateway_and_agent_pods_set_enable_service_links_false() -> None:
    gw = build_gateway_deployment(GatewayInputs(namespace="ns", policies={}, owners=[], image="stoa:1"))
    assert gw["spec"]["template"]["spec"]["enableServiceLinks"] is False
    pod_spec = gw["spec"]["template"]["spec"]
    env = container_env(
        pod_spec, pod_spec["containers"][0], PodIdentity("stoa-gateway-x", "ns"), services=SERVICES
    )
    assert GatewaySettings.from_environ(env).port_number == 8080


@pytest.mark.parametrize(
    ("name", "service"),
    [
        ("STOA_GATEWAY_PORT", "stoa-gateway"),
        ("STOA_GATEWAY_SERVICE_HOST", "stoa-gateway"),
        ("STOA_MODEL_SERVICE_PORT", "stoa-model"),
        ("STOA_MODEL_SERVICE_PORT_HTTP", "stoa-model"),
        ("STOA_METRICS_PORT_9090_TCP", "stoa-metrics"),
        ("STOA_METRICS_PORT_9090_TCP_ADDR", "stoa-metrics"),
        ("STOA_X_PORT_53_UDP_PROTO", "stoa-x"),
        ("STOA_METRICS_PORT_NUMBER", None),
        ("STOA_GATEWAY_HOST", None),
        ("STOA_PREFETCH", None),
        ("STOA_KEY_OPENAI_API_KEY", None),
    ],
)
def test_service_link_names(name: str, service: str | None) -> None:
    assert service_of_link(name) == service


def test_no_setting_has_a_name_a_service_link_could_produce() -> None:
    names = [
        *env_names(AgentSettings),
        *env_names(GatewaySettings),
        *env_names(OperatorSettings),
        *env_names(ApiSettings),
        "STOA_MODEL_SERVER_PORT_NUMBER",
    ]
    links = [
        name for svc in SERVICES for name in container_env({}, {}, PodIdentity("p", "ns"), services=[svc])
    ]
    assert links
    assert all(is_service_link_name(n) for n in links)  # the rule knows every name the kubelet makes
    assert [n for n in names if is_service_link_name(n)] == []


@pytest.mark.parametrize(
    ("settings_cls", "variable", "hint"),
    [
        (AgentSettings, "STOA_MODEL_FALLBACK_POLICIES", "did you mean STOA_MODEL_FALLBACKS"),
        (AgentSettings, "STOA_METRICS_PORT", "Service named 'stoa-metrics'"),
        (AgentSettings, "STOA_QUEUE", "docs/runtime.md"),
        (GatewaySettings, "STOA_GATEWAY_PORT", "enableServiceLinks: false"),
        (GatewaySettings, "STOA_PREFETCH", "docs/gateway.md"),
        (OperatorSettings, "STOA_OPERATOR_METRICS_PORT", "did you mean STOA_OPERATOR_METRICS_PORT_NUMBER"),
        (ApiSettings, "STOA_API_PORT", "Service named 'stoa-api'"),
        (ApiSettings, "STOA_API_POLL_SECOND", "did you mean STOA_API_POLL_SECONDS"),
    ],
)
def test_unknown_stoa_variables_stop_the_start_with_their_name(
    settings_cls: type[AgentSettings | GatewaySettings | OperatorSettings | ApiSettings],
    variable: str,
    hint: str,
) -> None:
    environ = {variable: "tcp://10.96.0.22:8080"}
    if settings_cls is AgentSettings:
        environ["STOA_AGENT_NAME"] = "ada"
    with pytest.raises(UnknownSettingError) as excinfo:
        settings_cls.from_environ(environ)
    assert variable in str(excinfo.value)
    assert hint in str(excinfo.value)
    assert excinfo.value.names == [variable]


def test_documented_families_and_other_processes_variables_are_not_refused() -> None:
    gateway = GatewaySettings.from_environ({"STOA_KEY_OPENAI_KEY": "sk", "STOA_GATEWAY_PORT_NUMBER": "9000"})
    assert gateway.port_number == 9000
    operator = OperatorSettings.from_environ({"STOA_STATE_DIR": "/tmp/x", "STOA_OPERATOR_MAX_WORKERS": "4"})
    assert operator.max_workers == 4


@pytest.mark.parametrize("settings_cls", [AgentSettings, GatewaySettings, ApiSettings, OperatorSettings])
def test_the_developer_tools_variables_do_not_stop_a_process(settings_cls: type[AgentSettings]) -> None:
    """A developer who exports ``STOA_CACHE_DIR`` (the build caches elsewhere) can still run every process:
    a cold CI run with it set once failed every gateway start."""
    bogus = f"{settings_cls.family}BOGUS"
    environ = dict.fromkeys(DEVELOPER_VARIABLES, "/srv/x") | {bogus: "1"}
    assert settings_cls.unknown_variables(environ) == [bogus]  # still strict about everything else


def test_the_crd_allows_exactly_the_runtime_knobs_in_spec_env() -> None:
    settings = set(env_names(AgentSettings))
    assert set(SPEC_ENV) <= settings
    assert set(TUNABLE_ENV) == settings - set(SPEC_ENV)
    assert "STOA_HISTORY_TURNS" in TUNABLE_ENV


def test_each_process_refuses_to_start_and_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("STOA_AGENT_NAME", "ada")
    monkeypatch.setenv("STOA_GATEWAY_PORT", "tcp://10.96.0.22:8080")
    monkeypatch.setenv("STOA_OPERATOR_METRICS_PORT", "tcp://10.96.0.30:8090")
    assert agent_main([]) == 2
    assert gateway_main(["--config", "/nonexistent/gateway.yaml"]) == 2
    assert operator_main([]) == 2
    agent_err, gateway_err, operator_err = capsys.readouterr().err.strip().split("\n")
    assert agent_err.startswith("Invalid agent configuration: stoa agent: unknown setting STOA_GATEWAY_PORT")
    assert gateway_err.startswith("Invalid gateway configuration: stoa gateway: unknown setting")
    assert "STOA_GATEWAY_PORT (a Kubernetes Service link variable" in gateway_err
    assert operator_err.startswith("Invalid operator configuration: stoa operator: unknown setting")
    assert "STOA_OPERATOR_METRICS_PORT" in operator_err
