"""Planning one turn (``turns.plan``): admission table, the speaker's context, what comes next."""

from __future__ import annotations

import json
import random

import pytest

from stoa_agents.protocol import TurnMessage, make_message
from stoa_agents.turns.plan import (
    Admission,
    ConversationState,
    MisroutedError,
    Speaker,
    UnknownConversationError,
    admit,
    history_window,
    next_step,
    turn_context,
    windowed,
)
from stoa_agents.turns.policy import Phase, Turn, after_turn, speaker_for
from stoa_agents.turns.prompts import build_messages
from stoa_api.conversation import ConversationSpec
from stoa_gateway.policy import Priority

CONV_ID = "0b7c8f1e-6a57-4b4b-9f55-1f1e0c0f3a11"
SPEC = ConversationSpec.model_validate(
    {
        "topic": "AI and jobs",
        "participants": [
            {"agentRef": "mod", "role": "moderator"},
            {"agentRef": "ada", "role": "pro"},
            {"agentRef": "ben", "role": "con"},
        ],
        "moderator": "mod",
        "maxTurns": 4,
    }
)


def _msg(seq: int = 3, to: str = "ada", conversation: str = "ns/debate") -> TurnMessage:
    return make_message(CONV_ID, conversation, seq, sender="mod", to=to, traceparent=None)


def _conv(phase: Phase = Phase.RUNNING, next_seq: int = 3, name: str = "ns/debate") -> ConversationState:
    return ConversationState(CONV_ID, name, phase, next_seq)


@pytest.mark.parametrize(
    ("conv", "msg", "processed", "expected"),
    [
        (_conv(), _msg(), False, Admission.RUN),
        (_conv(next_seq=4), _msg(), False, Admission.DUPLICATE),  # a later turn is stored: redelivery
        (_conv(), _msg(), True, Admission.DUPLICATE),  # this message id is processed
        (_conv(Phase.SUCCEEDED), _msg(), False, Admission.FINISHED),
        (_conv(Phase.FAILED, next_seq=4), _msg(), False, Admission.DUPLICATE),  # dedupe before phase
        (_conv(Phase.SUSPENDED), _msg(), False, Admission.PARK),
        (_conv(Phase.PENDING), _msg(), False, Admission.RUN),
    ],
)
def test_admission_table(
    conv: ConversationState, msg: TurnMessage, processed: bool, expected: Admission
) -> None:
    assert admit(conv, msg, agent="ada", namespace="ns", processed=processed) is expected


@pytest.mark.parametrize(
    ("conv", "msg", "error", "text"),
    [
        (_conv(), _msg(to="ben"), MisroutedError, "message for ben delivered to ada"),
        (None, _msg(), UnknownConversationError, "no conversation"),
        (_conv(name="other/debate"), _msg(), MisroutedError, "not in namespace 'ns'"),
        (_conv(next_seq=2), _msg(), MisroutedError, "seq 3 is ahead of the conversation (next is 2)"),
    ],
)
def test_admission_refuses_what_can_never_run_here(
    conv: ConversationState | None, msg: TurnMessage, error: type[Exception], text: str
) -> None:
    with pytest.raises(error, match=text.replace("(", r"\(").replace(")", r"\)")):
        admit(conv, msg, agent="ada", namespace="ns", processed=False)


def test_turn_context_takes_the_conversation_role_and_refuses_another_speakers_turn() -> None:
    history = [Turn(1, "mod", "Welcome."), Turn(2, "ada", "Jobs grow.")]
    ben = Speaker("ben", role="member", persona="You are Ben.", history_turns=2)
    ctx = turn_context(SPEC, 3, history, ["I said wages fall."], ben)
    assert (ctx.role, ctx.persona, ctx.seq, ctx.turn_limit) == ("con", "You are Ben.", 3, 4)
    assert ctx.memory == ["I said wages fall."]
    assert ctx.next_speakers is None
    with pytest.raises(MisroutedError, match="turn 3 belongs to ben, not ada"):
        turn_context(SPEC, 3, history, [], Speaker("ada", "pro", "p", 2))
    moderator = turn_context(SPEC, 1, [], [], Speaker("mod", role="member", persona="p", history_turns=2))
    assert moderator.role == "moderator"


