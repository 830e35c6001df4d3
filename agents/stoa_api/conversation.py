"""``spec`` of the ``Conversation`` custom resource: who talks, in which order, and when it ends."""

from __future__ import annotations

from enum import StrEnum
from typing import Self

from pydantic import Field, model_validator

from stoa_api.base import NAME_PATTERN, Spec
from stoa_gateway.policy import Priority


class ParticipantRole(StrEnum):
    PRO = "pro"
    CON = "con"
    MODERATOR = "moderator"
    MEMBER = "member"


class TurnPolicyType(StrEnum):
    ROUND_ROBIN = "roundRobin"
    MODERATOR_SELECTED = "moderatorSelected"


class TranscriptRetention(StrEnum):
    KEEP = "keep"
    PURGE = "purge"


class Participant(Spec):
    agent_ref: str = Field(pattern=NAME_PATTERN, max_length=63)
    role: ParticipantRole = ParticipantRole.MEMBER
    team: str | None = Field(default=None, max_length=63)


class TurnPolicy(Spec):
    type: TurnPolicyType = TurnPolicyType.ROUND_ROBIN


class ConversationSpec(Spec):
    topic: str = Field(min_length=1, max_length=2000)
    participants: list[Participant] = Field(min_length=1, max_length=32)
    turn_policy: TurnPolicy = Field(default_factory=TurnPolicy)
    max_turns: int = Field(default=20, ge=1, le=200)
    moderator: str | None = Field(default=None, pattern=NAME_PATTERN, max_length=63)
    max_rounds: int | None = Field(default=None, ge=1, le=200)
    suspend: bool = False
    stop: bool = Field(
        default=False,
        description="true ends the conversation now (phase Failed, reason 'Stopped by request'); "
        "it cannot be set back to false",
    )
    transcript_retention: TranscriptRetention = TranscriptRetention.KEEP
    priority: Priority | None = Field(
        default=None,
        description="priority of every turn's message and model call; unset: each agent's spec.priority",
    )

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        names = [p.agent_ref for p in self.participants]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"participants listed twice: {', '.join(dupes)}")
        if self.moderator is not None and self.moderator not in names:
            raise ValueError(f"moderator {self.moderator} is not a participant")
        if self.turn_policy.type is TurnPolicyType.MODERATOR_SELECTED and self.moderator_name() is None:
            raise ValueError("turnPolicy moderatorSelected needs a moderator")
        return self

    def moderator_name(self) -> str | None:
        """The moderator: ``moderator``, else the first participant with role moderator."""
        if self.moderator is not None:
            return self.moderator
        for participant in self.participants:
            if participant.role is ParticipantRole.MODERATOR:
                return participant.agent_ref
        return None

    def participant(self, agent: str) -> Participant | None:
        for participant in self.participants:
            if participant.agent_ref == agent:
                return participant
        return None
