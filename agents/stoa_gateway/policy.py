"""The ModelPolicy spec: the exact schema of the ``ModelPolicy`` CRD ``spec`` (group stoa.dev).

Pure pydantic types only. CRD-friendly on purpose: explicit enums, no unions of unrelated types
(``X | None`` only), bounds with ``ge``/``le`` and a default for every optional field.
"""

from __future__ import annotations

import hashlib
import json
import re
from enum import StrEnum
from typing import Self

from pydantic import Field, field_validator, model_validator

from stoa_settings.crdmodel import CrdModel
from stoa_telemetry.spec import HealthCheck, PolicySLO

NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
TARGET_NAME_PATTERN = r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
ENV_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"


class _Spec(CrdModel):
    """The CRD model conventions (``CrdModel``)."""


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
    """Personal data a guardrail masks."""

    EMAIL = "email"
    PHONE = "phone"
    CARD = "card"
    ID_NUMBER = "idNumber"


class SecretKeyRef(_Spec):
    """A key of a Secret."""

    name: str = Field(min_length=1, max_length=253)
    """Secret in the ModelPolicy's namespace."""
    key: str = Field(min_length=1, max_length=253)
    """Key of that Secret holding the API key."""


class Target(_Spec):
    """One OpenAI-compatible upstream (provider account + model)."""

    name: str = Field(pattern=TARGET_NAME_PATTERN, max_length=63)
    """Target name, unique in the policy (routes and metrics name it; `<policy>/<target>` pins it)."""
    base_url: str = Field(alias="baseURL", pattern=r"^https?://", max_length=2048)
    """OpenAI-compatible base URL (`/chat/completions` is appended), e.g. https://api.openai.com/v1."""
    model: str = Field(min_length=1, max_length=256)
    """Model name sent to this target."""
    api_key_secret_ref: SecretKeyRef | None = None
    """Secret key holding this target's API key (sent as `Authorization: Bearer`); the operator maps it into
    the gateway pods as an env var, never into the ConfigMap. Unset: no key sent."""
    api_key_env: str | None = Field(default=None, pattern=ENV_NAME_PATTERN, max_length=128)
    """Outside Kubernetes only (`stoa gateway --config`): the env var holding the key. Rejected on a cluster:
    use apiKeySecretRef."""
    weight: int = Field(default=1, ge=0, le=10000)
    """Share of requests under strategy weighted."""
    timeout_seconds: float = Field(default=60.0, gt=0, le=3600)
    """Per attempt: the whole request, or for streams the first token and each gap between chunks."""
    rpm: int | None = Field(default=None, ge=1)
    """Requests per minute this target may take (across the gateway replicas); unset: no limit."""
    tpm: int | None = Field(default=None, ge=1)
    """Tokens (input + output) per minute this target may take; unset: no limit."""
    input_cost_per_1k: float = Field(default=0.0, ge=0, alias="inputCostPer1k")
    """USD per 1000 input tokens: the cost of each call (usage.cost), status totals and the budget."""
    output_cost_per_1k: float = Field(default=0.0, ge=0, alias="outputCostPer1k")
    """USD per 1000 output tokens."""
    max_context_tokens: int | None = Field(default=None, ge=1)
    """Skip this target when the estimated input plus max output tokens would not fit."""

    def key_env_name(self) -> str | None:
        """The env var holding the API key: ``apiKeyEnv``, else derived from ``apiKeySecretRef``."""
        if self.api_key_env:
            return self.api_key_env
        if self.api_key_secret_ref is None:
            return None
        raw = f"STOA_KEY_{self.api_key_secret_ref.name}_{self.api_key_secret_ref.key}"
        return re.sub(r"[^A-Za-z0-9_]", "_", raw).upper()


class HeaderMatch(_Spec):
    """A request header condition."""

    name: str = Field(min_length=1, max_length=128)
    """Request header name (case-insensitive)."""
    values: list[str] = Field(min_length=1)
    """Matches when the header has one of these values."""


class RouteMatch(_Spec):
    """All conditions given must hold (AND); an empty match matches every request."""

    min_input_tokens: int | None = Field(default=None, ge=0)
    """Estimated input tokens (about 4 characters each) at least this."""
    max_input_tokens: int | None = Field(default=None, ge=0)
    """Estimated input tokens at most this."""
    headers: list[HeaderMatch] = Field(default_factory=list)
    """Every listed header must match."""
    agents: list[str] = Field(default_factory=list)
    """The calling agent (X-Stoa-Agent, the Agent name) is one of these."""