def test_next_step_asks_the_next_speaker_or_ends() -> None:
    history = [Turn(1, "mod", "Welcome."), Turn(2, "ada", "Jobs grow.")]
    step = next_step(
        _conv(),
        SPEC,
        history,
        _msg(to="ben"),
        "Wages fall.",
        traceparent="00-" + "a" * 32 + "-" + "b" * 16 + "-01",
    )
    assert step.end is None
    assert step.message is not None
    assert (step.message.seq, step.message.to, step.message.from_) == (4, "mod", "ben")
    assert step.message.message_id == f"{CONV_ID}:4"
    assert step.routing_key is not None
    assert "mod" in step.routing_key
    last = next_step(
        _conv(next_seq=4),
        SPEC,
        [*history, Turn(3, "ben", "Wages fall.")],
        _msg(seq=4, to="mod"),
        "Team A argued better. VERDICT: END done",
        traceparent="",
    )
    assert last.message is None
    assert last.end is not None
    assert last.end[0] is Phase.SUCCEEDED


def test_the_conversation_priority_rides_on_every_next_message() -> None:
    urgent = SPEC.model_copy(update={"priority": Priority.CRITICAL})
    history = [Turn(1, "mod", "Welcome."), Turn(2, "ada", "Jobs grow.")]
    step = next_step(_conv(), urgent, history, _msg(to="ben"), "Wages fall.", traceparent="")
    assert step.message is not None
    assert step.message.priority is Priority.CRITICAL
    assert json.loads(step.message.body())["priority"] == "critical"
    plain = next_step(_conv(), SPEC, history, _msg(to="ben"), "Wages fall.", traceparent="")
    assert plain.message is not None
    assert "priority" not in json.loads(plain.message.body())  # readers of schema 1 forbid unknown keys


@pytest.mark.parametrize("policy", ["roundRobin", "moderatorSelected"])
@pytest.mark.parametrize("history_turns", [0, 2, 6])
def test_the_history_window_decides_exactly_as_the_whole_history(policy: str, history_turns: int) -> None:
    """Every decision and prompt made from the turns a turn reads equals the one from all turns."""
    rng = random.Random(7)
    members = ["ada", "ben", "cy", "dee"]
    spec = ConversationSpec.model_validate(
        {
            "topic": "t",
            "participants": [{"agentRef": "mod", "role": "moderator"}, *({"agentRef": m} for m in members)],
            "moderator": "mod",
            "maxTurns": 200,
            "turnPolicy": {"type": policy},
        }
    )
    window = history_window(history_turns, len(spec.participants))
    history: list[Turn] = []
    # The moderator mostly names ada, so the others speak rarely and their last turns fall far behind
    # the latest ones (least recent speaker, repetition): the window must still see them.
    moderator_lines = ["NEXT: ada"] * 8 + ["VERDICT: CONTINUE", "NEXT: cy"]
    lines = ["Jobs grow and pay.", "Wages fall for clerks.", "Jobs grow and pay."]
    for seq in range(1, 120):
        speaker = speaker_for(spec, seq, history)
        seen = windowed(history, window)
        assert speaker_for(spec, seq, seen) == speaker
        speaking = Speaker(speaker, "member", "p", history_turns)
        assert build_messages(turn_context(spec, seq, seen, [], speaking)) == build_messages(
            turn_context(spec, seq, history, [], speaking)
        )
        new = Turn(seq, speaker, rng.choice(moderator_lines if speaker == "mod" else lines))
        assert after_turn(spec, [*seen, new]) == after_turn(spec, [*history, new])  # as next_step calls it
        history.append(new)


def test_a_spec_stored_by_an_earlier_version_still_loads() -> None:
    """0.1.0 stored participants with `team` (removed in 0.2.0): a conversation started before an upgrade
    goes on after it (tests/e2e/node/test_lifecycle_node.py runs that upgrade)."""
    stored = {
        "topic": "t",
        "participants": [{"agentRef": "a", "role": "pro", "team": "A"}, {"agentRef": "b", "role": "member"}],
        "maxTurns": 4,
    }
    spec = ConversationSpec.from_stored(stored)
    assert [(p.agent_ref, p.role) for p in spec.participants] == [("a", "pro"), ("b", "member")]
