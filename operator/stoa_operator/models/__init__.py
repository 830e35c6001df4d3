"""Pydantic types of Stoa's custom resources: specs (owned by stoa_api / stoa_gateway) and statuses."""

from stoa_api.agent import AgentSpec
from stoa_api.conversation import ConversationSpec
from stoa_gateway.policy import ModelPolicySpec
from stoa_operator.models.kinds import AGENT, CONVERSATION, KINDS, MODEL_POLICY, Kind
from stoa_operator.models.status import (
    AgentStatus,
    Condition,
    ConditionStatus,
    ConversationPhase,
    ConversationStatus,
    ModelPolicyStatus,
    TargetHealth,
)

__all__ = [
    "AGENT",
    "CONVERSATION",
    "KINDS",
    "MODEL_POLICY",
    "AgentSpec",
    "AgentStatus",
    "Condition",
    "ConditionStatus",
    "ConversationPhase",
    "ConversationSpec",
    "ConversationStatus",
    "Kind",
    "ModelPolicySpec",
    "ModelPolicyStatus",
    "TargetHealth",
]
