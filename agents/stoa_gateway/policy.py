"""The ModelPolicy spec: the exact schema of the ``ModelPolicy`` CRD ``spec`` (group stoa.dev).

Pure pydantic types only. CRD-friendly on purpose: explicit enums, no unions of unrelated types
(``X | None`` only), bounds with ``ge``/``le`` and a default for every optional field.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.alias_generators import to_camel

from stoa_telemetry.spec import HealthCheck, PolicySLO

NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
TARGET_NAME_PATTERN = r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
ENV_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"


class _Spec(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)


class Strategy(StrEnum):
    """How a request picks among the targets of a route (or of the policy)."""

    FAILOVER = "failover"
    ROUND_ROBIN = "roundRobin"
    WEIGHTED = "weighted"
    LEAST_BUSY = "leastBusy"
    LOWEST_LATENCY = "lowestLatency"


class Priority(StrEnum):
    """A call's priority class (header ``X-Stoa-Priority``; Conversation and Agent ``spec.priority``)."""

    CRITICAL = "critical"
    NORMAL = "normal"
    BATCH = "batch"


PRIORITY_HEADER = "X-Stoa-Priority"


class PiiKind(StrEnum):
    EMAIL = "email"
    PHONE = "phone"
    CARD = "card"
    ID_NUMBER = "idNumber"


class SecretKeyRef(_Spec):
    name: str = Field(min_length=1, max_length=253)
    key: str = Field(min_length=1, max_length=253)


class Target(_Spec):
    """One OpenAI-compatible upstream (provider account + model)."""

    name: str = Field(pattern=TARGET_NAME_PATTERN, max_length=63)
    base_url: str = Field(alias="baseURL", pattern=r"^https?://", max_length=2048)
    model: str = Field(min_length=1, max_length=256)
    api_key_secret_ref: SecretKeyRef | None = None
    api_key_env: str | None = Field(default=None, pattern=ENV_NAME_PATTERN, max_length=128)
    weight: int = Field(default=1, ge=0, le=10000)
    timeout_seconds: float = Field(default=60.0, gt=0, le=3600)
    rpm: int | None = Field(default=None, ge=1)
    tpm: int | None = Field(default=None, ge=1)
    input_cost_per_1k: float = Field(default=0.0, ge=0, alias="inputCostPer1k")
    output_cost_per_1k: float = Field(default=0.0, ge=0, alias="outputCostPer1k")
    max_context_tokens: int | None = Field(default=None, ge=1)

    def key_env_name(self) -> str | None:
        """The env var holding the API key: ``apiKeyEnv``, else derived from ``apiKeySecretRef``."""
        if self.api_key_env:
            return self.api_key_env
        if self.api_key_secret_ref is None:
            return None
        raw = f"STOA_KEY_{self.api_key_secret_ref.name}_{self.api_key_secret_ref.key}"
        return re.sub(r"[^A-Za-z0-9_]", "_", raw).upper()


class HeaderMatch(_Spec):
    name: str = Field(min_length=1, max_length=128)
    values: list[str] = Field(min_length=1)


class RouteMatch(_Spec):
    """All conditions given must hold (AND); an empty match matches every request."""

    min_input_tokens: int | None = Field(default=None, ge=0)
    max_input_tokens: int | None = Field(default=None, ge=0)
    headers: list[HeaderMatch] = Field(default_factory=list)
    agents: list[str] = Field(default_factory=list)


class Route(_Spec):
    name: str = Field(pattern=NAME_PATTERN, max_length=63)
    match: RouteMatch = Field(default_factory=RouteMatch)
    targets: list[str] = Field(min_length=1)
    strategy: Strategy | None = None
    fallback_targets: list[str] = Field(default_factory=list)


class RetryPolicy(_Spec):
    attempts: int = Field(default=3, ge=1, le=10)
    base_backoff_seconds: float = Field(default=0.1, ge=0, le=60)
    max_backoff_seconds: float = Field(default=5.0, ge=0, le=300)
    jitter: float = Field(default=0.5, ge=0, le=1)
    honor_retry_after: bool = True
    max_retry_after_seconds: float = Field(default=10.0, ge=0, le=600)
    retry_on_statuses: list[int] = Field(default_factory=lambda: [408, 429, 500, 502, 503, 504])
    failover_on_statuses: list[int] = Field(default_factory=lambda: [401, 402, 403, 404])
    retry_on_timeout: bool = True
    retry_on_connection_error: bool = True

    @field_validator("retry_on_statuses", "failover_on_statuses")
    @classmethod
    def _http_statuses(cls, value: list[int]) -> list[int]:
        for status in value:
            if not 100 <= status <= 599:
                raise ValueError(f"not an HTTP status: {status}")
        return value


