"""``status`` of Stoa's custom resources (pure pydantic): one type per kind, from the store to the resource.

The runtime (``stoa_agents.control``) returns its part of an Agent's and a Conversation's status as these
types, the operator's runtime adapter passes them on unchanged, the reconciles add conditions and their
own fields and write the result through the same model, and the CRD status schemas are generated from it.
``extra="forbid"``: a field the CRD does not declare cannot be written.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field

from stoa_settings.crdmodel import CrdModel


class _Status(CrdModel):
    """The CRD model conventions (``CrdModel``)."""


class ConditionStatus(StrEnum):
    """True, False or Unknown."""

    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class Condition(_Status):
    """One condition, Kubernetes style (metav1.Condition)."""

    type: str = Field(max_length=316)
    """Ready, Progressing, Degraded, or a kind's own (RuntimeSynced, Served, LimitsShared, ...)."""
    status: ConditionStatus
    """True, False or Unknown."""
    reason: str = Field(max_length=1024)
    """CamelCase reason, e.g. MissingReference."""
    message: str = Field(default="", max_length=32768)
    """What happened and what to do."""
    last_transition_time: str = Field(description="RFC 3339 time of the last status flip")
    observed_generation: int = Field(default=0, ge=0)
    """The metadata.generation this condition describes."""


class TargetHealth(_Status):
    """Health of one ModelPolicy target as seen by the gateway replicas (worst replica wins)."""

    name: str
    """Target name."""
    circuit: str = Field(default="unknown", description="closed, halfOpen, open or unknown (worst replica)")
    open_replicas: int = Field(default=0, ge=0, description="replicas whose circuit is open")
    replicas: int = Field(default=0, ge=0, description="replicas that reported this target")
    last_error: str | None = None
    """The latest error of this target over the replicas."""
    last_error_time: str | None = None
    """When it happened (RFC 3339)."""
    last_failover_reason: str | None = None
    """Why a request last left this target for another."""
    last_failover_time: str | None = None
    """When (RFC 3339)."""


class ModelPolicyStatus(_Status):
    """What the operator and the gateway replicas report about a ModelPolicy."""

    observed_generation: int | None = None
    """The generation last reconciled."""
    conditions: list[Condition] = Field(default_factory=list)
    """Ready (served by every ready gateway replica), Progressing, Degraded, Served, LimitsShared."""
    endpoint: str | None = Field(default=None, description="OpenAI-compatible base URL; model = policy name")
    gateway: str | None = Field(default=None, description="Deployment serving this policy")
    config_hash: str | None = None
    """sha256 of the namespace gateway's config file the operator wrote (all policies of the namespace)."""
    spec_hash: str | None = None
    """Fingerprint of this policy's spec as rendered for the gateway; each replica reports the one it serves.
    """
    served: str | None = None
    """Ready gateway replicas serving the current spec / ready replicas, e.g. 2/2."""
    circuits: str | None = None
    """Each target's circuit (worst replica), e.g. primary=closed,backup=open."""
    targets: list[TargetHealth] = Field(default_factory=list)
    """Per-target health merged over the gateway replicas."""
    prometheus_rule: str | None = Field(default=None, description="PrometheusRule holding the SLO rules")


class BurnRate(_Status):
    """Error budget burn over one window."""

    window: str = Field(description="5m, 30m, 1h, 2h, 6h, 1d or 3d")
    rate: float = Field(description="error ratio over the window divided by the error budget; 1 = on budget")


class SLOAlerting(_Status):
    """What the multi-window multi-burn-rate alerts would say (the same verdict the PrometheusRule has)."""

    page: bool = False
    """A fast burn: the page alert would fire."""
    ticket: bool = False
    """A slow burn: the ticket alert would fire."""


class ObjectiveStatus(_Status):
    """One objective's SLI and budget."""

    objective: float = Field(description="percent of good events the objective asks for")
    sli: float | None = Field(default=None, description="percent of good events over the window")
    error_budget_remaining: float = Field(
        description="fraction of the error budget left (negative: overspent)"
    )
    events: int = 0
    """Events over the window."""
    bad_events: int = 0
    """Bad events over the window."""
    burn_rates: list[BurnRate] = Field(default_factory=list)
    """Burn rate per alert window."""
    alerting: SLOAlerting = Field(default_factory=SLOAlerting)
    """Which alerts would fire."""


class SLOStatus(_Status):
    """SLIs computed by the operator from the turn records in PostgreSQL (no Prometheus needed)."""

    window: str
    """The objectives' rolling window, e.g. 30d."""
    availability: ObjectiveStatus | None = None
    """The availability objective."""
    latency: ObjectiveStatus | None = None
    """The latency objective."""


