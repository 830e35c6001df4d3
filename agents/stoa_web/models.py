"""The API's request, response and event types (pure pydantic).

Specs and statuses are the very models the CRDs are generated from (``stoa_api`` spec types, the
operator's status types), so the OpenAPI document and the CRDs cannot disagree.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from stoa_api.agent import AgentSpec
from stoa_api.base import NAME_PATTERN
from stoa_api.conversation import ConversationSpec
from stoa_api.status import AgentStatus, ConversationStatus, ModelPolicyStatus
from stoa_gateway.policy import ModelPolicySpec


class Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class ObjectMeta(Model):
    name: str
    namespace: str
    uid: str
    generation: int = 0
    resource_version: str = ""
    creation_timestamp: str | None = None


def object_meta(item: dict[str, Any]) -> ObjectMeta:
    meta = item.get("metadata") or {}
    return ObjectMeta(
        name=str(meta.get("name") or ""),
        namespace=str(meta.get("namespace") or ""),
        uid=str(meta.get("uid") or ""),
        generation=int(meta.get("generation") or 0),
        resource_version=str(meta.get("resourceVersion") or ""),
        creation_timestamp=meta.get("creationTimestamp"),
    )


class ConversationCreate(Model):
    """``POST .../conversations``: a name and the Conversation's spec (topic, participants, limits)."""

    name: str = Field(pattern=NAME_PATTERN, max_length=63)
    spec: ConversationSpec


class Conversation(Model):
    metadata: ObjectMeta
    spec: ConversationSpec | None = Field(description="null when the stored spec no longer validates")
    spec_error: str | None = None
    status: ConversationStatus


class ConversationList(Model):
    items: list[Conversation]


class Agent(Model):
    metadata: ObjectMeta
    spec: AgentSpec | None
    spec_error: str | None = None
    status: AgentStatus


class AgentList(Model):
    items: list[Agent]


class GatewayTarget(Model):
    """One target as the gateway replicas see it now (worst circuit of all replicas)."""

    name: str
    circuit: str = "unknown"
    in_flight: int = 0
    latency_seconds: float | None = Field(default=None, description="highest moving average of the replicas")
    last_error: str | None = None
    last_error_time: str | None = None
    last_failover_reason: str | None = None
    last_failover_time: str | None = None
    last_success_time: str | None = None


class GatewayEvent(Model):
    """A gateway audit record about a policy: a failover, every target failing, or a circuit change."""

    at: str
    event: str
    policy: str
    target: str | None = None
    from_target: str | None = None
    reason: str = ""
    agent: str | None = None
    conversation: str | None = None


class GatewayView(Model):
    """Live view from the namespace's gateway replicas (``GET /v1/stoa/status`` and the audit records)."""

    replicas: int = Field(description="replicas that answered")
    unreachable: list[str] = Field(default_factory=list)
    targets: list[GatewayTarget] = Field(default_factory=list)
    spent_today_usd: float = Field(default=0.0, alias="spentTodayUSD", description="sum over replicas")
    recent: list[GatewayEvent] = Field(default_factory=list, description="newest last, at most 20")


class ModelPolicy(Model):
    metadata: ObjectMeta
    spec: ModelPolicySpec | None
    spec_error: str | None = None
    status: ModelPolicyStatus
    gateway: GatewayView | None = Field(default=None, description="null when no gateway replica is known")


class ModelPolicyList(Model):
    items: list[ModelPolicy]


class Turn(Model):
    """One stored turn, exactly as the runtime committed it."""

    seq: int
    speaker: str
    role: str
    content: str
    tokens_in: int
    tokens_out: int
    cost_usd: float = Field(alias="costUSD")
    model: str
    duration_ms: int
    pod: str = Field(description="the replica that stored the turn")
    created_at: datetime


class TurnPage(Model):
    items: list[Turn]
    next_after: int | None = Field(description="pass as ?after= for the next page; null: no more turns now")


class WhoAmI(Model):
    username: str
    groups: list[str]
    default_namespace: str


# ---- event stream --------------------------------------------------------------------------------------

EventType = Literal["hello", "turn", "phase", "takeover", "failover", "circuit", "gap", "end", "error"]


class HelloEvent(Model):
    """First event of every stream (no id): what the stream covers and what this caller may not see."""

    conversation: str
    namespace: str
    uid: str
    runtime_name: str
    omitted: list[str] = Field(default_factory=list)


class PhaseEvent(Model):
    phase: str
    reason: str = ""
    turns: int = 0


class TakeoverEvent(Model):
    """A standby of a participant became its active replica (the store's active-consumer record)."""

    agent: str
    from_pod: str | None
    to_pod: str
    at: datetime
    takeovers: int = Field(description="takeovers of this agent so far (all conversations)")


class CircuitEvent(Model):
    at: str
    policy: str
    target: str
    state: Literal["open", "halfOpen", "closed"]
    reason: str = ""


class GapEvent(Model):
    source: str
    message: str


class EndEvent(Model):
    phase: str
    reason: str = ""


class ErrorEvent(Model):
    status: int
    message: str


EVENT_MODELS: dict[str, type[BaseModel]] = {
    "hello": HelloEvent,
    "turn": Turn,
    "phase": PhaseEvent,
    "takeover": TakeoverEvent,
    "failover": GatewayEvent,
    "circuit": CircuitEvent,
    "gap": GapEvent,
    "end": EndEvent,
    "error": ErrorEvent,
}
