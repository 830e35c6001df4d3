"""Chat messages for one turn, and the text a turn is stored as (pure). Written for very small models:
short, positive, one task.

A debate reads as one: a debater answers the last opposing argument, given to it quoted and short (its
first sentence, at most 12 words: a 135M model copies whatever long text it is shown) with the question
"why is that wrong?"; the stored turn starts with that quote (a ``> speaker: ...`` line), so a reader sees
what it answers. The moderator is given each side's last argument the same way. Its stored turn is a
``SUMMARY:`` line made of those quotes (exact, whatever the model writes), its own prose (the question or
the judgement it was asked for), and a ``VERDICT:`` line saying what the runtime decided. Sentences of a
reply that only repeat a quote or the instructions (small models do) are dropped from the stored turn.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from stoa_agents.turns.policy import Phase, Turn, VerdictKind, own_words, parse_verdict, similarity

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
    moderator: str | None = None


QUOTE_WORDS = 12
COPY_SIMILARITY = 0.5  # a reply sentence this close to the quote is the quote copied, not an answer
_LABEL = re.compile(r"^\s*[\w' -]{1,40}:\s+")
_SENTENCE = re.compile(r"(?:(?<=[.!?])|(?<=[.!?][\"”']))\s+")
_INSTRUCTION_ECHO = re.compile(
    r"^\W*in (?:2|two) or (?:3|three) (?:short )?sentences\b[\s,:;.-]*", re.IGNORECASE
)
_LABELLED = re.compile(r"^\W*(summary)\b\W*", re.IGNORECASE)
_INLINE_VERDICT = re.compile(r"[\s*_#]*\bverdict\b.*$", re.IGNORECASE)
_ECHO = re.compile(r"^\W*[\w-]+ (said|claims|just said)\s*:", re.IGNORECASE)
_NEXT_LINE = re.compile(r"^\W*next(?:\s+speaker)?\s*[:=\-]", re.IGNORECASE)


def gist(content: str, words: int = QUOTE_WORDS) -> str:
    """What a reply quotes of a turn: its own first sentence, without a leading label such as
    ``AI creates jobs:``, at most ``words`` words."""
    text = " ".join(own_words(content).split())
    text = _LABEL.sub("", text, count=1) or text
    first = _SENTENCE.split(text, maxsplit=1)[0].strip()
    kept = first.split()
    return " ".join(kept[:words]) + ("..." if len(kept) > words else "")


def opposing_turn(ctx: TurnContext) -> Turn | None:
    """The last turn by someone other than this agent and the moderator."""
    for turn in reversed(ctx.history):
        if turn.speaker not in (ctx.agent, ctx.moderator):
            return turn
    return None


def last_arguments(ctx: TurnContext) -> list[Turn]:
    """Each debater's latest turn, in the order they spoke (what the moderator sums up)."""
    latest: dict[str, Turn] = {}
    for turn in ctx.history:
        if turn.speaker not in (ctx.agent, ctx.moderator):
            latest[turn.speaker] = turn
    return sorted(latest.values(), key=lambda t: t.seq)


_POSITION = re.compile(r"your position(?: is)?\s*:\s*([^.\n]+)", re.IGNORECASE)


def position_of(persona: str) -> str | None:
    """The claim after 'Your position:' in a persona, so every turn can restate it positively."""
    match = _POSITION.search(persona)
    return match.group(1).strip() if match else None


def _said(turns: list[Turn]) -> str:
    return "\n".join(f'{t.speaker} said: "{gist(t.content)}"' for t in turns)


def _task(ctx: TurnContext) -> str:
    if ctx.role == "moderator":
        if ctx.seq == 1:
            return MODERATOR_OPENING
        said = _said(last_arguments(ctx))
        if ctx.seq >= ctx.turn_limit:
            return f"{said}\n{MODERATOR_CLOSING}" if said else MODERATOR_CLOSING
        task = MODERATOR_TASK
        if ctx.next_speakers:
            names = ", ".join(ctx.next_speakers)
            task += f" Before the verdict, name who speaks next with a line 'NEXT: <name>' ({names})."
        return f"{said}\n{task}" if said else task
    position = position_of(ctx.persona)
    if position:
        task = f"In 2 or 3 short sentences, argue that {position}. Give one concrete example."
    else:
        task = ROLE_TASKS.get(ctx.role, ROLE_TASKS["member"])
    opposing = opposing_turn(ctx)
    if opposing is not None and ctx.role in ("pro", "con"):
        quote, who = gist(opposing.content), opposing.speaker
        task = f'{who} claims: "{quote}" Reply to {who}: why is that wrong? Then: {task}'
    return task


