"""A debate that reads as one (pure): debaters answer the last opposing argument, quoted and short; the
moderator's summary and verdict are lines of their own, and the verdict says what the runtime decided."""

from __future__ import annotations

from stoa_agents.turns.policy import Phase, Turn, after_turn, is_repetitive, parse_verdict
from stoa_agents.turns.prompts import TurnContext, build_messages, gist, opposing_turn, stored_content
from stoa_api.conversation import ConversationSpec

PRO = "You are Ada. Your position: AI creates more jobs than it destroys. Be brief."
HISTORY = [
    Turn(1, "mod", "Welcome. Team A, please begin."),
    Turn(
        2,
        "team-a",
        "AI creates jobs: hospitals hired data annotators when diagnostic AI arrived. More follows.",
    ),
    Turn(
        3,
        "team-b",
        "> team-a: hospitals hired data annotators\nAI takes jobs away: call centres cut half their staff.",
    ),
]


def ctx(
    agent: str, role: str, seq: int, history: list[Turn], *, limit: int = 10, persona: str = PRO
) -> TurnContext:
    return TurnContext(
        agent=agent,
        role=role,
        persona=persona,
        topic="AI and jobs",
        seq=seq,
        turn_limit=limit,
        history=history,
        memory=[],
        history_turns=0,
        moderator="mod",
    )


def test_the_quote_is_the_opponents_own_first_sentence_short() -> None:
    assert gist(HISTORY[1].content) == "hospitals hired data annotators when diagnostic AI arrived."
    assert gist(HISTORY[2].content) == "call centres cut half their staff."  # its own words, not its quote
    long = "one two three four five six seven eight nine ten eleven twelve thirteen fourteen."
    assert gist(long) == "one two three four five six seven eight nine ten eleven twelve..."
    assert opposing_turn(ctx("team-a", "pro", 4, HISTORY)) == HISTORY[2]
    assert opposing_turn(ctx("team-b", "con", 3, HISTORY[:2])) == HISTORY[1]
    assert opposing_turn(ctx("team-a", "pro", 2, HISTORY[:1])) is None  # only the moderator spoke


def test_a_debater_is_asked_to_answer_the_quote_and_its_turn_shows_it() -> None:
    messages = build_messages(ctx("team-a", "pro", 4, HISTORY))
    task = messages[-1]["content"]
    assert task.startswith('team-b claims: "call centres cut half their staff." Reply to team-b: why is that')
    assert "argue that AI creates more jobs than it destroys" in task
    assert "hospitals" not in task  # no transcript (history_turns 0), only the short quote
    reply = "That is not true: call centres now hire bot trainers. Example: a bank hired 40 of them."
    stored = stored_content(ctx("team-a", "pro", 4, HISTORY), reply, None)
    assert stored == f"> team-b: call centres cut half their staff.\n{reply}"
    # Sentences that repeat the quote or the instructions are dropped, the rest is kept.
    copied = (
        'team-b claims: "call centres cut half their staff." Call centres cut half their staff.\n'
        "In 2 or 3 short sentences, argue that AI creates more jobs than it destroys.\n"
        "But robots need technicians."
    )
    assert stored_content(ctx("team-a", "pro", 4, HISTORY), copied, None).splitlines() == [
        "> team-b: call centres cut half their staff.",
        "But robots need technicians.",
    ]
    # An echo of the persona or of "in 2 or 3 short sentences" is not an argument either.
    echoed = "You are Ada. In 2 or 3 short sentences: banks hired trainers."
    assert stored_content(ctx("team-a", "pro", 4, HISTORY), echoed, None).endswith("\nbanks hired trainers.")
    # The first speaker has no one to answer.
    assert (
        stored_content(ctx("team-a", "pro", 2, HISTORY[:1]), "AI creates jobs.", None) == "AI creates jobs."
    )


def test_the_moderator_is_given_each_sides_last_argument_and_its_turn_is_labelled() -> None:
    history = [*HISTORY, Turn(4, "team-a", "> team-b: call centres cut half\nBanks hired bot trainers.")]
    task = build_messages(ctx("mod", "moderator", 5, history, persona="You are Mia."))[-1]["content"]
    assert task.startswith(
        'team-b said: "call centres cut half their staff."\nteam-a said: "Banks hired bot trainers."'
    )
    assert "VERDICT: CONTINUE" in task
    summary = "SUMMARY: team-b: call centres cut half their staff. · team-a: Banks hired bot trainers."
    text = "**Summary:** Who is right, banks or call centres?\nteam-a said: banks.\nVerdict: continue"
    assert stored_content(ctx("mod", "moderator", 5, history), text, None).splitlines() == [
        summary,
        "Who is right, banks or call centres?",
        "VERDICT: CONTINUE",
    ]
    # The verdict line says what was decided: the model's END reason, or why the runtime ended it.
    ended = stored_content(
        ctx("mod", "moderator", 10, history),
        "Team A argued better. VERDICT: END clear winner",
        (Phase.SUCCEEDED, "x"),
    )
    assert ended.splitlines() == [summary, "Team A argued better.", "VERDICT: END clear winner"]
    by_limit = stored_content(
        ctx("mod", "moderator", 10, history), "Both argued well.", (Phase.SUCCEEDED, "Completed 3 rounds")
    )
    assert by_limit.splitlines()[-1] == "VERDICT: END Completed 3 rounds"
    # A NEXT line (moderator-selected turns) stays, before the verdict; the opening is left as it is.
    chosen = stored_content(
        ctx("mod", "moderator", 5, history), "Good points.\nNEXT: team-b\nVERDICT: CONTINUE", None
    )
    assert chosen.splitlines() == [summary, "Good points.", "NEXT: team-b", "VERDICT: CONTINUE"]
    assert stored_content(ctx("mod", "moderator", 1, []), "Welcome all.", None) == "Welcome all."
    # Prose that only echoes the prompt leaves the summary and the verdict, not the echo.
    echo = 'team-a said: "Banks hired bot trainers."'
    assert stored_content(ctx("mod", "moderator", 5, history), echo, None).splitlines() == [
        summary,
        "VERDICT: CONTINUE",
    ]


def test_stored_turns_drive_the_same_decisions() -> None:
    spec = ConversationSpec.model_validate(
        {
            "topic": "t",
            "participants": [{"agentRef": "mod", "role": "moderator"}, {"agentRef": "a"}, {"agentRef": "b"}],
            "moderator": "mod",
            "maxTurns": 20,
        }
    )
    ending = stored_content(
        ctx("mod", "moderator", 7, HISTORY), "Done. VERDICT: END settled", (Phase.SUCCEEDED, "x")
    )
    assert parse_verdict(ending).reason == "settled"
    history = [
        Turn(i, s, "words differ here each time " + str(i)) for i, s in enumerate(["mod", "a", "b"] * 2, 1)
    ]
    decision = after_turn(spec, [*history, Turn(7, "mod", ending)])
    assert getattr(decision, "phase", None) is Phase.SUCCEEDED
    # Quotes change every turn; repeating oneself is still repeating oneself.
    same = "AI creates jobs in hospitals and banks every single year"
    repeats = [
        Turn(1, "mod", "w"),
        Turn(2, "a", f"> b: first quote here\n{same}"),
        Turn(3, "b", f"> a: x\n{same} too"),
        Turn(4, "mod", "w"),
        Turn(5, "a", f"> b: a different quote entirely\n{same}"),
        Turn(6, "b", f"> a: y z\n{same} too"),
    ]
    assert is_repetitive(spec.model_copy(update={"participants": spec.participants}), repeats)
