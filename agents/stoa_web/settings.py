"""``stoa api`` configuration: environment (prefix ``STOA_API_``) and flags, read once at start."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field, field_validator
from pydantic_settings import SettingsConfigDict

from stoa_api.base import NAME_PATTERN
from stoa_settings import StoaSettings


def parse_gateways(text: str) -> dict[str, list[str]]:
    """``ns=URL[,URL...][;ns2=URL]`` -> namespace -> gateway base URLs (runs without Kubernetes networking,
    e.g. ``stoa run`` or tests). Empty: replicas come from the gateway Service's EndpointSlices."""
    out: dict[str, list[str]] = {}
    for part in filter(None, (p.strip() for p in text.split(";"))):
        namespace, sep, urls = part.partition("=")
        if not sep or not namespace.strip():
            raise ValueError(f"gateways entry {part!r} is not ns=URL[,URL]")
        found = [u.strip().rstrip("/") for u in urls.split(",") if u.strip()]
        if not found or not all(u.startswith(("http://", "https://")) for u in found):
            raise ValueError(f"gateways entry {part!r}: URLs must start with http:// or https://")
        out[namespace.strip()] = found
    return out


class ApiSettings(StoaSettings):
    """Every knob of the API server; the chart sets the env, ``stoa api --help`` lists the flags. Any other
    ``STOA_API_*`` variable stops the start; ports are ``*_PORT_NUMBER`` (the chart's Service ``stoa-api``
    would inject ``STOA_API_PORT`` as a link variable)."""

    model_config = SettingsConfigDict(env_prefix="STOA_API_", extra="forbid", frozen=True)
    process: ClassVar[str] = "stoa api"
    docs: ClassVar[str] = "docs/api.md (Settings)"
    family: ClassVar[str] = "STOA_API_"

    host: str = "127.0.0.1"
    port_number: int = Field(default=8080, ge=0, le=65535)
    metrics_port_number: int = Field(default=9090, ge=0, le=65535, description="0 disables /metrics")
    kubeconfig: str | None = Field(default=None, description="unset: in-cluster service account")
    # The runtime store: settings first, else each namespace's connection Secret (as the operator does).
    postgres_dsn: str | None = None
    connection_secret: str = "stoa-connections"  # noqa: S105 - a Secret name, not a secret
    gateway_service: str = Field(default="stoa-gateway", pattern=NAME_PATTERN)
    gateway_port_name: str = "http"
    gateways: str = Field(default="", description="ns=URL[,URL][;ns=URL]: fixed gateway replicas")
    default_namespace: str = Field(default="default", pattern=NAME_PATTERN, max_length=63)
    # Authentication and authorization results are reused this long (0: every call asks the API server).
    auth_cache_seconds: float = Field(default=5.0, ge=0, le=300)
    # An open event stream checks its token and access again this often, and ends when they are gone.
    reauth_seconds: float = Field(default=60.0, gt=0, le=3600)
    poll_seconds: float = Field(default=0.5, gt=0, le=30)
    gateway_poll_seconds: float = Field(default=1.0, gt=0, le=60)
    max_body_bytes: int = Field(default=64 * 1024, ge=1024, le=16 * 1024 * 1024)
    max_streams: int = Field(default=500, ge=1, le=100000)
    request_timeout_seconds: float = Field(default=10.0, gt=0, le=120)
    log_level: str = "INFO"

    @field_validator("gateways")
    @classmethod
    def _gateways(cls, value: str) -> str:
        parse_gateways(value)
        return value

    def gateway_map(self) -> dict[str, list[str]]:
        return parse_gateways(self.gateways)
