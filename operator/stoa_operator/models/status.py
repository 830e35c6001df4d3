"""The status types of Stoa's kinds live in ``stoa_api.status`` (shared with the runtime); re-exported."""

from stoa_api.status import (
    AgentShare,
    AgentStatus,
    Condition,
    ConditionStatus,
    ConversationPhase,
    ConversationStatus,
    ModelPolicyStatus,
    TargetHealth,
)

__all__ = [
    "AgentShare",
    "AgentStatus",
    "Condition",
    "ConditionStatus",
    "ConversationPhase",
    "ConversationStatus",
    "ModelPolicyStatus",
    "TargetHealth",
]