def build_messages(ctx: TurnContext) -> list[dict[str, str]]:
    """Chat turns, not a pasted transcript (tiny models copy a transcript's layout): the persona and topic
    as system, recent turns as user/assistant messages, and the task with the persona restated last."""
    recent = ctx.history[-ctx.history_turns :] if ctx.history_turns else []
    messages = [{"role": "system", "content": f"{ctx.persona}\nDebate topic: {ctx.topic}"}]
    for turn in recent:
        if turn.speaker == ctx.agent:
            messages.append({"role": "assistant", "content": _short(own_words(turn.content))})
        else:
            messages.append(
                {"role": "user", "content": f"{turn.speaker} said: {_short(own_words(turn.content))}"}
            )
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


def _task_sentences(ctx: TurnContext) -> list[str]:
    """What the prompt said (the persona and the task): sentences a reply must not just repeat."""
    return [s for s in _SENTENCE.split(f"{ctx.persona} {_task(ctx)}") if s.strip()]


def _copies(sentence: str, source: str) -> bool:
    """``sentence`` is ``source`` again: nearly the same words, or all of them with little else."""
    if similarity(sentence, source) >= COPY_SIMILARITY:
        return True
    mine, theirs = sentence.split(), source.split()
    if len(theirs) < 4 or len(mine) > 1.5 * len(theirs) + 3:
        return False
    return similarity(" ".join(mine[: len(theirs)]), source) >= COPY_SIMILARITY


def _without_copies(text: str, sources: list[str], *, keep_all_if_empty: bool = True) -> str:
    """The reply without sentences that only repeat a quote or an instruction, and without ``X said:``
    echoes of the prompt's layout. When nothing else is left, a debater's reply is kept whole (a turn
    says something); a moderator's prose may be empty (its summary and verdict remain)."""
    bare = [s.removesuffix("...") for s in sources if s.strip()]
    kept = []
    for line in text.splitlines():
        for raw in _SENTENCE.split(line.strip()):
            sentence = _INSTRUCTION_ECHO.sub("", raw).strip()
            if not sentence or _ECHO.match(sentence) or any(_copies(sentence, src) for src in bare):
                continue
            kept.append(sentence)
    result = " ".join(kept).strip()
    return result or (text.strip() if keep_all_if_empty else "")


def _verdict_line(text: str, end: tuple[Phase, str] | None) -> str:
    """What the runtime decided, in the verdict protocol's words (the model's reason when it ended it)."""
    if end is None:
        return "VERDICT: CONTINUE"
    verdict = parse_verdict(text)
    reason = verdict.reason if verdict.kind is VerdictKind.END and verdict.reason else end[1]
    return f"VERDICT: END {reason}"


def stored_content(ctx: TurnContext, text: str, end: tuple[Phase, str] | None) -> str:
    """The turn as it is stored and shown, from the model's ``text`` and the runtime's decision ``end``.

    A debater's turn starts with the quote it answered; a moderator's (after its opening) is a
    ``SUMMARY:`` line (its first sentence), its other prose (and its ``NEXT:`` line), then ``VERDICT:``.
    """
    if ctx.role == "moderator":
        if ctx.seq == 1:
            return text.strip()
        said = last_arguments(ctx)
        prose, nexts = _moderator_lines(text)
        sources = [gist(t.content) for t in said] + _task_sentences(ctx)
        own = _without_copies("\n".join(prose), sources, keep_all_if_empty=False)
        summary = " · ".join(f"{t.speaker}: {gist(t.content)}" for t in said)
        parts = [f"SUMMARY: {summary}"] if summary else []
        parts += [own] if own else []
        return "\n".join([*parts, *nexts, _verdict_line(text, end)])
    opposing = opposing_turn(ctx)
    if opposing is None or ctx.role not in ("pro", "con"):
        return text.strip()
    quote = gist(opposing.content)
    return f"> {opposing.speaker}: {quote}\n{_without_copies(text, [quote, *_task_sentences(ctx)])}"


def _moderator_lines(text: str) -> tuple[list[str], list[str]]:
    """(its prose lines, without the verdict and ``SUMMARY:`` labels; its ``NEXT:`` lines)."""
    prose: list[str] = []
    nexts: list[str] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        if _NEXT_LINE.match(line):
            nexts.append(line)
            continue
        line = _INLINE_VERDICT.sub("", line).strip()  # the verdict is written by stored_content
        label = _LABELLED.match(line)
        if label is not None:
            line = line[label.end() :].strip()
        if line:
            prose.append(line)
    return prose, nexts


def memory_note(content: str, limit: int = 160) -> str:
    """What an agent remembers of its own turn: the first sentence, shortened."""
    text = " ".join(content.split())
    first = text.split(". ")[0]
    return first if len(first) <= limit else first[: limit - 3] + "..."