class ProbeStatus(_Status):
    """The last synthetic probe runs."""

    last_run: str | None = None
    """When the last probe ran (RFC 3339)."""
    last_result: str | None = Field(default=None, description="Succeeded, Failed or TimedOut")
    last_reason: str | None = None
    """Why the last probe failed."""
    last_success: str | None = None
    """When a probe last succeeded."""
    consecutive_failures: int = 0
    """Failed probes in a row."""


class AgentStatus(_Status):
    """What the operator, the Deployment and the runtime report about an Agent."""

    observed_generation: int | None = None
    """The generation last reconciled."""
    conditions: list[Condition] = Field(default_factory=list)
    """Ready (the active replica is available), Progressing, Degraded, RuntimeSynced."""
    replicas: int = 0
    """Desired replicas (spec.replicas)."""
    ready_replicas: int = 0
    """Ready pods of the Deployment."""
    standby_replicas: int = 0
    """Ready pods besides the active one (hot standbys)."""
    queue: str | None = None
    """The agent's RabbitMQ queue, stoa.agent.<namespace>.<name>."""
    active_pod: str | None = None
    """The pod consuming the queue now (single active consumer)."""
    previous_pod: str | None = None
    """The active pod before the last takeover."""
    takeovers: int = 0
    """Times a standby took over from the active pod."""
    turns_handled: int = 0
    """Turns this agent stored."""
    tokens_in: int = 0
    """Input tokens of those turns."""
    tokens_out: int = 0
    """Output tokens of those turns."""
    cost_usd: float = Field(default=0.0, alias="costUSD", description="sum of the stored turns' costs")
    unpriced_turns: int = Field(
        default=0, description="turns stored with cost 0 because no price was known (no gateway, no price)"
    )
    slo: SLOStatus | None = None
    """SLIs and error budgets of spec.slo."""
    error_budget_remaining: str | None = Field(
        default=None, description="the lowest budget left over the Agent's objectives, e.g. 87.5%"
    )
    probe: ProbeStatus | None = None
    """Results of spec.probe."""
    prometheus_rule: str | None = Field(default=None, description="PrometheusRule holding the SLO rules")


class AgentShare(_Status):
    """One participant's part of a conversation."""

    turns: int = 0
    """Turns of this participant."""
    tokens_in: int = 0
    """Its input tokens."""
    tokens_out: int = 0
    """Its output tokens."""
    cost_usd: float = Field(default=0.0, alias="costUSD")
    """Its cost in USD."""
    unpriced_turns: int = 0
    """Its turns stored without a price."""


class ConversationPhase(StrEnum):
    """The runtime's phases (``stoa_agents.turns.policy.Phase``)."""

    PENDING = "Pending"
    RUNNING = "Running"
    SUSPENDED = "Suspended"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"


class ConversationStatus(_Status):
    """The conversation as the runtime stored it, plus conditions."""

    observed_generation: int | None = None
    """The generation last reconciled."""
    conditions: list[Condition] = Field(default_factory=list)
    """Ready (Running, Suspended or Succeeded), Progressing, Degraded."""
    phase: ConversationPhase = ConversationPhase.PENDING
    """Pending, Running, Suspended, Succeeded or Failed."""
    conversation_id: str | None = None
    """The runtime's id of the conversation (the resource's uid)."""
    runtime_name: str | None = Field(default=None, description="the conversation's name in the runtime store")
    turns: int = 0
    """Stored turns."""
    last_speaker: str | None = None
    """Who spoke last."""
    tokens_in: int = 0
    """Input tokens of all turns."""
    tokens_out: int = 0
    """Output tokens of all turns."""
    cost_usd: float = Field(
        default=0.0, alias="costUSD", description="sum of the turns' costs: each as its gateway reported it"
    )
    unpriced_turns: int = Field(
        default=0, description="turns stored with cost 0 because no price was known (no gateway, no price)"
    )
    agents: dict[str, AgentShare] = Field(default_factory=dict, description="each participant's part")
    started_at: str | None = None
    """When turn 1 was taken (RFC 3339)."""
    finished_at: str | None = None
    """When it ended (RFC 3339)."""
    reason: str = Field(default="", description="why the conversation is in its phase (how it ended)")
    failure_reason: str | None = None
    """Why it failed (phase Failed)."""
    transcript: str | None = Field(default=None, description="how to read the transcript")

    @property
    def id(self) -> str:
        """The runtime's conversation id (``conversationId``)."""
        return self.conversation_id or ""
