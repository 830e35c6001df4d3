"""The turn's two statements against real PostgreSQL: the one read returns exactly what the policy and
the prompt need (``turns.plan.windowed``), and the one-statement commit stores a turn exactly once."""

from __future__ import annotations

import uuid

from stoa_agents.store import repo
from stoa_agents.store.db import open_pool
from stoa_agents.store.migrate import ensure_memory
from stoa_agents.turns.cost import CostSource
from stoa_agents.turns.plan import windowed
from stoa_agents.turns.policy import Phase, Turn
from stoa_devenv.postgres import PostgresServer


def _turn(conv_id: str, seq: int, speaker: str, agent: str) -> repo.NewTurn:
    return repo.NewTurn(
        conversation_id=conv_id,
        seq=seq,
        speaker=speaker,
        agent=agent,
        role="member",
        content=f"turn {seq} by {speaker}",
        tokens_in=10,
        tokens_out=5,
        cost_usd=0.001,
        cost_source=CostSource.REPORTED if seq % 3 else CostSource.UNPRICED,
        model="m",
        target="backup",
        duration_ms=1,
        pod=f"{speaker}-0",
        message_id=f"{conv_id}:{seq}",
        traceparent=None,
    )


def _next(conv_id: str, seq: int, to: str) -> repo.NextMessage:
    return repo.NextMessage(f"{conv_id}:{seq}", seq, to, b"{}")


async def test_one_read_and_one_statement_commit(postgres: PostgresServer) -> None:
    db = await open_pool(postgres.dsn)
    try:
        conv_id, name = str(uuid.uuid4()), f"store-{uuid.uuid4().hex[:6]}"
        speakers = ["mod", "ada", "ada", "ada", "ben"] * 8  # ben speaks rarely
        agent = f"store-{uuid.uuid4().hex[:6]}"
        async with db.acquire() as conn:
            await ensure_memory(conn, agent, 30)
        spec = {"topic": "t", "participants": [{"agentRef": "mod"}]}
        await repo.insert_conversation(
            db,
            conversation_id=conv_id,
            name=name,
            spec=spec,
            phase=Phase.PENDING,
            first=_next(conv_id, 1, "mod"),
            traceparent="",
        )
        history = []
        for seq, speaker in enumerate(speakers, start=1):
            end = (Phase.SUCCEEDED, "done") if seq == len(speakers) else None
            nxt = None if end else _next(conv_id, seq + 1, "x")
            outcome = await repo.commit_turn(db, _turn(conv_id, seq, speaker, agent), nxt, end, f"note {seq}")
            assert outcome == "stored"
            history.append(Turn(seq, speaker, f"turn {seq} by {speaker}"))
        # A second commit of a stored seq changes nothing.
        assert await repo.commit_turn(db, _turn(conv_id, 3, "ada", agent), None, None, None) == "duplicate"
        assert await repo.commit_turn(
            db, _turn(conv_id, len(speakers) + 1, "x", agent), None, None, None
        ) == ("finished")

        inputs = await repo.load_turn_inputs(db, conv_id, f"{conv_id}:7", agent, recent=4, notes=2)
        assert inputs is not None
        assert inputs.history == windowed(history, 4)
        assert {t.speaker for t in inputs.history} == {"mod", "ada", "ben"}  # ben's last two come along
        assert len(inputs.history) < len(history)
        assert inputs.memory == [f"note {len(speakers) - 1}", f"note {len(speakers)}"]
        assert inputs.processed  # message 7 was processed
        conv = inputs.conversation
        assert (conv.phase, conv.turns, conv.next_seq) == (Phase.SUCCEEDED, len(speakers), len(speakers) + 1)
        assert conv.unpriced_turns == sum(1 for s in range(1, len(speakers) + 1) if s % 3 == 0)
        assert conv.cost_usd == round(0.001 * len(speakers), 8)
        outbox = await db.fetch(
            "SELECT seq, published_at FROM stoa.outbox WHERE conversation_id = $1 ORDER BY seq",
            uuid.UUID(conv_id),
        )
        assert [r["seq"] for r in outbox] == list(range(1, len(speakers) + 1))
        assert all(r["published_at"] is not None for r in outbox)  # each marked by its turn's commit
        totals = await db.fetchrow(
            "SELECT turns, unpriced_turns FROM stoa.agent_totals WHERE agent = $1", agent
        )
        assert (totals["turns"], totals["unpriced_turns"]) == (len(speakers), conv.unpriced_turns)
        assert await repo.load_turn_inputs(db, str(uuid.uuid4()), "x", None, recent=4, notes=2) is None
    finally:
        await db.close()
