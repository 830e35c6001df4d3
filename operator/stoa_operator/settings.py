"""Operator configuration: environment only (prefix ``STOA_OPERATOR_``), read once at start, passed down."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from stoa_settings import StoaSettings

DEFAULT_IMAGE = "ghcr.io/stoa-dev/stoa:0.2.0"


class OperatorSettings(StoaSettings):
    """Any other ``STOA_OPERATOR_*`` variable stops the start; listen ports are ``*_PORT_NUMBER`` (a
    ``*_PORT`` name is what a Service such as ``stoa-operator-metrics`` injects as a link variable)."""

    model_config = SettingsConfigDict(env_prefix="STOA_OPERATOR_", extra="forbid", frozen=True)
    process: ClassVar[str] = "stoa operator"
    docs: ClassVar[str] = "docs/operator.md (Operator settings)"
    family: ClassVar[str] = "STOA_OPERATOR_"

    namespaces: str = Field(default="", description="comma-separated namespaces to watch; empty: all")
    agent_image: str = DEFAULT_IMAGE
    gateway_image: str = DEFAULT_IMAGE
    image_pull_policy: str = Field(default="IfNotPresent", pattern="^(Always|IfNotPresent|Never)$")
    image_pull_secrets: str = Field(
        default="", description="comma-separated Secrets (in each namespace) for pulling agent/gateway images"
    )
    gateway_replicas: int = Field(default=2, ge=1, le=20)
    gateway_port_number: int = Field(default=8080, ge=1, le=65535)
    agent_metrics_port_number: int = Field(default=9090, ge=1, le=65535)
    connection_secret: str = Field(
        default="stoa-connections", description="Secret (per namespace) with keys rabbitmqUrl, postgresDsn"
    )
    # Deprecated in 0.2.0 and ignored (chart 0.1.0 set them from the release namespace's Secret, which put
    # every namespace's Conversations in that one database): the operator always uses the connection
    # Secret of the Conversation's namespace, the one its agents use.
    postgres_dsn: str | None = Field(default=None, description="deprecated, ignored")
    rabbitmq_url: str | None = Field(default=None, description="deprecated, ignored")
    resync_seconds: float = Field(default=30.0, gt=0, description="drift timer interval")
    conversation_sync_seconds: float = Field(default=10.0, gt=0)
    retry_seconds: float = Field(default=10.0, gt=0, description="delay before retrying a missing dependency")
    metrics_port_number: int = Field(default=8090, ge=0, le=65535, description="0 disables /metrics")
    liveness_port_number: int = Field(default=8091, ge=0, le=65535, description="0 disables /healthz")
    max_workers: int = Field(default=16, ge=1, le=256)
    field_manager: str = "stoa-operator"
    gateway_status_timeout_seconds: float = Field(default=1.0, gt=0)
    log_level: str = "INFO"
    # Labels put on the PrometheusRules the operator creates (a Prometheus' ruleSelector), "k=v,k2=v2".
    prometheus_rule_labels: str = ""

    def prometheus_rule_labels_map(self) -> dict[str, str]:
        pairs = [p.strip() for p in self.prometheus_rule_labels.split(",") if p.strip()]
        return dict(p.split("=", 1) for p in pairs if "=" in p)

    def namespace_list(self) -> list[str]:
        return [n.strip() for n in self.namespaces.split(",") if n.strip()]

    def pull_secrets(self) -> tuple[str, ...]:
        return tuple(n.strip() for n in self.image_pull_secrets.split(",") if n.strip())