class Route(_Spec):
    """A routing rule: matching requests go to its targets."""

    name: str = Field(pattern=NAME_PATTERN, max_length=63)
    """Route name (metrics, audit log)."""
    match: RouteMatch = Field(default_factory=RouteMatch)
    """When this route applies; the first matching route wins."""
    targets: list[str] = Field(min_length=1)
    """Targets of this route, ordered by its strategy."""
    strategy: Strategy | None = None
    """Strategy for this route; unset: the policy's."""
    fallback_targets: list[str] = Field(default_factory=list)
    """Tried after the route's targets, in this order."""


class RetryPolicy(_Spec):
    """Retries and failover between targets."""

    attempts: int = Field(default=3, ge=1, le=10)
    """Attempts per request, across targets."""
    base_backoff_seconds: float = Field(default=0.1, ge=0, le=60)
    """Backoff before going back to an already tried target (doubles each time)."""
    max_backoff_seconds: float = Field(default=5.0, ge=0, le=300)
    """Upper bound of that backoff."""
    jitter: float = Field(default=0.5, ge=0, le=1)
    """This fraction of each delay is randomised."""
    honor_retry_after: bool = True
    """Wait at least a target's Retry-After, and skip it for that long."""
    max_retry_after_seconds: float = Field(default=10.0, ge=0, le=600)
    """A longer Retry-After fails over instead of waiting."""
    retry_on_statuses: list[int] = Field(default_factory=lambda: [408, 429, 500, 502, 503, 504])
    """HTTP statuses after which the target may be tried again."""
    failover_on_statuses: list[int] = Field(default_factory=lambda: [401, 402, 403, 404])
    """HTTP statuses after which the request moves to the next target and never retries this one."""
    retry_on_timeout: bool = True
    """A timed-out target may be tried again."""
    retry_on_connection_error: bool = True
    """A target that refused or dropped the connection may be tried again."""

    @field_validator("retry_on_statuses", "failover_on_statuses")
    @classmethod
    def _http_statuses(cls, value: list[int]) -> list[int]:
        for status in value:
            if not 100 <= status <= 599:
                raise ValueError(f"not an HTTP status: {status}")
        return value


class CircuitBreakerPolicy(_Spec):
    """Per-target circuit breaker (per gateway replica)."""

    enabled: bool = True
    """Stop sending to a failing target for a while."""
    error_rate_threshold: float = Field(default=0.5, gt=0, le=1)
    """Open when failures / outcomes in the window reach this."""
    window_seconds: float = Field(default=30.0, gt=0, le=3600)
    """Sliding window of outcomes (10 buckets)."""
    min_requests: int = Field(default=5, ge=1, le=100000)
    """Outcomes the window must hold before it can open."""
    open_seconds: float = Field(default=30.0, gt=0, le=3600)
    """How long an open circuit sends nothing."""
    half_open_probes: int = Field(default=1, ge=1, le=100)
    """Probes let through after that; all succeed: closed, one fails: open again."""


class Limit(_Spec):
    """A rate limit."""

    rpm: int | None = Field(default=None, ge=1)
    """Requests per minute; unset: no limit."""
    tpm: int | None = Field(default=None, ge=1)
    """Tokens per minute; unset: no limit."""


class AgentLimit(_Spec):
    """The limit of one calling agent."""

    agent: str = Field(min_length=1, max_length=253)
    """Agent name (X-Stoa-Agent)."""
    rpm: int | None = Field(default=None, ge=1)
    """Requests per minute of that agent."""
    tpm: int | None = Field(default=None, ge=1)
    """Tokens per minute of that agent."""


class RateLimitPolicy(_Spec):
    """Per calling agent (``X-Stoa-Agent``); per-target limits live on each target. Across replicas."""

    per_agent: Limit | None = None
    """Limit of every calling agent (and of requests naming none)."""
    agents: list[AgentLimit] = Field(default_factory=list)
    """Per-agent overrides of perAgent."""

    def for_agent(self, agent: str | None) -> Limit | None:
        if agent is None:
            return self.per_agent
        for item in self.agents:
            if item.agent == agent:
                return Limit(rpm=item.rpm, tpm=item.tpm)
        return self.per_agent


