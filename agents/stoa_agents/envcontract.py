"""The environment of one agent replica, built from an Agent spec (pure): the only builder of it.

The operator's Deployment builder and ``stoa run`` both call :func:`agent_env`; the runtime reads the
result with :class:`~stoa_agents.settings.AgentSettings`, which refuses any other ``STOA_*`` name. A value
is a literal, a Secret key or a pod field (downward API): the operator renders them as a container's
``env`` (:func:`kubernetes_env`), ``stoa run`` passes literals to its processes (:func:`literal_env`).
The contract tests load the operator's rendering, resolved as a kubelet does, into ``AgentSettings``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from stoa_agents.settings import AgentSettings
from stoa_api.agent import AgentSpec
from stoa_settings import env_names


@dataclass(frozen=True)
class SecretKey:
    secret: str
    key: str


@dataclass(frozen=True)
class PodField:
    path: str  # downward API fieldPath


EnvValue = str | SecretKey | PodField
POD_NAME = PodField("metadata.name")
POD_NAMESPACE = PodField("metadata.namespace")
# Connection Secret keys (per namespace on a cluster): variable -> key.
CONNECTION_KEYS = {"STOA_RABBITMQ_URL": "rabbitmqUrl", "STOA_POSTGRES_DSN": "postgresDsn"}


@dataclass(frozen=True)
class Wiring:
    """What the caller knows beyond the spec: where the broker, the store and the model are."""

    rabbitmq_url: EnvValue
    postgres_dsn: EnvValue
    gateway_url: str | None = None  # the gateway serving the Agent's ModelPolicies (by name)
    model_url: str | None = None  # an OpenAI-compatible endpoint called directly (no gateway)
    default_model: str | None = None  # model name at model_url when the spec names none
    pod_name: EnvValue | None = None  # None: set per replica by the caller (stoa run)
    namespace: EnvValue | None = None  # None: unscoped agent key (stoa run)
    metrics_port_number: int = 9090


def connection_secret(secret: str) -> tuple[SecretKey, SecretKey]:
    """The RabbitMQ URL and PostgreSQL DSN of a connection Secret."""
    return (
        SecretKey(secret, CONNECTION_KEYS["STOA_RABBITMQ_URL"]),
        SecretKey(secret, CONNECTION_KEYS["STOA_POSTGRES_DSN"]),
    )


def agent_model_name(spec: AgentSpec, default: str, *, via_gateway: bool = True) -> str:
    """Through the gateway: the ModelPolicy name (the gateway routes by it), or ``<policy>/<target>`` when
    ``spec.model`` pins a target. Direct (no gateway): ``default``, the endpoint's model."""
    if not via_gateway or spec.model_policy_ref is None:
        return default
    policy = spec.model_policy_ref.name
    return f"{policy}/{spec.model}" if spec.model else policy


def agent_env(
    name: str, spec: AgentSpec, wiring: Wiring, tuning: Mapping[str, str] | None = None
) -> dict[str, EnvValue]:
    """Every variable of one replica: from the spec and the wiring, then ``spec.env``, then ``tuning``
    (the caller's runtime knobs, e.g. ``stoa run --max-tokens``)."""
    env: dict[str, EnvValue] = {
        "STOA_AGENT_NAME": name,
        "STOA_AGENT_ROLE": spec.role,
        "STOA_PERSONA": spec.persona,
    }
    if wiring.pod_name is not None:
        env["STOA_POD_NAME"] = wiring.pod_name
    if wiring.namespace is not None:
        env["STOA_NAMESPACE"] = wiring.namespace
    if wiring.gateway_url is not None and spec.model_policy_ref is not None:
        env["STOA_MODEL_BASE_URL"] = wiring.gateway_url
        env["STOA_MODEL_NAME"] = agent_model_name(spec, "", via_gateway=True)
        if spec.fallback_policies:
            env["STOA_MODEL_FALLBACKS"] = ",".join(ref.name for ref in spec.fallback_policies)
    else:  # stoa run --no-gateway: the endpoint's own model, called directly
        if wiring.model_url is not None:
            env["STOA_MODEL_BASE_URL"] = wiring.model_url
        if wiring.default_model:
            env["STOA_MODEL_NAME"] = wiring.default_model
    env["STOA_RABBITMQ_URL"] = wiring.rabbitmq_url
    env["STOA_POSTGRES_DSN"] = wiring.postgres_dsn
    env["STOA_AGENT_PRIORITY"] = str(spec.priority)
    env["STOA_MEMORY_ENABLED"] = "true" if spec.memory.enabled else "false"
    env["STOA_MEMORY_RETENTION_DAYS"] = str(spec.memory.retention_days)
    env["STOA_METRICS_PORT_NUMBER"] = str(wiring.metrics_port_number)
    for var in spec.env:
        env[var.name] = var.value
    env.update(tuning or {})
    return env


def kubernetes_env(env: Mapping[str, EnvValue]) -> list[dict[str, Any]]:
    """A container's ``env``: literals as ``value``, Secret keys and pod fields as ``valueFrom``."""
    out: list[dict[str, Any]] = []
    for name, value in env.items():
        if isinstance(value, SecretKey):
            out.append(
                {"name": name, "valueFrom": {"secretKeyRef": {"name": value.secret, "key": value.key}}}
            )
        elif isinstance(value, PodField):
            out.append({"name": name, "valueFrom": {"fieldRef": {"fieldPath": value.path}}})
        else:
            out.append({"name": name, "value": value})
    return out


def literal_env(env: Mapping[str, EnvValue]) -> dict[str, str]:
    """The environment of a local process: every value must be a literal."""
    out = {}
    for name, value in env.items():
        if not isinstance(value, str):
            raise ValueError(f"{name} is {value!r}: a local process needs a literal value")
        out[name] = value
    return out


# Set by agent_env from the spec and the wiring: an Agent's spec.env must not set them (CRD rule).
SPEC_ENV = (
    "STOA_AGENT_NAME",
    "STOA_AGENT_ROLE",
    "STOA_AGENT_PRIORITY",
    "STOA_PERSONA",
    "STOA_POD_NAME",
    "STOA_NAMESPACE",
    "STOA_MODEL_BASE_URL",
    "STOA_MODEL_NAME",
    "STOA_MODEL_FALLBACKS",
    "STOA_RABBITMQ_URL",
    "STOA_POSTGRES_DSN",
    "STOA_MEMORY_ENABLED",
    "STOA_MEMORY_RETENTION_DAYS",
    "STOA_METRICS_PORT_NUMBER",
)
# The runtime knobs an Agent's spec.env may set (every other STOA_* name is rejected by the CRD).
TUNABLE_ENV = tuple(sorted(n for n in env_names(AgentSettings) if n not in SPEC_ENV))
