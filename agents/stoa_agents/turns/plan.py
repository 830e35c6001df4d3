"""Planning one turn (pure): admit the delivery, build the prompt's context, decide what comes next.

The runtime gathers the inputs (the conversation row, the history, the memory) and applies the result
(commit, publish); every decision in between is here, tested with plain tables.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from stoa_agents.identity import conversation_namespace, participant_key
from stoa_agents.protocol import TurnMessage, make_message
from stoa_agents.turns.policy import TERMINAL_PHASES, End, Phase, Turn, after_turn, speaker_for, turn_limit
from stoa_agents.turns.prompts import TurnContext
from stoa_api.conversation import ConversationSpec, TurnPolicyType


class UnknownConversationError(LookupError):
    """The message names a conversation the store does not have."""


class MisroutedError(ValueError):
    """The message belongs to another agent, namespace or seq."""


class Admission(StrEnum):
    RUN = "run"  # take the turn
    DUPLICATE = "duplicate"  # stored already (a redelivery): republish its outbox and ack
    FINISHED = "finished"  # the conversation ended: ack
    PARK = "park"  # suspended: remember the message instead of taking the turn


@dataclass(frozen=True)
class ConversationState:
    """What admission reads of a stored conversation."""

    id: str
    name: str
    phase: Phase
    next_seq: int


def admit(
    conv: ConversationState | None, msg: TurnMessage, *, agent: str, namespace: str, processed: bool
) -> Admission:
    """Dedupe and phase checks, in the order that keeps a redelivery harmless; raises when the message
    can never be processed here (unknown conversation, another agent's or namespace's, a future seq)."""
    if msg.to != agent:
        raise MisroutedError(f"message for {msg.to} delivered to {agent}")
    if conv is None:
        raise UnknownConversationError(f"no conversation {msg.conversation_id} ({msg.conversation})")
    if conversation_namespace(conv.name) != namespace:
        raise MisroutedError(f"conversation {conv.name} is not in namespace {namespace!r}")
    if msg.seq < conv.next_seq or processed:
        return Admission.DUPLICATE
    if conv.phase in TERMINAL_PHASES:
        return Admission.FINISHED
    if msg.seq > conv.next_seq:
        raise MisroutedError(f"seq {msg.seq} is ahead of the conversation (next is {conv.next_seq})")
    if conv.phase is Phase.SUSPENDED:
        return Admission.PARK
    return Admission.RUN


def history_window(speaker_history_turns: int, spec_speakers: int) -> int:
    """How many latest turns a turn must read: the prompt's recent turns, and two rounds (each speaker's
    last two turns in round robin). With each speaker's own last two turns (read as well) that is
    everything the policy uses: the previous turn, who spoke last (least recent speaker), and whether
    each speaker repeats its previous turn. Reading the whole history would grow each turn with the
    conversation."""
    return max(speaker_history_turns, 2 * spec_speakers + 1, 1)


def windowed(history: list[Turn], recent: int) -> list[Turn]:
    """The turns a turn reads (what ``repo.load_turn_inputs`` selects): the ``recent`` latest, plus each
    speaker's last two, in seq order."""
    own: dict[str, int] = {}
    keep = []
    for index, turn in enumerate(reversed(history)):
        own[turn.speaker] = own.get(turn.speaker, 0) + 1
        if index < recent or own[turn.speaker] <= 2:
            keep.append(turn)
    return keep[::-1]


@dataclass(frozen=True)
class Speaker:
    """The agent taking the turn, as its settings describe it."""

    agent: str
    role: str  # the Agent's role, used when the conversation gives none
    persona: str
    history_turns: int


def turn_context(
    spec: ConversationSpec, seq: int, history: list[Turn], memory: list[str], speaker: Speaker
) -> TurnContext:
    """The prompt's inputs; raises ``MisroutedError`` when the turn belongs to another agent."""
    expected = speaker_for(spec, seq, history)
    if expected != speaker.agent:
        raise MisroutedError(f"turn {seq} belongs to {expected}, not {speaker.agent}")
    participant = spec.participant(speaker.agent)
    # The participant role when the Conversation sets one, else the Agent's own role (the default).
    role = (
        participant.role.value if participant is not None and participant.role is not None else speaker.role
    )
    moderator = spec.moderator_name()
    if speaker.agent == moderator:
        role = "moderator"
    members = [p.agent_ref for p in spec.participants if p.agent_ref != moderator]
    selected = spec.turn_policy.type is TurnPolicyType.MODERATOR_SELECTED
    return TurnContext(
        agent=speaker.agent,
        role=role,
        persona=speaker.persona,
        topic=spec.topic,
        seq=seq,
        turn_limit=turn_limit(spec),
        history=history,
        memory=memory,
        history_turns=speaker.history_turns,
        next_speakers=members if selected else None,
        moderator=moderator,
    )


@dataclass(frozen=True)
class NextStep:
    """After a turn: the next message (its id, seq, routing key and body), or how the conversation ends."""

    message: TurnMessage | None
    routing_key: str | None
    end: tuple[Phase, str] | None


def next_step(
    conv: ConversationState,
    spec: ConversationSpec,
    history: list[Turn],
    msg: TurnMessage,
    content: str,
    *,
    traceparent: str,
) -> NextStep:
    """``history`` is before this turn; ``content`` is what the speaker (``msg.to``) said."""
    decision = after_turn(spec, [*history, Turn(msg.seq, msg.to, content)])
    if isinstance(decision, End):
        return NextStep(None, None, (decision.phase, decision.reason))
    nxt = make_message(
        conv.id,
        conv.name,
        decision.seq,
        sender=msg.to,
        to=decision.speaker,
        traceparent=traceparent,
        priority=spec.priority,
    )
    return NextStep(nxt, participant_key(conv.name, decision.speaker), None)
