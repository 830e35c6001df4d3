"""``spec`` of the ``Agent`` custom resource: one role played by a set of replicas (active + standbys).

Every field is described here (attribute docstrings): the CRD's ``kubectl explain`` text is generated
from them, and docs/operator.md "Every field" says what reads each one and which test proves it.
"""

from __future__ import annotations

from typing import Self

from pydantic import Field, model_validator

from stoa_api.base import NAME_PATTERN, Spec
from stoa_gateway.policy import Priority
from stoa_telemetry.spec import AgentSLO, Probe

NEEDS_POLICY = (
    "an Agent needs spec.modelPolicyRef: name the ModelPolicy whose targets (baseURL, model, API key) it "
    "calls through the namespace gateway; spec.model alone names no endpoint (it picks one of the policy's "
    "targets)"
)


class ModelPolicyRef(Spec):
    """A ModelPolicy in the Agent's namespace."""

    name: str = Field(pattern=NAME_PATTERN, max_length=63)
    """Name of the ModelPolicy."""


class ResourceList(Spec):
    """Kubernetes quantities."""

    cpu: str | None = None
    """CPU, e.g. ``50m`` or ``1``."""
    memory: str | None = None
    """Memory, e.g. ``128Mi``."""


class Resources(Spec):
    """Compute resources of each replica's container (as in a Pod). Unset: requests 50m CPU and 128Mi,
    limit 256Mi memory."""

    requests: ResourceList = Field(default_factory=ResourceList)
    """Requested resources (scheduling)."""
    limits: ResourceList = Field(default_factory=ResourceList)
    """Limits (the container is throttled on CPU, killed above memory)."""


class EnvVar(Spec):
    """One environment variable of the agent container."""

    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", max_length=128)
    """Variable name. ``STOA_*`` names must be agent runtime knobs (docs/runtime.md "Configuration", e.g.
    ``STOA_HISTORY_TURNS``); those the operator derives from this spec are rejected."""
    value: str = ""
    """Literal value."""


class Memory(Spec):
    """Private memory of the agent (its own Postgres schema): a short note of each of its turns, shown to
    it in later turns of the same conversation."""

    enabled: bool = True
    """Keep and use notes (``STOA_MEMORY_ENABLED``)."""
    retention_days: int = Field(default=30, ge=0, le=3650)
    """Notes older than this are deleted when a replica starts; 0 keeps them forever."""


class AgentSpec(Spec):
    """One agent: a role and a persona, run as ``replicas`` pods (one active, the others hot standbys)
    that reach their model through the namespace's Stoa gateway."""

    role: str = Field(min_length=1, max_length=63)
    """The agent's role (``pro``, ``con``, ``moderator``, ``member`` or your own word): the default of its
    participant role in every Conversation that sets none, shown in transcripts. ``pro``/``con``/
    ``member`` pick the turn instruction; any other word gets the ``member`` one."""
    persona: str = Field(min_length=1, max_length=16000)
    """The system prompt of every turn (who the agent is, how it speaks)."""
    model_policy_ref: ModelPolicyRef | None = None
    """The ModelPolicy this agent calls (required): the gateway serves it as the model named after the
    policy."""
    model: str | None = Field(default=None, min_length=1, max_length=256)
    """Pin one target of ``modelPolicyRef`` by its name: every call goes to that target only (no routes, no
    failover to the policy's other targets; ``fallbackPolicies`` still apply). Unset: the policy chooses."""
    fallback_policies: list[ModelPolicyRef] = Field(default_factory=list)
    """ModelPolicies tried in order when ``modelPolicyRef`` fails a call (after its own retries and
    failover)."""
    replicas: int = Field(default=2, ge=1, le=5)
    """Pods: one active consumer and ``replicas - 1`` hot standbys that take over mid-turn."""
    resources: Resources = Field(default_factory=Resources)
    """Resources of each replica's container."""
    image: str | None = Field(default=None, max_length=512)
    """Container image for this agent (default: the operator's agent image, the chart's ``image``)."""
    env: list[EnvVar] = Field(default_factory=list)
    """Extra environment variables of the container (runtime knobs ``STOA_*`` or your own)."""
    memory: Memory = Field(default_factory=Memory)
    """Private memory settings."""
    priority: Priority = Field(default=Priority.NORMAL)
    """Priority of this agent's model calls in conversations that set none (header ``X-Stoa-Priority``)."""
    slo: AgentSLO | None = None
    """Service level objectives over this agent's turns (status.slo, Prometheus rules)."""
    probe: Probe | None = None
    """A synthetic one-turn conversation run on a schedule (status.probe)."""

    @model_validator(mode="after")
    def _needs_policy(self) -> Self:
        if self.model_policy_ref is None:
            raise ValueError(NEEDS_POLICY)
        if any(ref.name == self.model_policy_ref.name for ref in self.fallback_policies):
            raise ValueError("fallbackPolicies must not repeat modelPolicyRef")
        return self

    def policy_name(self) -> str:
        """The ModelPolicy name (the validator guarantees there is one)."""
        assert self.model_policy_ref is not None
        return self.model_policy_ref.name
