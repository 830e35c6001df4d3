"""Chat messages for one turn (pure). Written for very small models: short, positive, one task."""

from __future__ import annotations

import re
from dataclasses import dataclass

from stoa_agents.turns.policy import Turn

ROLE_TASKS = {
    "pro": "You argue FOR the statement. State your own side's claim positively, in 2-3 short sentences.",
    "con": "You argue AGAINST the statement. State your own side's claim positively, in 2-3 short sentences.",
    "member": "Give your next contribution in 2-3 short sentences.",
}
MODERATOR_TASK = (
    "You are the moderator. In 2 short sentences, summarise the last points and ask one sharp question. "
    "Then write a last line exactly like 'VERDICT: CONTINUE' or 'VERDICT: END <reason>' "
    "(END only when the debate stopped being productive)."
)
MODERATOR_OPENING = (
    "You are the moderator. Introduce the topic in 2 short sentences and invite the first speaker."
)
MODERATOR_CLOSING = (
    "You are the moderator. This is the final turn: in 2-3 sentences say which side argued better and why. "
    "Then write a last line 'VERDICT: END <one-line reason>'."
)


MEMORY_NOTES = 2  # the agent's latest memory notes a prompt shows


@dataclass(frozen=True)
class TurnContext:
    agent: str
    role: str
    persona: str
    topic: str
    seq: int
    turn_limit: int
    history: list[Turn]
    memory: list[str]
    history_turns: int = 6
    next_speakers: list[str] | None = None


_POSITION = re.compile(r"your position(?: is)?\s*:\s*([^.\n]+)", re.IGNORECASE)


def position_of(persona: str) -> str | None:
    """The claim after 'Your position:' in a persona, so every turn can restate it positively."""
    match = _POSITION.search(persona)
    return match.group(1).strip() if match else None


def _task(ctx: TurnContext) -> str:
    if ctx.role == "moderator":
        if ctx.seq == 1:
            return MODERATOR_OPENING
        if ctx.seq >= ctx.turn_limit:
            return MODERATOR_CLOSING
        task = MODERATOR_TASK
        if ctx.next_speakers:
            names = ", ".join(ctx.next_speakers)
            task += f" Before the verdict, name who speaks next with a line 'NEXT: <name>' ({names})."
        return task
    position = position_of(ctx.persona)
    if position:
        return f"In 2 or 3 short sentences, argue that {position}. Give one concrete example."
    return ROLE_TASKS.get(ctx.role, ROLE_TASKS["member"])


def build_messages(ctx: TurnContext) -> list[dict[str, str]]:
    """Chat turns, not a pasted transcript (tiny models copy a transcript's layout): the persona and topic
    as system, recent turns as user/assistant messages, and the task with the persona restated last."""
    recent = ctx.history[-ctx.history_turns :] if ctx.history_turns else []
    messages = [{"role": "system", "content": f"{ctx.persona}\nDebate topic: {ctx.topic}"}]
    for turn in recent:
        if turn.speaker == ctx.agent:
            messages.append({"role": "assistant", "content": _short(turn.content)})
        else:
            messages.append({"role": "user", "content": f"{turn.speaker} said: {_short(turn.content)}"})
    lines = [_task(ctx)]
    if ctx.memory:
        lines.append("Use a different example than before (" + " / ".join(ctx.memory[-MEMORY_NOTES:]) + ").")
    if messages[-1]["role"] == "user":
        messages[-1]["content"] += "\n\n" + "\n".join(lines)
    else:
        messages.append({"role": "user", "content": "\n".join(lines)})
    return messages


def _short(content: str, limit: int = 240) -> str:
    text = " ".join(content.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def memory_note(content: str, limit: int = 160) -> str:
    """What an agent remembers of its own turn: the first sentence, shortened."""
    text = " ".join(content.split())
    first = text.split(". ")[0]
    return first if len(first) <= limit else first[: limit - 3] + "..."
