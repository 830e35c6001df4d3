"""An Agent's children (pure): Deployment running ``stoa agent``, headless Service, ServiceAccount.

The Deployment's env is the runtime's contract, built by ``stoa_agents.envcontract`` (docs/runtime.md);
RabbitMQ/Postgres URLs come from the connection Secret named in operator settings. Pods get no Service
link variables (``enableServiceLinks: false``): they are configured only by what is set here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from stoa_agents.envcontract import POD_NAME, POD_NAMESPACE, Wiring, connection_secret, kubernetes_env
from stoa_agents.envcontract import agent_env as contract_env
from stoa_api.agent import AgentSpec
from stoa_operator.builders.common import (
    agent_child_name,
    agent_labels,
    container_security,
    metadata,
    pod_security,
    pull_secrets,
    selector,
    service_account,
)
from stoa_telemetry.otel_env import container_env

DEFAULT_REQUESTS = {"cpu": "50m", "memory": "128Mi"}
DEFAULT_LIMITS = {"memory": "256Mi"}


@dataclass(frozen=True)
class AgentInputs:
    name: str
    namespace: str
    spec: AgentSpec
    owner: dict[str, Any]
    image: str
    connection_secret: str
    model_base_url: str | None  # the namespace gateway; None when the agent names a model directly
    metrics_port: int = 9090
    image_pull_policy: str = "IfNotPresent"
    image_pull_secrets: tuple[str, ...] = ()  # the chart's imagePullSecrets (Secrets of this namespace)
    otel_env: tuple[tuple[str, str], ...] = ()  # OTEL_* passed down from the operator (otel_env.py)


def _resources(spec: AgentSpec) -> dict[str, Any]:
    requests = spec.resources.requests.model_dump(exclude_none=True) or dict(DEFAULT_REQUESTS)
    limits = spec.resources.limits.model_dump(exclude_none=True) or dict(DEFAULT_LIMITS)
    return {"requests": requests, "limits": limits}


def agent_env(inputs: AgentInputs) -> list[dict[str, Any]]:
    """The container env: ``stoa_agents.envcontract`` (the one builder, shared with ``stoa run``) wired to
    the namespace gateway, the connection Secret and the pod's own name and namespace."""
    rabbitmq, postgres = connection_secret(inputs.connection_secret)
    wiring = Wiring(
        rabbitmq_url=rabbitmq,
        postgres_dsn=postgres,
        gateway_url=inputs.model_base_url,
        pod_name=POD_NAME,
        namespace=POD_NAMESPACE,
        metrics_port_number=inputs.metrics_port,
    )
    return kubernetes_env(contract_env(inputs.name, inputs.spec, wiring)) + container_env(
        dict(inputs.otel_env)
    )


def build_deployment(inputs: AgentInputs) -> dict[str, Any]:
    labels = agent_labels(inputs.name)
    name = agent_child_name(inputs.name)
    container = {
        "name": "agent",
        "image": inputs.spec.image or inputs.image,
        "imagePullPolicy": inputs.image_pull_policy,
        "command": ["stoa", "agent"],
        "env": agent_env(inputs),
        "ports": [{"name": "metrics", "containerPort": inputs.metrics_port, "protocol": "TCP"}],
        "livenessProbe": {
            "httpGet": {"path": "/healthz", "port": "metrics"},
            "periodSeconds": 10,
            "failureThreshold": 3,
        },
        "readinessProbe": {
            "httpGet": {"path": "/readyz", "port": "metrics"},
            "periodSeconds": 5,
            "failureThreshold": 2,
        },
        "resources": _resources(inputs.spec),
        "securityContext": container_security(),
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],  # noqa: S108 - emptyDir, read-only root
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata(name, inputs.namespace, labels, [inputs.owner]),
        "spec": {
            "replicas": inputs.spec.replicas,
            "selector": {"matchLabels": selector(labels)},
            # Standbys take over mid-turn (state is in Postgres): replace pods one at a time, never
            # dropping below the desired count.
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "serviceAccountName": name,
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    **pull_secrets(inputs.image_pull_secrets),
                    "securityContext": pod_security(),
                    "terminationGracePeriodSeconds": 30,
                    "containers": [container],
                    "volumes": [{"name": "tmp", "emptyDir": {}}],
                    "topologySpreadConstraints": [
                        {
                            "maxSkew": 1,
                            "topologyKey": "kubernetes.io/hostname",
                            "whenUnsatisfiable": "ScheduleAnyway",
                            "labelSelector": {"matchLabels": selector(labels)},
                        }
                    ],
                },
            },
        },
    }


def build_service(inputs: AgentInputs) -> dict[str, Any]:
    """Headless: stable DNS per replica for metrics scraping; agents talk through RabbitMQ, not HTTP."""
    labels = agent_labels(inputs.name)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(agent_child_name(inputs.name), inputs.namespace, labels, [inputs.owner]),
        "spec": {
            "clusterIP": "None",
            "selector": selector(labels),
            "ports": [{"name": "metrics", "port": inputs.metrics_port, "targetPort": "metrics"}],
            "publishNotReadyAddresses": True,
        },
    }


def build_agent(inputs: AgentInputs) -> list[dict[str, Any]]:
    """Every child of an Agent, in apply order."""
    labels = agent_labels(inputs.name)
    name = agent_child_name(inputs.name)
    return [
        service_account(name, inputs.namespace, labels, [inputs.owner]),
        build_service(inputs),
        build_deployment(inputs),
    ]
