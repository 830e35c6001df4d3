"""``spec`` of the ``Conversation`` custom resource: who talks, in which order, and when it ends."""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Any, Self

from pydantic import Field, model_validator

from stoa_api.base import NAME_PATTERN, Spec
from stoa_gateway.policy import Priority


class ParticipantRole(StrEnum):
    """What a participant does: argue for, argue against, moderate, or contribute."""

    PRO = "pro"
    CON = "con"
    MODERATOR = "moderator"
    MEMBER = "member"


class TurnPolicyType(StrEnum):
    """Who speaks next."""

    ROUND_ROBIN = "roundRobin"
    MODERATOR_SELECTED = "moderatorSelected"


class TranscriptRetention(StrEnum):
    """What deleting the resource does to the stored transcript."""

    KEEP = "keep"
    PURGE = "purge"


class Participant(Spec):
    """One agent taking part."""

    agent_ref: str = Field(pattern=NAME_PATTERN, max_length=63)
    """Name of an Agent in the Conversation's namespace."""
    role: ParticipantRole | None = None
    """Its role in this conversation. Unset: the Agent's ``spec.role`` (``member`` when that is not one of
    these values)."""


class TurnPolicy(Spec):
    """How the next speaker is chosen."""

    type: TurnPolicyType = TurnPolicyType.ROUND_ROBIN
    """``roundRobin``: participants in order (the moderator opens and closes each round);
    ``moderatorSelected``: the moderator names the next speaker (a ``NEXT: <name>`` line), needs a
    moderator."""


# Participant fields earlier versions accepted and stored, since removed (nothing read them): dropped when
# a stored spec is read back, so a conversation started before an upgrade goes on after it.
REMOVED_PARTICIPANT_FIELDS = ("team",)  # removed in 0.2.0


class ConversationSpec(Spec):
    """A multi-agent conversation: started once by the operator, run by the agents through RabbitMQ, each
    turn stored exactly once in PostgreSQL."""

    topic: str = Field(min_length=1, max_length=2000)
    """What the conversation is about (in every turn's system prompt). Immutable."""
    participants: list[Participant] = Field(min_length=1, max_length=32)
    """The agents taking part, each once. Immutable."""
    turn_policy: TurnPolicy = Field(default_factory=TurnPolicy)
    """Who speaks next."""
    max_turns: int = Field(default=20, ge=1, le=200)
    """Hard limit on stored turns (the moderator's closing turn included)."""
    moderator: str | None = Field(default=None, pattern=NAME_PATTERN, max_length=63)
    """The participant who moderates (opens, closes, ends with ``VERDICT: END``). Unset: the participant
    whose role is ``moderator``, if any."""
    max_rounds: int | None = Field(default=None, ge=1, le=200)
    """With a moderator: rounds of every other participant speaking once; the conversation then ends with
    the moderator's closing turn (turns = rounds x participants + 1, at most ``maxTurns``)."""
    suspend: bool = False
    """true pauses after the turn in flight (phase Suspended); false resumes where it stopped."""
    stop: bool = False
    """true ends the conversation now (phase Failed, reason 'Stopped by request'); it cannot be set back to
    false."""
    transcript_retention: TranscriptRetention = TranscriptRetention.KEEP
    """On deletion of the resource: ``keep`` the transcript in PostgreSQL, archived under
    ``<namespace>/<name>@<first 8 characters of its uid>`` so the name is free for a new Conversation;
    ``purge`` deletes it and the participants' notes about it."""
    priority: Priority | None = None
    """Priority of every turn's message and model call; unset: each agent's ``spec.priority``."""

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        names = [p.agent_ref for p in self.participants]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"participants listed twice: {', '.join(dupes)}")
        if self.moderator is not None and self.moderator not in names:
            raise ValueError(f"moderator {self.moderator} is not a participant")
        moderators = [p.agent_ref for p in self.participants if p.role is ParticipantRole.MODERATOR]
        if len(moderators) > 1:
            raise ValueError(f"at most one participant may have role moderator: {', '.join(moderators)}")
        if self.turn_policy.type is TurnPolicyType.MODERATOR_SELECTED and self.moderator_name() is None:
            raise ValueError("turnPolicy moderatorSelected needs a moderator")
        return self

    @classmethod
    def from_stored(cls, data: Mapping[str, Any]) -> ConversationSpec:
        """A spec as the runtime stored it when the conversation started (maybe by an earlier version)."""
        participants = [
            {k: v for k, v in p.items() if k not in REMOVED_PARTICIPANT_FIELDS} if isinstance(p, dict) else p
            for p in data.get("participants") or []
        ]
        return cls.model_validate({**data, "participants": participants})

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

    def with_agent_roles(self, agent_roles: Mapping[str, str]) -> ConversationSpec:
        """The spec as the runtime stores it: each participant without a role gets its Agent's
        ``spec.role`` when that is a participant role (the Agent's role is the default). Raises
        ``ValueError`` (saying which participant to fix) when that makes two moderators."""
        roles = {r.value for r in ParticipantRole}
        participants = []
        for participant in self.participants:
            role = participant.role
            agent_role = agent_roles.get(participant.agent_ref)
            if role is None and agent_role in roles:
                role = ParticipantRole(agent_role)
            participants.append(participant.model_copy(update={"role": role}))
        moderators = [p.agent_ref for p in participants if p.role is ParticipantRole.MODERATOR]
        if len(moderators) > 1:
            defaulted = [n for n in moderators if (self.participant(n) or participants[0]).role is None]
            raise ValueError(
                f"participants {', '.join(moderators)} would all be moderators ("
                + ", ".join(f"{n} from its Agent's spec.role" for n in defaulted)
                + "): set their participant role"
            )
        return self.model_copy(update={"participants": participants})
