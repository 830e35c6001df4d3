"""The environment of one agent replica, built from an Agent spec (pure). The operator's Deployment builder
and ``stoa run`` both use it, so a local run is configured exactly as a pod."""

from __future__ import annotations

from stoa_api.agent import AgentSpec


def agent_model_name(spec: AgentSpec, default: str) -> str:
    """``spec.model`` overrides; else the ModelPolicy name (the gateway routes by it); else ``default``."""
    if spec.model:
        return spec.model
    if spec.model_policy_ref is not None:
        return spec.model_policy_ref.name
    return default


def agent_env(
    name: str,
    spec: AgentSpec,
    *,
    model_base_url: str,
    model_name: str,
    rabbitmq_url: str,
    postgres_dsn: str,
    pod_name: str,
    metrics_port: int = 9090,
    namespace: str = "",
    extra: dict[str, str] | None = None,
) -> dict[str, str]:
    """``namespace``: the Agent's namespace (``STOA_NAMESPACE``, scopes the agent key); "" in ``stoa run``."""
    env = {
        "STOA_AGENT_NAME": name,
        "STOA_AGENT_ROLE": spec.role,
        "STOA_PERSONA": spec.persona,
        "STOA_POD_NAME": pod_name,
        "STOA_MODEL_BASE_URL": model_base_url,
        "STOA_MODEL_NAME": model_name,
        "STOA_RABBITMQ_URL": rabbitmq_url,
        "STOA_POSTGRES_DSN": postgres_dsn,
        "STOA_METRICS_PORT": str(metrics_port),
        "STOA_MODEL_FALLBACKS": ",".join(ref.name for ref in spec.fallback_policies),
        "STOA_MEMORY_ENABLED": "true" if spec.memory.enabled else "false",
        "STOA_MEMORY_RETENTION_DAYS": str(spec.memory.retention_days),
    }
    if namespace:
        env["STOA_NAMESPACE"] = namespace
    for var in spec.env:
        env[var.name] = var.value
    env.update(extra or {})
    return env
