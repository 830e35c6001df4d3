"""Operator configuration: environment only (prefix ``STOA_OPERATOR_``), read once at start, passed down."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_IMAGE = "ghcr.io/stoa-dev/stoa:0.1.0"


class OperatorSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="STOA_OPERATOR_", extra="ignore", frozen=True)

    namespaces: str = Field(default="", description="comma-separated namespaces to watch; empty: all")
    agent_image: str = DEFAULT_IMAGE
    gateway_image: str = DEFAULT_IMAGE
    image_pull_policy: str = Field(default="IfNotPresent", pattern="^(Always|IfNotPresent|Never)$")
    gateway_replicas: int = Field(default=2, ge=1, le=20)
    gateway_port: int = Field(default=8080, ge=1, le=65535)
    agent_metrics_port: int = Field(default=9090, ge=1, le=65535)
    connection_secret: str = Field(
        default="stoa-connections", description="Secret (per namespace) with keys rabbitmqUrl, postgresDsn"
    )
    # The operator's own runtime connection (start/suspend/stop conversations, read status). When
    # unset, it reads the connection Secret of the object's namespace.
    postgres_dsn: str | None = None
    rabbitmq_url: str | None = None
    resync_seconds: float = Field(default=30.0, gt=0, description="drift timer interval")
    conversation_sync_seconds: float = Field(default=10.0, gt=0)
    retry_seconds: float = Field(default=10.0, gt=0, description="delay before retrying a missing dependency")
    metrics_port: int = Field(default=8090, ge=0, le=65535, description="0 disables /metrics")
    liveness_port: int = Field(default=8091, ge=0, le=65535, description="0 disables /healthz")
    max_workers: int = Field(default=16, ge=1, le=256)
    field_manager: str = "stoa-operator"
    gateway_status_timeout_seconds: float = Field(default=1.0, gt=0)
    log_level: str = "INFO"

    def namespace_list(self) -> list[str]:
        return [n.strip() for n in self.namespaces.split(",") if n.strip()]