class CircuitBreakerPolicy(_Spec):
    enabled: bool = True
    error_rate_threshold: float = Field(default=0.5, gt=0, le=1)
    window_seconds: float = Field(default=30.0, gt=0, le=3600)
    min_requests: int = Field(default=5, ge=1, le=100000)
    open_seconds: float = Field(default=30.0, gt=0, le=3600)
    half_open_probes: int = Field(default=1, ge=1, le=100)


class Limit(_Spec):
    rpm: int | None = Field(default=None, ge=1)
    tpm: int | None = Field(default=None, ge=1)


class AgentLimit(_Spec):
    agent: str = Field(min_length=1, max_length=253)
    rpm: int | None = Field(default=None, ge=1)
    tpm: int | None = Field(default=None, ge=1)


class RateLimitPolicy(_Spec):
    """Per calling agent (``X-Stoa-Agent``); per-target limits live on each target. Across replicas."""

    per_agent: Limit | None = None
    agents: list[AgentLimit] = Field(default_factory=list)

    def for_agent(self, agent: str | None) -> Limit | None:
        if agent is None:
            return self.per_agent
        for item in self.agents:
            if item.agent == agent:
                return Limit(rpm=item.rpm, tpm=item.tpm)
        return self.per_agent


class ContentRules(_Spec):
    blocked_keywords: list[str] = Field(default_factory=list)
    blocked_patterns: list[str] = Field(default_factory=list)
    mask_pii: list[PiiKind] = Field(default_factory=list)

    @field_validator("blocked_patterns")
    @classmethod
    def _compiles(cls, value: list[str]) -> list[str]:
        for pattern in value:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"invalid regular expression {pattern!r}: {exc}") from exc
        return value


class Guardrails(_Spec):
    input: ContentRules = Field(default_factory=ContentRules)
    output: ContentRules = Field(default_factory=ContentRules)
    max_output_tokens: int | None = Field(default=None, ge=1)


class QueueSeconds(_Spec):
    """How long a call of each priority may wait for capacity when its targets are at their limits."""

    critical: float = Field(default=10.0, ge=0, le=600)
    normal: float = Field(default=5.0, ge=0, le=600)
    batch: float = Field(default=1.0, ge=0, le=600)

    def of(self, priority: Priority) -> float:
        return float(getattr(self, str(priority)))


class PriorityPolicy(_Spec):
    """Queueing at the limit by priority; the lowest priority is shed first (429 with Retry-After)."""

    queue_seconds: QueueSeconds = Field(default_factory=QueueSeconds)
    max_queued: int = Field(default=200, ge=0, le=100000, description="waiting calls per policy and replica")
    critical_reserve: float = Field(
        default=0.0, ge=0, lt=1, description="fraction of every rpm/tpm limit only critical calls may use"
    )


class Budget(_Spec):
    daily_limit_usd: float = Field(gt=0, alias="dailyLimitUSD")


class ModelPolicySpec(_Spec):
    """``spec`` of a ModelPolicy: targets, routing, retries, breaker, limits, guardrails and budget."""

    targets: list[Target] = Field(min_length=1)
    strategy: Strategy = Strategy.FAILOVER
    routes: list[Route] = Field(default_factory=list)
    retry: RetryPolicy = Field(default_factory=RetryPolicy)
    circuit_breaker: CircuitBreakerPolicy = Field(default_factory=CircuitBreakerPolicy)
    rate_limit: RateLimitPolicy = Field(default_factory=RateLimitPolicy)
    guardrails: Guardrails = Field(default_factory=Guardrails)
    budget: Budget | None = None
    priority: PriorityPolicy = Field(default_factory=PriorityPolicy)
    slo: PolicySLO | None = None
    health_check: HealthCheck | None = None

    @model_validator(mode="after")
    def _references(self) -> Self:
        names = [t.name for t in self.targets]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate target names: {', '.join(dupes)}")
        known = set(names)
        for route in self.routes:
            unknown = [n for n in [*route.targets, *route.fallback_targets] if n not in known]
            if unknown:
                raise ValueError(f"route {route.name} names unknown targets: {', '.join(unknown)}")
        return self

    def target(self, name: str) -> Target | None:
        for target in self.targets:
            if target.name == name:
                return target
        return None


ModelPolicy = ModelPolicySpec


class PolicyEntry(_Spec):
    name: str = Field(pattern=NAME_PATTERN, max_length=63)
    spec: ModelPolicySpec


class GatewayConfig(_Spec):
    """The gateway config file: ``{policies: [{name, spec}]}``."""

    policies: list[PolicyEntry] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique(self) -> Self:
        names = [p.name for p in self.policies]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate policy names: {', '.join(dupes)}")
        return self

    def policy(self, name: str) -> ModelPolicySpec | None:
        for entry in self.policies:
            if entry.name == name:
                return entry.spec
        return None
