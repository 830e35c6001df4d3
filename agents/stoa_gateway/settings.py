"""``stoa gateway`` settings from ``STOA_GATEWAY_*`` variables (flags win). Any other ``STOA_*`` name,
except the ``STOA_KEY_*`` API keys the operator maps from Secrets, stops the start with a message."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from stoa_settings import StoaSettings


class GatewaySettings(StoaSettings):
    model_config = SettingsConfigDict(env_prefix="STOA_GATEWAY_", extra="forbid", frozen=True)
    process: ClassVar[str] = "stoa gateway"
    docs: ClassVar[str] = "docs/gateway.md (Run)"
    family: ClassVar[str] = "STOA_"
    other_families: ClassVar[tuple[str, ...]] = ("STOA_KEY_",)  # target API keys (Target.key_env_name)

    # Never STOA_GATEWAY_PORT: a Service named stoa-gateway injects that name as a link variable.
    port_number: int = Field(default=8080, ge=1, le=65535)
    host: str = "0.0.0.0"
    # Shared limits (docs/gateway.md "Rate limits across replicas"): unset URL, each replica holds
    # limit / replicas. In a cluster the URL (with its password) comes from the connection Secret.
    redis_url: str | None = Field(default=None, repr=False)
    replicas: int = Field(
        default=1, ge=1, le=1000, description="replicas until Redis says how many are ready"
    )
    limits_prefix: str = Field(default="stoa", min_length=1, max_length=200)
