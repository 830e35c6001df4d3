"""Printing transcripts and summaries."""

from __future__ import annotations

import json
import textwrap

import asyncpg

from stoa_agents.control import conversation_status
from stoa_agents.store import repo
from stoa_agents.store.repo import StoredTurn

COLORS = ["\033[36m", "\033[33m", "\033[35m", "\033[32m", "\033[34m", "\033[31m"]
RESET = "\033[0m"


def format_turn(turn: StoredTurn, color: str = "", width: int = 100) -> str:
    """One turn, line by line: the quote it answers (``> ...``), its prose, ``SUMMARY:`` and ``VERDICT:``."""
    head = f"{color}[{turn.seq:>3}] {turn.speaker} ({turn.role}){RESET if color else ''}"
    meta = f"  {turn.tokens_out} tok, {turn.duration_ms} ms, pod {turn.pod}"
    lines = [" ".join(line.split()) for line in turn.content.splitlines()]
    body = "\n".join(
        textwrap.fill(line, width=width, initial_indent="      ", subsequent_indent="        ")
        for line in lines
        if line
    )
    return f"{head}{meta}\n{body}"


async def print_transcript(dsn: str, name: str, *, as_json: bool = False) -> int:
    db = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
    try:
        status = await conversation_status(db, name)
        if status is None:
            print(f"No conversation named {name}")
            return 1
        turns = await repo.load_transcript(db, status.id)
    finally:
        await db.close()
    if as_json:
        print(
            json.dumps(
                {
                    "status": status.model_dump(
                        mode="json", by_alias=True, exclude_none=True, exclude={"conditions"}
                    ),
                    "turns": [
                        {
                            "seq": t.seq,
                            "speaker": t.speaker,
                            "role": t.role,
                            "content": t.content,
                            "tokensIn": t.tokens_in,
                            "tokensOut": t.tokens_out,
                            "costUSD": t.cost_usd,
                            "costSource": t.cost_source,
                            "model": t.model,
                            "target": t.target,
                            "durationMs": t.duration_ms,
                            "pod": t.pod,
                            "at": t.created_at.isoformat(),
                        }
                        for t in turns
                    ],
                },
                indent=2,
            )
        )
        return 0
    speakers: dict[str, str] = {}
    print(f"Conversation {name}: phase={status.phase.value} turns={status.turns}")
    for turn in turns:
        color = speakers.setdefault(turn.speaker, COLORS[len(speakers) % len(COLORS)])
        print(format_turn(turn, color))
    print(f"Phase {status.phase.value}: {status.reason}" if status.reason else f"Phase {status.phase.value}")
    print(f"Tokens in/out {status.tokens_in}/{status.tokens_out}, cost ${status.cost_usd:.6f}")
    return 0
