"""The three kinds: names, spec/status types, printer columns and CEL rules (the CRD source of truth)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from stoa_agents.envcontract import SPEC_ENV, TUNABLE_ENV
from stoa_api.agent import NEEDS_POLICY, AgentSpec
from stoa_api.base import GROUP, VERSION
from stoa_api.conversation import ConversationSpec
from stoa_gateway.policy import ModelPolicySpec
from stoa_operator.models.status import AgentStatus, ConversationStatus, ModelPolicyStatus

CATEGORY = "stoa"


@dataclass(frozen=True)
class Rule:
    rule: str
    message: str
    field_path: str | None = None
    reason: str | None = None

    def render(self) -> dict[str, Any]:
        out: dict[str, Any] = {"rule": self.rule, "message": self.message}
        if self.field_path:
            out["fieldPath"] = self.field_path
        if self.reason:
            out["reason"] = self.reason
        return out


@dataclass(frozen=True)
class Kind:
    kind: str
    plural: str
    singular: str
    short_names: tuple[str, ...]
    spec: type[BaseModel]
    status: type[BaseModel]
    printer_columns: tuple[dict[str, Any], ...]
    # JSON path of a schema node (".spec", ".spec.targets[]") -> CEL rules on that node.
    rules: dict[str, tuple[Rule, ...]] = field(default_factory=dict)
    # JSON path -> schema keys the pydantic model cannot express (e.g. maxItems bounding CEL cost).
    extra: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def group(self) -> str:
        return GROUP

    @property
    def version(self) -> str:
        return VERSION

    @property
    def api_version(self) -> str:
        return f"{GROUP}/{VERSION}"

    @property
    def crd_name(self) -> str:
        return f"{self.plural}.{GROUP}"


def _ready(priority: int = 0) -> dict[str, Any]:
    return {
        "name": "Ready",
        "type": "string",
        "jsonPath": '.status.conditions[?(@.type=="Ready")].status',
        "priority": priority,
    }


def _reason() -> dict[str, Any]:
    return {
        "name": "Reason",
        "type": "string",
        "jsonPath": '.status.conditions[?(@.type=="Ready")].reason',
        "priority": 1,
    }


# From the env contract (stoa_agents.envcontract): the variables the builder derives from the spec may not
# be set in spec.env; any other STOA_* name there must be a runtime knob (the runtime refuses others).
RESERVED_ENV = SPEC_ENV
_RESERVED_ENV = "[" + ", ".join(f"'{n}'" for n in RESERVED_ENV) + "]"
_AGENT_ENV = "[" + ", ".join(f"'{n}'" for n in (*RESERVED_ENV, *TUNABLE_ENV)) + "]"

AGE = {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}

MODEL_POLICY = Kind(
    kind="ModelPolicy",
    plural="modelpolicies",
    singular="modelpolicy",
    short_names=("mp",),
    spec=ModelPolicySpec,
    status=ModelPolicyStatus,
    printer_columns=(
        _ready(),
        {"name": "Strategy", "type": "string", "jsonPath": ".spec.strategy"},
        {"name": "Served", "type": "string", "jsonPath": ".status.served"},
        {"name": "Circuits", "type": "string", "jsonPath": ".status.circuits"},
        {"name": "Endpoint", "type": "string", "jsonPath": ".status.endpoint", "priority": 1},
        _reason(),
        AGE,
    ),
    rules={
        ".spec": (
            Rule(
                "self.targets.all(t, self.targets.exists_one(u, u.name == t.name))",
                "target names must be unique",
                ".targets",
            ),
            Rule(
                "!has(self.routes) || "
                "self.routes.all(r, r.targets.all(n, self.targets.exists(t, t.name == n)))",
                "every route target must name one of spec.targets",
                ".routes",
            ),
            Rule(
                "!has(self.routes) || self.routes.all(r, !has(r.fallbackTargets) || "
                "r.fallbackTargets.all(n, self.targets.exists(t, t.name == n)))",
                "every fallback target must name one of spec.targets",
                ".routes",
            ),
            Rule(
                "!has(self.routes) || self.routes.all(r, self.routes.exists_one(q, q.name == r.name))",
                "route names must be unique",
                ".routes",
            ),
            Rule(
                "self.strategy != 'weighted' || self.targets.exists(t, t.weight > 0)",
                "strategy weighted needs at least one target with weight > 0",
                ".targets",
            ),
        ),
        ".spec.targets[]": (
            Rule(
                "!has(self.apiKeyEnv)",
                "apiKeyEnv is for `stoa gateway --config` outside Kubernetes, where you set that variable "
                "yourself; on a cluster put the key in a Secret and name it in apiKeySecretRef (the operator "
                "maps it into the gateway pods)",
                ".apiKeyEnv",
            ),
        ),
        ".spec.retry": (
            Rule(
                "!has(self.maxBackoffSeconds) || !has(self.baseBackoffSeconds) || "
                "self.maxBackoffSeconds >= self.baseBackoffSeconds",
                "maxBackoffSeconds must be >= baseBackoffSeconds",
            ),
            Rule(
                "(!has(self.retryOnStatuses) || self.retryOnStatuses.all(s, s >= 100 && s <= 599)) && "
                "(!has(self.failoverOnStatuses) || self.failoverOnStatuses.all(s, s >= 100 && s <= 599))",
                "retryOnStatuses and failoverOnStatuses must be HTTP statuses (100-599)",
            ),
        ),
        ".spec.routes[].match": (
            Rule(
                "!has(self.minInputTokens) || !has(self.maxInputTokens) || "
                "self.minInputTokens <= self.maxInputTokens",
                "minInputTokens must be <= maxInputTokens",
            ),
        ),
    },
    extra={
        ".spec.targets": {"maxItems": 32},
        ".spec.routes": {"maxItems": 16},
        ".spec.routes[].targets": {"maxItems": 16},
        ".spec.routes[].fallbackTargets": {"maxItems": 16},
        ".spec.retry.retryOnStatuses": {"maxItems": 32},
        ".spec.retry.failoverOnStatuses": {"maxItems": 32},
    },
)


QUANTITIES = Rule(
    "(!has(self.cpu) || isQuantity(self.cpu)) && (!has(self.memory) || isQuantity(self.memory))",
    "cpu and memory must be Kubernetes quantities (e.g. 100m, 256Mi)",
)


def _requests_within_limits(resource: str) -> Rule:
    """CEL: when both are set and valid, ``requests.<resource>`` must not exceed ``limits.<resource>``."""
    req, lim = f"self.requests.{resource}", f"self.limits.{resource}"
    return Rule(
        f"!has(self.requests) || !has(self.limits) || !has({req}) || !has({lim}) || "
        f"!isQuantity({req}) || !isQuantity({lim}) || quantity({req}).compareTo(quantity({lim})) <= 0",
        f"requests.{resource} must not exceed limits.{resource}",
    )


AGENT = Kind(
    kind="Agent",
    plural="agents",
    singular="agent",
    short_names=("ag",),
    spec=AgentSpec,
    status=AgentStatus,
    printer_columns=(
        _ready(),
        {"name": "Role", "type": "string", "jsonPath": ".spec.role"},
        {"name": "Policy", "type": "string", "jsonPath": ".spec.modelPolicyRef.name"},
        {"name": "Replicas", "type": "integer", "jsonPath": ".spec.replicas"},
        {"name": "Available", "type": "integer", "jsonPath": ".status.readyReplicas"},
        {"name": "Standby", "type": "integer", "jsonPath": ".status.standbyReplicas"},
        {"name": "Active", "type": "string", "jsonPath": ".status.activePod"},
        {"name": "Budget", "type": "string", "jsonPath": ".status.errorBudgetRemaining"},
        {"name": "Turns", "type": "integer", "jsonPath": ".status.turnsHandled", "priority": 1},
        {"name": "Cost", "type": "number", "jsonPath": ".status.costUSD", "priority": 1},
        _reason(),
        AGE,
    ),
    rules={
        "": (
            Rule(
                "size(self.metadata.name) <= 57",
                "an Agent name must be at most 57 characters (its Deployment is agent-<name>)",
                reason="FieldValueInvalid",
            ),
        ),
        ".spec": (
            Rule("has(self.modelPolicyRef)", NEEDS_POLICY, ".modelPolicyRef", reason="FieldValueRequired"),
            Rule(
                "!has(self.fallbackPolicies) || !has(self.modelPolicyRef) || "
                "self.fallbackPolicies.all(f, f.name != self.modelPolicyRef.name)",
                "fallbackPolicies must not repeat modelPolicyRef",
                ".fallbackPolicies",
            ),
            Rule(
                "!has(self.env) || self.env.all(e, self.env.exists_one(f, f.name == e.name))",
                "env names must be unique",
                ".env",
            ),
            Rule(
                "!has(self.env) || self.env.all(e, !(e.name in " + _RESERVED_ENV + "))",
                "env must not set the STOA_* variables the operator derives from the spec "
                "(agent, persona, model, connection, memory, metrics)",
                ".env",
            ),
            Rule(
                "!has(self.env) || self.env.all(e, !e.name.startsWith('STOA_') || e.name in "
                + _AGENT_ENV
                + ")",
                "env STOA_* names must be agent runtime settings (docs/runtime.md, Configuration)",
                ".env",
            ),
        ),
        ".spec.resources.requests": (QUANTITIES,),
        ".spec.resources.limits": (QUANTITIES,),
        ".spec.resources": (_requests_within_limits("cpu"), _requests_within_limits("memory")),
    },
    extra={
        ".spec.fallbackPolicies": {"maxItems": 8},
        ".spec.env": {"maxItems": 64},
        ".spec.resources.requests.cpu": {"maxLength": 32},
        ".spec.resources.requests.memory": {"maxLength": 32},
        ".spec.resources.limits.cpu": {"maxLength": 32},
        ".spec.resources.limits.memory": {"maxLength": 32},
        ".spec.env[].value": {"maxLength": 4096},
    },
)

CONVERSATION = Kind(
    kind="Conversation",
    plural="conversations",
    singular="conversation",
    short_names=("conv",),
    spec=ConversationSpec,
    status=ConversationStatus,
    printer_columns=(
        {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
        {"name": "Turns", "type": "integer", "jsonPath": ".status.turns"},
        {"name": "Max", "type": "integer", "jsonPath": ".spec.maxTurns"},
        {"name": "Last", "type": "string", "jsonPath": ".status.lastSpeaker"},
        _ready(),
        {"name": "Cost", "type": "number", "jsonPath": ".status.costUSD", "priority": 1},
        {"name": "Transcript", "type": "string", "jsonPath": ".status.transcript", "priority": 1},
        AGE,
    ),
    rules={
        ".spec": (
            Rule(
                "self.participants.all(p, self.participants.exists_one(q, q.agentRef == p.agentRef))",
                "participants must name each agent once",
                ".participants",
            ),
            Rule(
                "!has(self.moderator) || self.participants.exists(p, p.agentRef == self.moderator)",
                "moderator must be one of the participants",
                ".moderator",
            ),
            Rule(
                "self.participants.filter(p, has(p.role) && p.role == 'moderator').size() <= 1",
                "at most one participant may have role moderator",
                ".participants",
            ),
            Rule(
                "!has(self.turnPolicy) || self.turnPolicy.type != 'moderatorSelected' || "
                "has(self.moderator) || "
                "self.participants.exists(p, has(p.role) && p.role == 'moderator')",
                "turnPolicy moderatorSelected needs a moderator",
                ".turnPolicy.type",
            ),
            Rule("self.topic == oldSelf.topic", "topic is immutable", ".topic"),
            Rule(
                "self.participants == oldSelf.participants",
                "participants are immutable once the conversation exists",
                ".participants",
            ),
            Rule(
                "!has(oldSelf.stop) || !oldSelf.stop || (has(self.stop) && self.stop)",
                "a stopped conversation cannot be started again (stop cannot go back to false)",
                ".stop",
            ),
        ),
    },
)

KINDS: tuple[Kind, ...] = (MODEL_POLICY, AGENT, CONVERSATION)
