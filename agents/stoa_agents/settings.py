"""The agent process configuration: environment only (prefix ``STOA_``), read once at start."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from stoa_gateway.policy import Priority
from stoa_settings import StoaSettings


class AgentSettings(StoaSettings):
    """One agent replica. ``stoa_agents.envcontract`` builds the environment (for the operator's Deployment
    and ``stoa run``); ``docs/runtime.md`` has the table. Any other ``STOA_*`` variable stops the start."""

    model_config = SettingsConfigDict(env_prefix="STOA_", extra="forbid", frozen=True)
    process: ClassVar[str] = "stoa agent"
    docs: ClassVar[str] = "docs/runtime.md (Configuration)"

    agent_name: str = Field(pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", max_length=63)
    # The Agent's namespace (downward API); "" for ``stoa run``. Scopes the agent key (identity.py).
    namespace: str = Field(default="", pattern=r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?)?$", max_length=63)
    agent_role: str = "member"
    persona: str = "You are a helpful participant in a conversation."
    pod_name: str = "local"
    agent_priority: Priority = Priority.NORMAL  # Agent spec.priority: for conversations that set none

    model_base_url: str = Field(default="http://127.0.0.1:8080/v1", pattern=r"^https?://")
    model_name: str = "smollm2-135m"
    model_fallbacks: str = ""  # comma-separated model names (ModelPolicy names with the gateway)
    model_api_key: SecretStr | None = None
    model_api_key_env: str | None = None
    model_max_tokens: int = Field(default=90, ge=1, le=32000)
    model_temperature: float = Field(default=0.7, ge=0, le=2)
    model_timeout_seconds: float = Field(default=60.0, gt=0)
    model_retries: int = Field(default=3, ge=0, le=10)
    model_backoff_seconds: float = Field(default=0.5, ge=0)
    model_backoff_max_seconds: float = Field(default=8.0, ge=0)
    model_unreachable_grace_seconds: float = Field(default=120.0, ge=0)
    # Direct mode (no gateway, an endpoint that reports no ``usage.cost``): the price of the model, USD per
    # 1k tokens. Unset: turns are stored with cost 0 and cost source ``unpriced``, never a guess.
    model_input_cost_per_1k: float | None = Field(default=None, ge=0)
    model_output_cost_per_1k: float | None = Field(default=None, ge=0)
    history_turns: int = Field(default=6, ge=0, le=200)

    rabbitmq_url: str = "amqp://guest:guest@127.0.0.1:5672/"
    postgres_dsn: str = "postgresql://postgres@127.0.0.1:5432/postgres"
    prefetch: int = Field(default=1, ge=1, le=100)
    heartbeat_seconds: int = Field(default=5, ge=1, le=600)
    delivery_limit: int = Field(default=3, ge=1, le=100)
    infra_retry_seconds: float = Field(default=120.0, gt=0)
    shutdown_grace_seconds: float = Field(default=25.0, gt=0)
    relay_interval_seconds: float = Field(default=10.0, gt=0)

    memory_enabled: bool = True
    memory_retention_days: int = Field(default=30, ge=0)

    metrics_port_number: int = Field(default=9090, ge=0, le=65535)  # never *_PORT: a Service link name
    metrics_host: str = "0.0.0.0"
    log_level: str = "INFO"
