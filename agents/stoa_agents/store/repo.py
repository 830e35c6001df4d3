"""Every read and write of the runtime's Postgres state. The unique keys are the exactly-once arbiters."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from stoa_agents.store.migrate import memory_schema
from stoa_agents.turns.cost import CostSource
from stoa_agents.turns.policy import Phase, Turn


@dataclass(frozen=True)
class ConversationRow:
    id: str
    name: str
    spec: dict[str, Any]
    phase: Phase
    reason: str
    next_seq: int
    turns: int
    last_speaker: str | None
    tokens_in: int
    tokens_out: int
    cost_usd: float
    unpriced_turns: int
    parked_message: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    synthetic: bool = False


@dataclass(frozen=True)
class StoredTurn:
    seq: int
    speaker: str
    role: str
    content: str
    tokens_in: int
    tokens_out: int
    cost_usd: float
    cost_source: str  # turns.cost.CostSource
    model: str
    target: str | None
    duration_ms: int
    pod: str
    created_at: datetime


@dataclass(frozen=True)
class OutboxRow:
    id: int
    message_id: str
    routing_key: str
    body: bytes


@dataclass(frozen=True)
class NewTurn:
    conversation_id: str
    seq: int
    speaker: str  # bare Agent name (the transcript and the protocol)
    agent: str  # agent key (identity.agent_key): totals, activity, processed row, memory schema
    role: str
    content: str
    tokens_in: int
    tokens_out: int
    cost_usd: float
    cost_source: CostSource
    model: str  # the model that answered
    target: str | None  # the gateway target that answered
    duration_ms: int
    pod: str
    message_id: str
    traceparent: str | None
    turn_ms: int | None = None  # delivery of the turn message to this commit (the latency SLI)


@dataclass(frozen=True)
class NextMessage:
    message_id: str
    seq: int
    routing_key: str  # agent key of the receiver (identity.participant_key)
    body: bytes


def _conversation(row: asyncpg.Record) -> ConversationRow:
    spec = row["spec"]
    return ConversationRow(
        id=str(row["id"]),
        name=row["name"],
        spec=json.loads(spec) if isinstance(spec, str) else dict(spec),
        phase=Phase(row["phase"]),
        reason=row["reason"],
        next_seq=row["next_seq"],
        turns=row["turns"],
        last_speaker=row["last_speaker"],
        tokens_in=row["tokens_in"],
        tokens_out=row["tokens_out"],
        cost_usd=float(row["cost_usd"]),
        unpriced_turns=row["unpriced_turns"],
        parked_message=row["parked_message"],
        created_at=row["created_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        synthetic=bool(row.get("synthetic", False)),
    )


async def load_conversation(db: asyncpg.Pool, conversation_id: str) -> ConversationRow | None:
    try:
        key = uuid.UUID(conversation_id)
    except ValueError:
        return None
    row = await db.fetchrow("SELECT * FROM stoa.conversations WHERE id = $1", key)
    return _conversation(row) if row else None


async def find_conversation(db: asyncpg.Pool, name: str) -> ConversationRow | None:
    row = await db.fetchrow("SELECT * FROM stoa.conversations WHERE name = $1", name)
    return _conversation(row) if row else None


async def rename_conversation(db: asyncpg.Pool, conversation_id: str, name: str) -> bool:
    """Give a stored conversation another runtime name (archiving frees its name); False if it is gone."""
    changed = await db.fetchval(
        "UPDATE stoa.conversations SET name = $2, updated_at = now() WHERE id = $1 RETURNING id",
        uuid.UUID(conversation_id),
        name,
    )
    return changed is not None


async def is_processed(db: asyncpg.Pool, message_id: str) -> bool:
    return bool(await db.fetchval("SELECT 1 FROM stoa.processed_messages WHERE message_id = $1", message_id))


async def load_turns(db: asyncpg.Pool, conversation_id: str) -> list[Turn]:
    rows = await db.fetch(
        "SELECT seq, speaker, content FROM stoa.turns WHERE conversation_id = $1 ORDER BY seq",
        uuid.UUID(conversation_id),
    )
    return [Turn(r["seq"], r["speaker"], r["content"]) for r in rows]


async def load_transcript(
    db: asyncpg.Pool, conversation_id: str, after_seq: int = 0, limit: int | None = None
) -> list[StoredTurn]:
    """The turns after ``after_seq`` in order, at most ``limit`` of them (all when None)."""
    rows = await db.fetch(
        "SELECT seq, speaker, role, content, tokens_in, tokens_out, cost_usd, cost_source, model, target,"
        " duration_ms, pod, created_at FROM stoa.turns WHERE conversation_id = $1 AND seq > $2 ORDER BY seq"
        " LIMIT $3",
        uuid.UUID(conversation_id),
        after_seq,
        limit,
    )
    return [StoredTurn(**{**dict(r), "cost_usd": float(r["cost_usd"])}) for r in rows]


async def load_memory(db: asyncpg.Pool, agent: str, conversation_id: str) -> list[str]:
    """The notes of agent key ``agent`` about one conversation."""
    schema = memory_schema(agent)
    rows = await db.fetch(
        f"SELECT note FROM {schema}.memory WHERE conversation_id = $1 ORDER BY seq",  # noqa: S608 (safe name)
        uuid.UUID(conversation_id),
    )
    return [r["note"] for r in rows]


@dataclass(frozen=True)
class TurnInputs:
    conversation: ConversationRow
    processed: bool  # the delivered message id is already processed
    history: list[Turn]
    memory: list[str]


async def load_turn_inputs(
    db: asyncpg.Pool | asyncpg.Connection,
    conversation_id: str,
    message_id: str,
    memory_of: str | None,
    *,
    recent: int,
    notes: int,
) -> TurnInputs | None:
    """Everything a turn reads, in one round trip: the conversation, whether the message is processed,
    the turns the policy and the prompt read (the ``recent`` latest, plus each speaker's last two: see
    ``turns.plan.history_window``) and (``memory_of``: the agent key) its ``notes`` latest memory notes."""
    try:
        key = uuid.UUID(conversation_id)
    except ValueError:
        return None
    # memory_schema() is a plain identifier ([a-z0-9_], <= 63 bytes): safe to put in the statement.
    table = f"{memory_schema(memory_of)}.memory" if memory_of else None
    memory = (
        "(SELECT coalesce(json_agg(m.note ORDER BY m.seq), '[]'::json) FROM"  # noqa: S608 (memory_schema: an identifier)
        f" (SELECT seq, note FROM {table} WHERE conversation_id = c.id ORDER BY seq DESC LIMIT $4) m)"
        if table
        else "'[]'::json"
    )
    query = (
        "SELECT c.*, EXISTS (SELECT 1 FROM stoa.processed_messages WHERE message_id = $2) AS processed,"  # noqa: S608
        " (SELECT coalesce(json_agg(json_build_array(h.seq, h.speaker, h.content) ORDER BY h.seq),"
        " '[]'::json) FROM (SELECT seq, speaker, content,"
        "  row_number() OVER (ORDER BY seq DESC) AS latest,"
        "  row_number() OVER (PARTITION BY speaker ORDER BY seq DESC) AS own"
        "  FROM stoa.turns WHERE conversation_id = c.id) h WHERE h.latest <= $3 OR h.own <= 2) AS history,"
        f" {memory} AS memory FROM stoa.conversations c WHERE c.id = $1"
    )
    row = await db.fetchrow(query, key, message_id, recent, *([notes] if table else []))
    if row is None:
        return None
    return TurnInputs(
        conversation=_conversation(row),
        processed=bool(row["processed"]),
        history=[Turn(seq, speaker, content) for seq, speaker, content in json.loads(row["history"])],
        memory=[str(note) for note in json.loads(row["memory"])],
    )


async def insert_conversation(
    db: asyncpg.Pool,
    *,
    conversation_id: str,
    name: str,
    spec: dict[str, Any],
    phase: Phase,
    first: NextMessage,
    traceparent: str,
    synthetic: bool = False,
) -> bool:
    """Create the conversation and its first message in one transaction; False when it already exists.

    ``synthetic``: a probe, never counted in agent totals nor listed with user conversations."""
    async with db.acquire() as conn, conn.transaction():
        created = await conn.fetchval(
            "INSERT INTO stoa.conversations (id, name, spec, phase, traceparent, synthetic)"
            " VALUES ($1, $2, $3::jsonb, $4, $5, $6) ON CONFLICT (name) DO NOTHING RETURNING id",
            uuid.UUID(conversation_id),
            name,
            json.dumps(spec),
            phase.value,
            traceparent,
            synthetic,
        )
        if created is None:
            return False
        await conn.execute(
            "INSERT INTO stoa.outbox (message_id, conversation_id, seq, routing_key, body)"
            " VALUES ($1, $2, $3, $4, $5)",
            first.message_id,
            uuid.UUID(conversation_id),
            first.seq,
            first.routing_key,
            first.body,
        )
        if phase is Phase.SUSPENDED:
            await conn.execute(
                "UPDATE stoa.conversations SET parked_message = $2 WHERE id = $1",
                uuid.UUID(conversation_id),
                first.message_id,
            )
            await conn.execute(
                "UPDATE stoa.outbox SET published_at = now() WHERE message_id = $1", first.message_id
            )
        return True


def _commit_sql(schema: str) -> str:
    """One statement (one round trip, atomic): lock the conversation, and only if this seq is next and
    the conversation is not finished, store the turn, its processed id, totals, the next message, the
    memory note, and mark the delivered message's outbox row published (it was: it arrived). A synthetic
    (probe) conversation's turns never count in the agent's totals."""
    return (
        "WITH conv AS (SELECT phase, next_seq, synthetic FROM stoa.conversations WHERE id = $1 FOR UPDATE),"  # noqa: S608 (memory_schema: an identifier)
        " ok AS (SELECT phase, synthetic FROM conv"
        "  WHERE next_seq = $2 AND phase NOT IN ('Succeeded', 'Failed')),"
        " turn AS (INSERT INTO stoa.turns (conversation_id, seq, speaker, role, content, tokens_in,"
        "  tokens_out, cost_usd, model, duration_ms, pod, message_id, traceparent, cost_source, target)"
        "  SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15 FROM ok),"
        " processed AS (INSERT INTO stoa.processed_messages"
        "  (message_id, conversation_id, agent, pod, outcome, turn_ms)"
        "  SELECT $12, $1, $16, $11, 'stored', $25 FROM ok),"
        " advanced AS (UPDATE stoa.conversations c SET next_seq = $2 + 1, turns = $2, last_speaker = $3,"
        "  phase = CASE WHEN $17::text IS NOT NULL THEN $17::text"
        "   WHEN ok.phase = 'Suspended' THEN 'Suspended' ELSE 'Running' END,"
        "  reason = CASE WHEN $18::text IS NULL THEN c.reason ELSE $18::text END,"
        "  tokens_in = c.tokens_in + $6, tokens_out = c.tokens_out + $7, cost_usd = c.cost_usd + $8,"
        "  unpriced_turns = c.unpriced_turns + $19, started_at = coalesce(c.started_at, now()),"
        "  finished_at = CASE WHEN $18::text IS NULL THEN NULL ELSE now() END, updated_at = now()"
        "  FROM ok WHERE c.id = $1),"
        " totals AS (INSERT INTO stoa.agent_totals AS t"
        "  (agent, turns, tokens_in, tokens_out, cost_usd, unpriced_turns)"
        "  SELECT $16, 1, $6, $7, $8, $19 FROM ok WHERE NOT ok.synthetic"  # probes never count in totals
        "  ON CONFLICT (agent) DO UPDATE SET turns = t.turns + 1,"
        "  tokens_in = t.tokens_in + $6, tokens_out = t.tokens_out + $7, cost_usd = t.cost_usd + $8,"
        "  unpriced_turns = t.unpriced_turns + $19, updated_at = now()),"
        " queued AS (INSERT INTO stoa.outbox (message_id, conversation_id, seq, routing_key, body)"
        "  SELECT $20, $1, $21, $22, $23 FROM ok WHERE $20::text IS NOT NULL),"
        " delivered AS (UPDATE stoa.outbox SET published_at = coalesce(published_at, now()),"
        "  publish_count = greatest(publish_count, 1) WHERE message_id = $12 AND EXISTS (SELECT 1 FROM ok)),"
        f" note AS (INSERT INTO {schema}.memory (conversation_id, seq, note)"
        "  SELECT $1, $2, $24 FROM ok WHERE $24::text IS NOT NULL ON CONFLICT DO NOTHING),"
        " seen AS (UPDATE stoa.agent_activity SET last_seen_at = now()"
        "  WHERE agent = $16 AND pod = $11 AND EXISTS (SELECT 1 FROM ok))"
        " SELECT CASE WHEN NOT EXISTS (SELECT 1 FROM conv) OR (SELECT next_seq FROM conv) <> $2"
        "  THEN 'duplicate' WHEN (SELECT phase FROM conv) IN ('Succeeded', 'Failed') THEN 'finished'"
        "  ELSE 'stored' END"
    )


async def commit_turn(
    db: asyncpg.Pool | asyncpg.Connection,
    turn: NewTurn,
    next_message: NextMessage | None,
    end: tuple[Phase, str] | None,
    memory_note: str | None,
) -> str:
    """Store a turn, mark its message processed, queue the next message: one statement, one round trip.

    Returns ``stored``, ``duplicate`` (the seq is already stored: another replica won) or ``finished``.
    """
    outcome = await db.fetchval(
        _commit_sql(memory_schema(turn.agent)),
        uuid.UUID(turn.conversation_id),
        turn.seq,
        turn.speaker,
        turn.role,
        turn.content,
        turn.tokens_in,
        turn.tokens_out,
        turn.cost_usd,
        turn.model,
        turn.duration_ms,
        turn.pod,
        turn.message_id,
        turn.traceparent,
        turn.cost_source.value,
        turn.target,
        turn.agent,
        end[0].value if end else None,
        end[1] if end else None,
        1 if turn.cost_source is CostSource.UNPRICED else 0,
        next_message.message_id if next_message else None,
        next_message.seq if next_message else None,
        next_message.routing_key if next_message else None,
        next_message.body if next_message else None,
        memory_note,
        turn.turn_ms,
    )
    return str(outcome)


async def fail_conversation(
    db: asyncpg.Pool,
    conversation_id: str,
    reason: str,
    *,
    message_id: str | None = None,
    agent: str = "",
    pod: str = "",
    outcome: str = "failed",
) -> bool:
    """Mark Failed (unless already finished) and the message processed; True when this call failed it."""
    conv_id = uuid.UUID(conversation_id)
    async with db.acquire() as conn, conn.transaction():
        changed = await conn.fetchval(
            "UPDATE stoa.conversations SET phase = 'Failed', reason = $2, finished_at = now(),"
            " updated_at = now() WHERE id = $1 AND phase NOT IN ('Succeeded', 'Failed') RETURNING id",
            conv_id,
            reason[:2000],
        )
        if message_id is not None:
            await conn.execute(
                "INSERT INTO stoa.processed_messages (message_id, conversation_id, agent, pod, outcome)"
                " VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
                message_id,
                conv_id,
                agent,
                pod,
                outcome,
            )
        return changed is not None


async def park_message(db: asyncpg.Pool | asyncpg.Connection, conversation_id: str, message_id: str) -> bool:
    """Remember the next message of a Suspended conversation; False when it is no longer suspended."""
    parked = await db.fetchval(
        "UPDATE stoa.conversations SET parked_message = $2, updated_at = now()"
        " WHERE id = $1 AND phase = 'Suspended' RETURNING id",
        uuid.UUID(conversation_id),
        message_id,
    )
    return parked is not None


async def unpublished(
    db: asyncpg.Pool, conversation_id: str | None = None, min_age_seconds: float = 0
) -> list[OutboxRow]:
    rows = await db.fetch(
        "SELECT id, message_id, routing_key, body FROM stoa.outbox WHERE published_at IS NULL"
        " AND ($1::uuid IS NULL OR conversation_id = $1)"
        " AND created_at <= now() - make_interval(secs => $2) ORDER BY id LIMIT 1000",
        uuid.UUID(conversation_id) if conversation_id else None,
        min_age_seconds,
    )
    return [OutboxRow(r["id"], r["message_id"], r["routing_key"], bytes(r["body"])) for r in rows]


async def mark_published(db: asyncpg.Pool, outbox_id: int) -> None:
    await db.execute(
        "UPDATE stoa.outbox SET published_at = coalesce(published_at, now()),"
        " publish_count = publish_count + 1 WHERE id = $1",
        outbox_id,
    )


async def mark_published_ids(db: asyncpg.Pool, message_ids: list[str]) -> None:
    await db.execute(
        "UPDATE stoa.outbox SET published_at = coalesce(published_at, now()),"
        " publish_count = publish_count + 1 WHERE message_id = ANY($1::text[])",
        message_ids,
    )


async def record_activity(db: asyncpg.Pool, agent: str, pod: str) -> str | None:
    """This pod now consumes for agent key ``agent``; returns the pod it took over from (None: none/same)."""
    row = await db.fetchrow(
        "WITH old AS (SELECT pod FROM stoa.agent_activity WHERE agent = $1)"
        " INSERT INTO stoa.agent_activity AS a (agent, pod) VALUES ($1, $2)"
        " ON CONFLICT (agent) DO UPDATE SET pod = $2,"
        " previous_pod = CASE WHEN a.pod = $2 THEN a.previous_pod ELSE a.pod END,"
        " active_since = CASE WHEN a.pod = $2 THEN a.active_since ELSE now() END,"
        " takeovers = a.takeovers + CASE WHEN a.pod = $2 THEN 0 ELSE 1 END, last_seen_at = now()"
        " RETURNING (SELECT pod FROM old) AS old_pod",
        agent,
        pod,
    )
    old = row["old_pod"] if row else None
    return old if old and old != pod else None


async def record_error(db: asyncpg.Pool, message_id: str, agent: str, pod: str, error: str) -> None:
    await db.execute(
        "INSERT INTO stoa.message_errors (message_id, agent, pod, error) VALUES ($1, $2, $3, $4)",
        message_id,
        agent,
        pod,
        error[:2000],
    )


async def last_error(db: asyncpg.Pool, message_id: str) -> str | None:
    value = await db.fetchval(
        "SELECT error FROM stoa.message_errors WHERE message_id = $1 ORDER BY id DESC LIMIT 1", message_id
    )
    return str(value) if value is not None else None


async def record_dead_letter(
    db: asyncpg.Pool,
    *,
    message_id: str,
    conversation_id: str | None,
    agent: str,
    death_reason: str,
    deliveries: int | None,
    reason: str,
    body: bytes,
    headers: dict[str, Any],
) -> bool:
    conv = None
    if conversation_id:
        try:
            conv = uuid.UUID(conversation_id)
        except ValueError:
            conv = None
    inserted = await db.fetchval(
        "INSERT INTO stoa.dead_letters (message_id, conversation_id, agent, death_reason, deliveries, reason,"
        " body, headers) VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb)"
        " ON CONFLICT (message_id) DO NOTHING RETURNING id",
        message_id,
        conv,
        agent,
        death_reason,
        deliveries,
        reason[:2000],
        body,
        json.dumps(headers, default=str),
    )
    return inserted is not None
