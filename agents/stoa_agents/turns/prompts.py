"""Chat messages for one turn (pure). Written for very small models: short, positive, one task."""

from __future__ import annotations

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
MODERATOR_OPENING = "You are the moderator. Introduce the topic in 2 short sentences and invite the first speaker."
MODERATOR_CLOSING = (
    "You are the moderator. This is the final turn: in 2-3 sentences say which side argued better and why. "
    "Then write a last line 'VERDICT: END <one-line reason>'."
)


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


def _task(ctx: TurnContext) -> str:
    if ctx.role == "moderator":
        if ctx.seq == 1:
            return MODERATOR_OPENING
        if ctx.seq >= ctx.turn_limit:
            return MODERATOR_CLOSING
        task = MODERATOR_TASK
        if ctx.next_speakers:
            task += f" Before the verdict, name who speaks next with a line 'NEXT: <name>' ({', '.join(ctx.next_speakers)})."
        return task
    return ROLE_TASKS.get(ctx.role, ROLE_TASKS["member"])


def build_messages(ctx: TurnContext) -> list[dict[str, str]]:
    """System = persona; one user message with the topic, the recent turns, own earlier points and the task."""
    recent = ctx.history[-ctx.history_turns :] if ctx.history_turns else []
    lines = [f"Debate topic: {ctx.topic}"]
    if recent:
        lines.append("Recent turns:")
        lines.extend(f"- {t.speaker}: {t.content.strip()}" for t in recent)
    if ctx.memory:
        lines.append("Points you already made (do not repeat them, add a new one):")
        lines.extend(f"- {note}" for note in ctx.memory[-3:])
    lines.append(f"You are {ctx.agent}. {_task(ctx)}")
    return [{"role": "system", "content": ctx.persona}, {"role": "user", "content": "\n".join(lines)}]


def memory_note(content: str, limit: int = 160) -> str:
    """What an agent remembers of its own turn: the first sentence, shortened."""
    text = " ".join(content.split())
    first = text.split(". ")[0]
    return first if len(first) <= limit else first[: limit - 3] + "..."
