"""The namespace's model gateway (pure): rendered config, ConfigMap, Deployment, Service, ServiceAccount.

One gateway per namespace serves every ModelPolicy of that namespace (the gateway config holds a list
of policies and requests name the policy as ``model``). Config changes reach running gateways through
the mounted ConfigMap, which the gateway hot-reloads: the pod template does not change, so nothing
rolls. Only the set of API-key env vars (Secret refs) is in the pod template; changing it rolls the
gateway with ``maxUnavailable: 0``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml

from stoa_gateway.config import content_hash
from stoa_gateway.policy import GatewayConfig, ModelPolicySpec, PolicyEntry
from stoa_operator.builders.common import (
    GATEWAY_CONFIG_DIR,
    GATEWAY_CONFIG_KEY,
    GATEWAY_NAME,
    container_security,
    gateway_labels,
    metadata,
    pod_security,
    pull_secrets,
    selector,
    service_account,
)
from stoa_telemetry.otel_env import container_env


@dataclass(frozen=True)
class GatewayInputs:
    namespace: str
    policies: dict[str, ModelPolicySpec]  # policy name -> spec (every live ModelPolicy of the namespace)
    owners: list[dict[str, Any]]  # owner references: every live ModelPolicy (none is the controller)
    image: str
    replicas: int = 2
    port: int = 8080
    image_pull_policy: str = "IfNotPresent"
    image_pull_secrets: tuple[str, ...] = ()  # the chart's imagePullSecrets (Secrets of this namespace)
    connection_secret: str = "stoa-connections"  # noqa: S105 - a Secret's name; optional key redisUrl
    otel_env: tuple[tuple[str, str], ...] = ()  # OTEL_* passed down from the operator (otel_env.py)


# The connection Secret's key with the Redis URL the replicas share limits through (optional).
REDIS_URL_KEY = "redisUrl"


@dataclass(frozen=True)
class KeyEnv:
    env: str
    secret: str
    key: str


def render_config(policies: dict[str, ModelPolicySpec]) -> str:
    """The gateway config file ``{policies: [{name, spec}]}``, sorted by name, defaults omitted."""
    config = GatewayConfig(policies=[PolicyEntry(name=n, spec=policies[n]) for n in sorted(policies)])
    data = config.model_dump(mode="json", by_alias=True, exclude_defaults=True)
    data.setdefault("policies", [])
    for entry in data["policies"]:
        entry.setdefault("spec", {})
    return yaml.safe_dump(data, sort_keys=True, width=110)


def config_hash(config_text: str) -> str:
    """What each gateway replica reports as ``config.hash`` once it loaded this text."""
    return content_hash(config_text.encode())


def key_envs(policies: dict[str, ModelPolicySpec]) -> tuple[list[KeyEnv], dict[str, str]]:
    """API-key env vars of the gateway from every target's Secret ref, and conflicts (policy -> message).

    Two targets may share an env var only if it reads the same Secret key; otherwise the later policy
    (by name) is reported as conflicting and its key is not mapped.
    """
    chosen: dict[str, KeyEnv] = {}
    conflicts: dict[str, str] = {}
    for name in sorted(policies):
        for target in policies[name].targets:
            ref = target.api_key_secret_ref
            env = target.key_env_name()
            if ref is None or env is None:
                continue
            wanted = KeyEnv(env, ref.name, ref.key)
            existing = chosen.get(env)
            if existing is None:
                chosen[env] = wanted
            elif existing != wanted:
                conflicts[name] = (
                    f"target {target.name}: env {env} already reads "
                    f"Secret {existing.secret} key {existing.key}"
                )
    return [chosen[e] for e in sorted(chosen)], conflicts


def build_config_map(inputs: GatewayInputs) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata(GATEWAY_NAME, inputs.namespace, gateway_labels(), inputs.owners),
        "data": {GATEWAY_CONFIG_KEY: render_config(inputs.policies)},
    }


def build_deployment(inputs: GatewayInputs) -> dict[str, Any]:
    labels = gateway_labels()
    keys, _ = key_envs(inputs.policies)
    env: list[dict[str, Any]] = [
        {
            "name": k.env,
            "valueFrom": {"secretKeyRef": {"name": k.secret, "key": k.key, "optional": True}},
        }
        for k in keys
    ]
    env += [
        {  # unset when the Secret has no redisUrl: each replica then holds limit / replicas
            "name": "STOA_GATEWAY_REDIS_URL",
            "valueFrom": {
                "secretKeyRef": {"name": inputs.connection_secret, "key": REDIS_URL_KEY, "optional": True}
            },
        },
        {"name": "STOA_GATEWAY_REPLICAS", "value": str(inputs.replicas)},
        {"name": "STOA_GATEWAY_LIMITS_PREFIX", "value": f"stoa:{inputs.namespace}"},
        *container_env(dict(inputs.otel_env)),
    ]
    probe_port = "http"
    container = {
        "name": "gateway",
        "image": inputs.image,
        "imagePullPolicy": inputs.image_pull_policy,
        "command": ["stoa", "gateway"],
        "args": [
            "--config",
            f"{GATEWAY_CONFIG_DIR}/{GATEWAY_CONFIG_KEY}",
            "--port",
            str(inputs.port),
            "--audit-log",
            "-",
        ],
        "env": env,
        "ports": [{"name": "http", "containerPort": inputs.port, "protocol": "TCP"}],
        "livenessProbe": {
            "httpGet": {"path": "/healthz", "port": probe_port},
            "periodSeconds": 10,
            "failureThreshold": 3,
        },
        "readinessProbe": {
            "httpGet": {"path": "/readyz", "port": probe_port},
            "periodSeconds": 5,
            "failureThreshold": 2,
        },
        "resources": {"requests": {"cpu": "50m", "memory": "128Mi"}, "limits": {"memory": "512Mi"}},
        "securityContext": container_security(),
        "volumeMounts": [
            {"name": "config", "mountPath": GATEWAY_CONFIG_DIR, "readOnly": True},
            {"name": "tmp", "mountPath": "/tmp"},  # noqa: S108 - an emptyDir, the root filesystem is read-only
        ],
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata(GATEWAY_NAME, inputs.namespace, labels, inputs.owners),
        "spec": {
            "replicas": inputs.replicas,
            "selector": {"matchLabels": selector(labels)},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "serviceAccountName": GATEWAY_NAME,
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,  # configured only by what is set here
                    **pull_secrets(inputs.image_pull_secrets),
                    "securityContext": pod_security(),
                    "terminationGracePeriodSeconds": 30,
                    "containers": [container],
                    "volumes": [
                        {"name": "config", "configMap": {"name": GATEWAY_NAME}},
                        {"name": "tmp", "emptyDir": {}},
                    ],
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


def build_service(inputs: GatewayInputs) -> dict[str, Any]:
    labels = gateway_labels()
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(GATEWAY_NAME, inputs.namespace, labels, inputs.owners),
        "spec": {
            "type": "ClusterIP",
            "selector": selector(labels),
            "ports": [{"name": "http", "port": inputs.port, "targetPort": "http", "protocol": "TCP"}],
        },
    }


def build_gateway(inputs: GatewayInputs) -> list[dict[str, Any]]:
    """Every child of the namespace gateway, in apply order."""
    return [
        service_account(GATEWAY_NAME, inputs.namespace, gateway_labels(), inputs.owners),
        build_config_map(inputs),
        build_service(inputs),
        build_deployment(inputs),
    ]
