"""Following a local run: stream each conversation's transcript as it is stored, supervise the replicas,
strike (chaos) when asked, and print the summary once every conversation has ended."""

from __future__ import annotations

import asyncio
import time

import asyncpg

from stoa_agents.control import agent_status, conversation_status
from stoa_agents.local.chaos import Chaos
from stoa_agents.local.fleet import Fleet
from stoa_agents.local.transcript import COLORS, format_turn
from stoa_agents.store import repo
from stoa_agents.turns.policy import TERMINAL_PHASES
from stoa_api.conversation import ConversationSpec


async def follow(
    db: asyncpg.Pool,
    fleet: Fleet,
    conversations: dict[str, ConversationSpec],
    *,
    chaos: Chaos,
    started: float,
    within_seconds: float,
    postgres_url: str,
) -> int:
    """0 when every conversation ended and none Failed; 1 on a failure or after ``within_seconds``."""
    seen: dict[str, int] = dict.fromkeys(conversations, 0)
    colors: dict[str, str] = {}
    deadline = started + within_seconds
    while True:
        for replica in fleet.supervise():
            print(f"      (restarted {replica.agent} as {replica.pod})", flush=True)
        done = True
        total_turns = 0
        for name, spec in conversations.items():
            status = await conversation_status(db, name)
            if status is None:
                done = False
                continue
            for turn in await repo.load_transcript(db, status.id, seen[name]):
                color = colors.setdefault(turn.speaker, COLORS[len(colors) % len(COLORS)])
                print(format_turn(turn, color), flush=True)
                seen[name] = turn.seq
            total_turns += status.turns
            if status.phase not in TERMINAL_PHASES:
                done = False
                if chaos.due(total_turns):
                    await chaos.strike(db, fleet, name, spec, total_turns)
        if done:
            break
        if time.monotonic() > deadline:
            print(f"Timed out after {within_seconds:.0f}s")
            return 1
        await asyncio.sleep(0.2)
    elapsed = time.monotonic() - started
    return await summary(
        db, conversations, elapsed=elapsed, chaos=chaos, fleet=fleet, postgres_url=postgres_url
    )


async def summary(
    db: asyncpg.Pool,
    conversations: dict[str, ConversationSpec],
    *,
    elapsed: float,
    chaos: Chaos,
    fleet: Fleet,
    postgres_url: str,
) -> int:
    print("\n" + "=" * 72)
    failed = False
    agents = sorted({p.agent_ref for c in conversations.values() for p in c.participants})
    for name in conversations:
        status = await conversation_status(db, name)
        assert status is not None
        failed = failed or status.phase.value == "Failed"
        print(f"Conversation {name}: {status.phase.value} - {status.reason}")
        print(
            f"  turns {status.turns}, tokens in/out {status.tokens_in}/{status.tokens_out}, "
            f"cost ${status.cost_usd:.6f}, time {elapsed:.1f}s"
        )
        for agent, share in status.agents.items():
            print(f"  {agent}: {share.turns} turns, {share.tokens_out} tokens out, ${share.cost_usd:.6f}")
    takeovers = 0
    for agent in agents:
        st = await agent_status(db, agent)
        takeovers += st.takeovers
        print(f"  {agent}: active pod {st.active_pod} (takeovers {st.takeovers})")
    print(f"Takeovers {takeovers}, kills {chaos.kills}, replica restarts {fleet.restarts}")
    print(
        f"Transcript later: stoa transcript {' | '.join(conversations)} --postgres-url {postgres_url}"
        " (this run's services are removed on exit unless you passed --postgres-url)"
    )
    return 1 if failed else 0
