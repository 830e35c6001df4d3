"""Conversation policy: who speaks, when it ends, verdict parsing, repetition."""

from __future__ import annotations

import pytest

from stoa_agents.turns.policy import (
    End,
    Next,
    Phase,
    Turn,
    VerdictKind,
    after_turn,
    is_repetitive,
    parse_next_speaker,
    parse_verdict,
    similarity,
    speaker_for,
    speaking_order,
    turn_limit,
)
from stoa_api.conversation import ConversationSpec


def debate(**overrides: object) -> ConversationSpec:
    data: dict[str, object] = {
        "topic": "AI and jobs",
        "participants": [
            {"agentRef": "team-a", "role": "pro"},
            {"agentRef": "team-b", "role": "con"},
            {"agentRef": "mod", "role": "moderator"},
        ],
        "moderator": "mod",
        "maxTurns": 30,
        "maxRounds": 2,
    }
    data.update(overrides)
    return ConversationSpec.model_validate(data)


def turns(*items: tuple[str, str]) -> list[Turn]:
    return [Turn(i + 1, speaker, text) for i, (speaker, text) in enumerate(items)]


def test_moderator_opens_each_round_then_participants_in_order() -> None:
    spec = debate()
    assert speaking_order(spec) == ["mod", "team-a", "team-b"]
    assert [speaker_for(spec, seq, []) for seq in range(1, 8)] == [
        "mod",
        "team-a",
        "team-b",
        "mod",
        "team-a",
        "team-b",
        "mod",
    ]


@pytest.mark.parametrize(
    ("overrides", "limit"),
    [
        ({"maxRounds": 2}, 7),  # 2 rounds of 3 + closing moderator turn
        ({"maxRounds": 8}, 25),
        ({"maxRounds": 20, "maxTurns": 10}, 10),
        ({"maxRounds": None, "maxTurns": 4}, 4),
    ],
)
def test_turn_limit(overrides: dict[str, object], limit: int) -> None:
    assert turn_limit(debate(**overrides)) == limit


def test_ends_after_rounds_with_reason() -> None:
    spec = debate()
    history = turns(
        *[(speaker_for(spec, i, []), f"distinct point number {i} about jobs") for i in range(1, 8)]
    )
    assert after_turn(spec, history) == End(Phase.SUCCEEDED, "Completed 2 rounds")


def test_max_turns_reason() -> None:
    spec = debate(maxRounds=None, maxTurns=2)
    decision = after_turn(spec, turns(("mod", "welcome"), ("team-a", "AI creates jobs")))
    assert decision == End(Phase.SUCCEEDED, "Reached maxTurns (2)")


def test_continues_with_next_speaker() -> None:
    spec = debate()
    assert after_turn(spec, turns(("mod", "welcome"))) == Next(seq=2, speaker="team-a")


def test_moderator_end_verdict_is_honoured_after_the_first_round() -> None:
    spec = debate(maxRounds=8)
    early = turns(("mod", "Welcome. VERDICT: END bored"))
    assert isinstance(after_turn(spec, early), Next)
    history = turns(
        ("mod", "hi"),
        ("team-a", "AI creates jobs in care"),
        ("team-b", "AI removes clerks"),
        ("mod", "Both repeat.\nVERDICT: END the exchange is no longer productive"),
    )
    decision = after_turn(spec, history)
    assert isinstance(decision, End)
    assert decision.reason == "Moderator ended the conversation: the exchange is no longer productive"


@pytest.mark.parametrize(
    ("text", "kind", "reason"),
    [
        ("VERDICT: CONTINUE", VerdictKind.CONTINUE, ""),
        ("blah\nverdict: end they agree now.", VerdictKind.END, "they agree now"),
        ("**Verdict:** END - repetition", VerdictKind.END, "repetition"),
        ("Verdict - STOP", VerdictKind.END, ""),
        ("VERDICT: END first\nVERDICT: CONTINUE", VerdictKind.CONTINUE, ""),
        ("no verdict here at all", VerdictKind.NONE, ""),
        ("The verdict is unclear", VerdictKind.NONE, ""),
    ],
)
def test_parse_verdict(text: str, kind: VerdictKind, reason: str) -> None:
    verdict = parse_verdict(text)
    assert verdict.kind is kind
    assert verdict.reason == reason


def test_repetition_ends_the_conversation() -> None:
    spec = debate(maxRounds=8)
    same_a = "AI creates many new jobs in healthcare and logistics every year"
    same_b = "AI destroys jobs of cashiers and drivers and lowers wages for all"
    history = turns(
        ("mod", "hi"),
        ("team-a", same_a),
        ("team-b", same_b),
        ("mod", "go on"),
        ("team-a", same_a + "!"),
        ("team-b", same_b),
    )
    assert is_repetitive(spec, history)
    decision = after_turn(spec, history)
    assert decision == End(Phase.SUCCEEDED, "Not productive: participants are repeating themselves")


def test_different_turns_are_not_repetitive() -> None:
    spec = debate(maxRounds=8)
    history = turns(
        ("mod", "hi"),
        ("team-a", "AI creates jobs in care"),
        ("team-b", "AI removes clerks"),
        ("mod", "go on"),
        ("team-a", "Robots make factories safer for workers"),
        ("team-b", "Drivers lose their income to autonomous trucks"),
    )
    assert not is_repetitive(spec, history)


def test_similarity_bounds() -> None:
    assert similarity("a b c d", "a b c d") == 1.0
    assert similarity("one two three", "four five six") == 0.0
    assert similarity("", "") == 1.0


def test_moderator_selected_picks_named_speaker_or_least_recent() -> None:
    spec = debate(turnPolicy={"type": "moderatorSelected"})
    assert speaker_for(spec, 1, []) == "mod"
    history = turns(("mod", "Good.\nNEXT: team-b\nVERDICT: CONTINUE"))
    assert speaker_for(spec, 2, history) == "team-b"
    history = turns(("mod", "x"), ("team-a", "y"), ("mod", "no name given"))
    assert speaker_for(spec, 4, history) == "team-b"
    assert speaker_for(spec, 5, history) == "mod"
    assert parse_next_speaker("next speaker: @Team-A", ["team-a", "team-b"]) == "team-a"
    assert parse_next_speaker("NEXT: nobody", ["team-a"]) is None


def test_moderator_selected_needs_a_moderator() -> None:
    with pytest.raises(ValueError, match="needs a moderator"):
        ConversationSpec.model_validate(
            {
                "topic": "t",
                "participants": [{"agentRef": "a"}],
                "turnPolicy": {"type": "moderatorSelected"},
            }
        )
