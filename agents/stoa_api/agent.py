"""``spec`` of the ``Agent`` custom resource: one role played by a set of replicas (active + standbys)."""

from __future__ import annotations

from pydantic import Field

from stoa_api.base import NAME_PATTERN, Spec
from stoa_gateway.policy import Priority
from stoa_telemetry.spec import AgentSLO, Probe


class ModelPolicyRef(Spec):
    name: str = Field(pattern=NAME_PATTERN, max_length=63)


class ResourceList(Spec):
    cpu: str | None = None
    memory: str | None = None


class Resources(Spec):
    requests: ResourceList = Field(default_factory=ResourceList)
    limits: ResourceList = Field(default_factory=ResourceList)


class EnvVar(Spec):
    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", max_length=128)
    value: str = ""


class Memory(Spec):
    """Private memory of the agent (its own Postgres schema); retention in days, 0 keeps forever."""

    enabled: bool = True
    retention_days: int = Field(default=30, ge=0, le=3650)


class AgentSpec(Spec):
    role: str = Field(min_length=1, max_length=63)
    persona: str = Field(min_length=1, max_length=16000)
    model_policy_ref: ModelPolicyRef | None = None
    model: str | None = Field(default=None, min_length=1, max_length=256)
    fallback_policies: list[ModelPolicyRef] = Field(default_factory=list)
    replicas: int = Field(default=2, ge=1, le=5)
    resources: Resources = Field(default_factory=Resources)
    image: str | None = Field(default=None, max_length=512)
    env: list[EnvVar] = Field(default_factory=list)
    memory: Memory = Field(default_factory=Memory)
    priority: Priority = Field(
        default=Priority.NORMAL,
        description="priority of this agent's model calls in conversations that set none (X-Stoa-Priority)",
    )
    slo: AgentSLO | None = None
    probe: Probe | None = None