class ContentRules(_Spec):
    """Content rules for one direction."""

    blocked_keywords: list[str] = Field(default_factory=list)
    """Requests (or answers) containing one of these words are refused (case-insensitive, whole words)."""
    blocked_patterns: list[str] = Field(default_factory=list)
    """Python regular expressions; a match is refused."""
    mask_pii: list[PiiKind] = Field(default_factory=list)
    """Kinds of personal data replaced by a placeholder before the text goes on."""

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
    """Content rules and an output cap."""

    input: ContentRules = Field(default_factory=ContentRules)
    """Rules for the messages sent to the model."""
    output: ContentRules = Field(default_factory=ContentRules)
    """Rules for the model's answers."""
    max_output_tokens: int | None = Field(default=None, ge=1)
    """Caps max_tokens / max_completion_tokens sent upstream."""


class QueueSeconds(_Spec):
    """How long a call of each priority may wait for capacity when its targets are at their limits."""

    critical: float = Field(default=10.0, ge=0, le=600)
    """Seconds a critical call may wait."""
    normal: float = Field(default=5.0, ge=0, le=600)
    """Seconds a normal call may wait."""
    batch: float = Field(default=1.0, ge=0, le=600)
    """Seconds a batch call may wait."""

    def of(self, priority: Priority) -> float:
        return float(getattr(self, str(priority)))


class PriorityPolicy(_Spec):
    """Queueing at the limit by priority; the lowest priority is shed first (429 with Retry-After)."""

    queue_seconds: QueueSeconds = Field(default_factory=QueueSeconds)
    """How long calls of each priority wait for capacity at the limit."""
    max_queued: int = Field(default=200, ge=0, le=100000, description="waiting calls per policy and replica")
    critical_reserve: float = Field(
        default=0.0, ge=0, lt=1, description="fraction of every rpm/tpm limit only critical calls may use"
    )


class Budget(_Spec):
    """A daily spending cap."""

    daily_limit_usd: float = Field(gt=0, alias="dailyLimitUSD")
    """USD this policy may spend per UTC day across the gateway replicas; then 429 budget_exceeded."""


class ModelPolicySpec(_Spec):
    """``spec`` of a ModelPolicy: targets, routing, retries, breaker, limits, guardrails and budget."""

    targets: list[Target] = Field(min_length=1)
    """The OpenAI-compatible upstreams, in priority order (failover)."""
    strategy: Strategy = Strategy.FAILOVER
    """How a request picks among targets when no route sets one."""
    routes: list[Route] = Field(default_factory=list)
    """Requests matching a route go to its targets; no match: all targets."""
    retry: RetryPolicy = Field(default_factory=RetryPolicy)
    """Retries and failover between targets."""
    circuit_breaker: CircuitBreakerPolicy = Field(default_factory=CircuitBreakerPolicy)
    """Per-target circuit breaker."""
    rate_limit: RateLimitPolicy = Field(default_factory=RateLimitPolicy)
    """Limits per calling agent (per-target limits are on the targets)."""
    guardrails: Guardrails = Field(default_factory=Guardrails)
    """Content rules and an output token cap."""
    budget: Budget | None = None
    """Daily spending cap."""
    priority: PriorityPolicy = Field(default_factory=PriorityPolicy)
    """Queueing at the limit by priority class."""
    slo: PolicySLO | None = None
    """Service level objectives over this policy's requests (status.slo, Prometheus rules)."""
    health_check: HealthCheck | None = None
    """Active health checks of every target."""

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


def policy_hash(spec: ModelPolicySpec) -> str:
    """A policy's fingerprint (16 hex chars of sha256 over its canonical JSON, defaults omitted). Each
    gateway replica reports it per policy in ``GET /v1/stoa/status``; the operator compares it with the spec
    it rendered, so ModelPolicy ``Served`` says when every replica serves the current spec."""
    data = spec.model_dump(mode="json", by_alias=True, exclude_defaults=True)
    return hashlib.sha256(json.dumps(data, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]


class PolicyEntry(_Spec):
    """One policy of the gateway config."""

    name: str = Field(pattern=NAME_PATTERN, max_length=63)
    """Policy name: what clients send as model."""
    spec: ModelPolicySpec
    """The ModelPolicy spec."""


class GatewayConfig(_Spec):
    """The gateway config file: ``{policies: [{name, spec}]}``."""

    policies: list[PolicyEntry] = Field(default_factory=list)
    """Every policy this gateway serves."""

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
