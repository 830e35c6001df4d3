"""Conversation policy (pure): who speaks turn N, when the conversation ends and why."""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from stoa_api.conversation import ConversationSpec, TurnPolicyType
from stoa_api.status import ConversationPhase

# One phase type from the store to the resource: the Conversation status's.
Phase = ConversationPhase


TERMINAL_PHASES = frozenset({Phase.SUCCEEDED, Phase.FAILED})


@dataclass(frozen=True)
class Turn:
    seq: int
    speaker: str
    content: str


class VerdictKind(StrEnum):
    CONTINUE = "continue"
    END = "end"
    NONE = "none"


@dataclass(frozen=True)
class Verdict:
    kind: VerdictKind
    reason: str = ""


@dataclass(frozen=True)
class Next:
    """Continue with ``speaker`` at ``seq``."""

    seq: int
    speaker: str


@dataclass(frozen=True)
class End:
    phase: Phase
    reason: str


_VERDICT = re.compile(
    r"verdict\s*[:=\-]?\s*\**\s*(continue|go on|proceed|end|stop|conclude|finish)\b[\s:.,\-*]*(.*)",
    re.IGNORECASE,
)
_NEXT = re.compile(r"next(?:\s+speaker)?\s*[:=\-]\s*@?([a-z0-9][-a-z0-9]*)", re.IGNORECASE)
_WORD = re.compile(r"[a-z0-9']+")
REPETITION_THRESHOLD = 0.6


def speaking_order(spec: ConversationSpec) -> list[str]:
    """Round robin order: the moderator first (it opens each round), then the others as listed."""
    moderator = spec.moderator_name()
    others = [p.agent_ref for p in spec.participants if p.agent_ref != moderator]
    return [moderator, *others] if moderator else others


def turn_limit(spec: ConversationSpec) -> int:
    """Total turns allowed: ``maxTurns``, or fewer when ``maxRounds`` (+1 closing moderator turn) is set."""
    limit = spec.max_turns
    if spec.max_rounds is not None:
        moderator = spec.moderator_name()
        per_round = (
            2 if spec.turn_policy.type is TurnPolicyType.MODERATOR_SELECTED else len(speaking_order(spec))
        )
        limit = min(limit, spec.max_rounds * per_round + (1 if moderator else 0))
    return max(1, limit)


def parse_verdict(text: str) -> Verdict:
    """The last ``VERDICT: CONTINUE|END <reason>`` line, read leniently (case, markdown, synonyms)."""
    found = list(_VERDICT.finditer(text))
    if not found:
        return Verdict(VerdictKind.NONE)
    word, rest = found[-1].group(1).lower(), found[-1].group(2).strip(" .*\"'")
    if word in ("continue", "go on", "proceed"):
        return Verdict(VerdictKind.CONTINUE, rest)
    return Verdict(VerdictKind.END, rest.splitlines()[0][:300] if rest else "")


def parse_next_speaker(text: str, candidates: list[str]) -> str | None:
    for match in reversed(list(_NEXT.finditer(text))):
        name = match.group(1).lower()
        if name in candidates:
            return name
    return None


def own_words(content: str) -> str:
    """A turn's text without the opposing argument it quoted (its ``>`` lines, see ``prompts``)."""
    return "\n".join(line for line in content.splitlines() if not line.lstrip().startswith(">")).strip()


def _shingles(text: str) -> set[tuple[str, ...]]:
    words = _WORD.findall(text.lower())
    if len(words) < 3:
        return {tuple(words)} if words else set()
    return {tuple(words[i : i + 3]) for i in range(len(words) - 2)}


def similarity(a: str, b: str) -> float:
    """Jaccard similarity of word trigrams, 0..1."""
    sa, sb = _shingles(a), _shingles(b)
    if not sa or not sb:
        return 1.0 if sa == sb else 0.0
    return len(sa & sb) / len(sa | sb)


def is_repetitive(
    spec: ConversationSpec, history: list[Turn], threshold: float = REPETITION_THRESHOLD
) -> bool:
    """Every non-moderator speaker's last turn nearly repeats its own previous one."""
    moderator = spec.moderator_name()
    speakers = [s for s in speaking_order(spec) if s != moderator]
    if not speakers:
        return False
    for speaker in speakers:
        own = [own_words(t.content) for t in history if t.speaker == speaker]
        if len(own) < 2 or similarity(own[-1], own[-2]) < threshold:
            return False
    return True


def speaker_for(spec: ConversationSpec, seq: int, history: list[Turn]) -> str:
    """Who speaks turn ``seq`` given the turns before it."""
    order = speaking_order(spec)
    if spec.turn_policy.type is TurnPolicyType.ROUND_ROBIN:
        return order[(seq - 1) % len(order)]
    moderator = order[0]
    if seq % 2 == 1:
        return moderator
    members = order[1:]
    previous = history[-1] if history else None
    if previous is not None and previous.speaker == moderator:
        chosen = parse_next_speaker(previous.content, members)
        if chosen is not None:
            return chosen
    last_spoke = {t.speaker: t.seq for t in history}
    return min(members, key=lambda m: (last_spoke.get(m, 0), members.index(m)))


def after_turn(spec: ConversationSpec, history: list[Turn]) -> Next | End:
    """Decide, after the last turn of ``history`` is stored, whether and how the conversation goes on."""
    last = history[-1]
    moderator = spec.moderator_name()
    order = speaking_order(spec)
    if last.speaker == moderator and last.seq > len(order):
        verdict = parse_verdict(last.content)
        if verdict.kind is VerdictKind.END:
            reason = verdict.reason or "no reason given"
            return End(Phase.SUCCEEDED, f"Moderator ended the conversation: {reason}")
    limit = turn_limit(spec)
    if last.seq >= limit:
        if spec.max_rounds is not None and limit < spec.max_turns:
            return End(Phase.SUCCEEDED, f"Completed {spec.max_rounds} rounds")
        return End(Phase.SUCCEEDED, f"Reached maxTurns ({spec.max_turns})")
    if is_repetitive(spec, history):
        return End(Phase.SUCCEEDED, "Not productive: participants are repeating themselves")
    seq = last.seq + 1
    return Next(seq=seq, speaker=speaker_for(spec, seq, history))
