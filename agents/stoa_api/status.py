"""``status`` of Stoa's custom resources (pure pydantic): one type per kind, from the store to the resource.

The runtime (``stoa_agents.control``) returns its part of an Agent's and a Conversation's status as these
types, the operator's runtime adapter passes them on unchanged, the reconciles add conditions and their
own fields and write the result through the same model, and the CRD status schemas are generated from it.
``extra="forbid"``: a field the CRD does not declare cannot be written.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel


class _Status(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)


class ConditionStatus(StrEnum):
    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class Condition(_Status):
    """One condition, Kubernetes style (metav1.Condition)."""

    type: str = Field(max_length=316)
    status: ConditionStatus
    reason: str = Field(max_length=1024)
    message: str = Field(default="", max_length=32768)
    last_transition_time: str = Field(description="RFC 3339 time of the last status flip")
    observed_generation: int = Field(default=0, ge=0)


class TargetHealth(_Status):
    """Health of one ModelPolicy target as seen by the gateway replicas (worst replica wins)."""

    name: str
    circuit: str = Field(default="unknown", description="closed, halfOpen, open or unknown (worst replica)")
    open_replicas: int = Field(default=0, ge=0, description="replicas whose circuit is open")
    replicas: int = Field(default=0, ge=0, description="replicas that reported this target")
    last_error: str | None = None
    last_error_time: str | None = None
    last_failover_reason: str | None = None
    last_failover_time: str | None = None


class ModelPolicyStatus(_Status):
    observed_generation: int | None = None
    conditions: list[Condition] = Field(default_factory=list)
    endpoint: str | None = Field(default=None, description="OpenAI-compatible base URL; model = policy name")
    gateway: str | None = Field(default=None, description="Deployment serving this policy")
    config_hash: str | None = None
    targets: list[TargetHealth] = Field(default_factory=list)
    prometheus_rule: str | None = Field(default=None, description="PrometheusRule holding the SLO rules")


class BurnRate(_Status):
    window: str = Field(description="5m, 30m, 1h, 2h, 6h, 1d or 3d")
    rate: float = Field(description="error ratio over the window divided by the error budget; 1 = on budget")


class SLOAlerting(_Status):
    """What the multi-window multi-burn-rate alerts would say (the same verdict the PrometheusRule has)."""

    page: bool = False
    ticket: bool = False


class ObjectiveStatus(_Status):
    objective: float = Field(description="percent of good events the objective asks for")
    sli: float | None = Field(default=None, description="percent of good events over the window")
    error_budget_remaining: float = Field(
        description="fraction of the error budget left (negative: overspent)"
    )
    events: int = 0
    bad_events: int = 0
    burn_rates: list[BurnRate] = Field(default_factory=list)
    alerting: SLOAlerting = Field(default_factory=SLOAlerting)


class SLOStatus(_Status):
    """SLIs computed by the operator from the turn records in PostgreSQL (no Prometheus needed)."""

    window: str
    availability: ObjectiveStatus | None = None
    latency: ObjectiveStatus | None = None


class ProbeStatus(_Status):
    last_run: str | None = None
    last_result: str | None = Field(default=None, description="Succeeded, Failed or TimedOut")
    last_reason: str | None = None
    last_success: str | None = None
    consecutive_failures: int = 0


class AgentStatus(_Status):
    observed_generation: int | None = None
    conditions: list[Condition] = Field(default_factory=list)
    replicas: int = 0
    ready_replicas: int = 0
    standby_replicas: int = 0
    queue: str | None = None
    active_pod: str | None = None
    previous_pod: str | None = None
    takeovers: int = 0
    turns_handled: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float = Field(default=0.0, alias="costUSD", description="sum of the stored turns' costs")
    unpriced_turns: int = Field(
        default=0, description="turns stored with cost 0 because no price was known (no gateway, no price)"
    )
    slo: SLOStatus | None = None
    error_budget_remaining: str | None = Field(
        default=None, description="the lowest budget left over the Agent's objectives, e.g. 87.5%"
    )
    probe: ProbeStatus | None = None
    prometheus_rule: str | None = Field(default=None, description="PrometheusRule holding the SLO rules")


class AgentShare(_Status):
    """One participant's part of a conversation."""

    turns: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float = Field(default=0.0, alias="costUSD")
    unpriced_turns: int = 0


class ConversationPhase(StrEnum):
    """The runtime's phases (``stoa_agents.turns.policy.Phase``)."""

    PENDING = "Pending"
    RUNNING = "Running"
    SUSPENDED = "Suspended"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"


class ConversationStatus(_Status):
    observed_generation: int | None = None
    conditions: list[Condition] = Field(default_factory=list)
    phase: ConversationPhase = ConversationPhase.PENDING
    conversation_id: str | None = None
    runtime_name: str | None = Field(default=None, description="the conversation's name in the runtime store")
    turns: int = 0
    last_speaker: str | None = None
    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float = Field(
        default=0.0, alias="costUSD", description="sum of the turns' costs: each as its gateway reported it"
    )
    unpriced_turns: int = Field(
        default=0, description="turns stored with cost 0 because no price was known (no gateway, no price)"
    )
    agents: dict[str, AgentShare] = Field(default_factory=dict, description="each participant's part")
    started_at: str | None = None
    finished_at: str | None = None
    reason: str = Field(default="", description="why the conversation is in its phase (how it ended)")
    failure_reason: str | None = None
    transcript: str | None = Field(default=None, description="how to read the transcript")

    @property
    def id(self) -> str:
        """The runtime's conversation id (``conversationId``)."""
        return self.conversation_id or ""
