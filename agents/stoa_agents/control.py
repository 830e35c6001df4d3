"""What the operator (and ``stoa run``) calls: start, suspend, resume, stop, purge and read status.

All functions are idempotent and safe to call from every reconcile.
"""

from __future__ import annotations

import uuid
from datetime import datetime

import asyncpg

from stoa_agents.bus.broker import Bus
from stoa_agents.identity import agent_key, archived_name, participant_key
from stoa_agents.outbox import publish_outbox
from stoa_agents.protocol import make_message
from stoa_agents.store import repo
from stoa_agents.store.migrate import memory_schema
from stoa_agents.turn_trace import publish_span, start_span, traceparent_of
from stoa_agents.turns.policy import Phase, speaker_for
from stoa_api.conversation import ConversationSpec
from stoa_api.status import AgentShare, AgentStatus, ConversationStatus


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.isoformat(timespec="seconds").replace("+00:00", "Z")


def status_of(conversation: repo.ConversationRow, shares: dict[str, AgentShare]) -> ConversationStatus:
    """The runtime's part of a Conversation's status (the type the resource's status is written as)."""
    c = conversation
    return ConversationStatus(
        conversation_id=c.id,
        runtime_name=c.name,
        phase=c.phase,
        reason=c.reason,
        failure_reason=c.reason if c.phase is Phase.FAILED else None,
        turns=c.turns,
        last_speaker=c.last_speaker,
        tokens_in=c.tokens_in,
        tokens_out=c.tokens_out,
        cost_usd=round(c.cost_usd, 8),
        unpriced_turns=c.unpriced_turns,
        agents=shares,
        started_at=_iso(c.started_at),
        finished_at=_iso(c.finished_at),
    )


async def start_conversation(
    db: asyncpg.Pool,
    bus: Bus,
    name: str,
    spec: ConversationSpec,
    *,
    uid: str | None = None,
    synthetic: bool = False,
) -> ConversationStatus:
    """Create the conversation and send turn 1; calling it again (any number of times) starts nothing new
    but finishes a start that crashed between the commit and the publish.

    ``name`` is the runtime name: ``<namespace>/<name>`` (operator) or a bare name (``stoa run``); the
    participants are the agents of that namespace (``identity.participant_key``). A conversation stored
    under ``name`` with another ``uid`` belongs to an earlier resource of that name (names are unique at
    any time, so it is gone): it is archived (stopped if still running) and this one starts."""
    existing = await repo.find_conversation(db, name)
    if existing is not None and uid is not None and existing.id != str(uuid.UUID(uid)):
        await archive(db, existing, REPLACED)
        existing = None
    if existing is None:
        conversation_id = str(uuid.UUID(uid)) if uid else str(uuid.uuid4())
        with start_span(conversation_id, name) as span:
            return await _start(
                db,
                bus,
                name,
                spec,
                conversation_id=conversation_id,
                synthetic=synthetic,
                traceparent=traceparent_of(span),
            )
    status = await conversation_status(db, name)
    assert status is not None
    await publish_outbox(db, bus, status.id)
    return status


async def _start(
    db: asyncpg.Pool,
    bus: Bus,
    name: str,
    spec: ConversationSpec,
    *,
    conversation_id: str,
    synthetic: bool,
    traceparent: str,
) -> ConversationStatus:
    """Create the record and turn 1 (carrying the start span's context), then publish it."""
    speaker = speaker_for(spec, 1, [])
    message = make_message(
        conversation_id, name, 1, sender="", to=speaker, traceparent=traceparent, priority=spec.priority
    )
    first = repo.NextMessage(message.message_id, 1, participant_key(name, speaker), message.body())
    phase = Phase.SUSPENDED if spec.suspend else Phase.PENDING
    for participant in spec.participants:
        await bus.declare_agent(participant_key(name, participant.agent_ref))
    await repo.insert_conversation(
        db,
        conversation_id=conversation_id,
        name=name,
        spec=spec.model_dump(mode="json", by_alias=True),
        phase=phase,
        first=first,
        traceparent=traceparent,
        synthetic=synthetic,  # a probe (stoa_agents.probes): never in totals or user listings
    )
    status = await conversation_status(db, name)
    assert status is not None
    with publish_span(first.routing_key):
        await publish_outbox(db, bus, status.id)
    return status


async def suspend(db: asyncpg.Pool, name: str) -> bool:
    """Running/Pending -> Suspended. The next turn message is parked when it arrives."""
    changed = await db.fetchval(
        "UPDATE stoa.conversations SET phase = 'Suspended', updated_at = now()"
        " WHERE name = $1 AND phase IN ('Pending', 'Running') RETURNING id",
        name,
    )
    return changed is not None


async def resume(db: asyncpg.Pool, bus: Bus, name: str) -> bool:
    """Suspended -> Running (Pending before turn 1); republishes the parked message, if any."""
    async with db.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(
            "SELECT id, parked_message FROM stoa.conversations"
            " WHERE name = $1 AND phase = 'Suspended' FOR UPDATE",
            name,
        )
        if row is None:
            return False
        await conn.execute(
            "UPDATE stoa.conversations SET phase = CASE WHEN turns = 0 THEN 'Pending' ELSE 'Running' END,"
            " parked_message = NULL, updated_at = now() WHERE id = $1",
            row["id"],
        )
        if row["parked_message"]:
            await conn.execute(
                "UPDATE stoa.outbox SET published_at = NULL WHERE message_id = $1", row["parked_message"]
            )
    await publish_outbox(db, bus, str(row["id"]))
    return True


STOPPED_BY_REQUEST = "Stopped by request"
REPLACED = "Replaced by a new conversation of the same name"


async def archive(db: asyncpg.Pool, conversation: repo.ConversationRow, reason: str) -> str:
    """Free a conversation's name, keeping its transcript: stop it (phase Failed, ``reason``) unless it
    ended, and rename it ``<name>@<id8>``; returns the name it is kept under."""
    if conversation.phase not in (Phase.SUCCEEDED, Phase.FAILED):
        await repo.fail_conversation(db, conversation.id, reason)
    kept = archived_name(conversation.name, conversation.id)
    await repo.rename_conversation(db, conversation.id, kept)
    return kept


async def stop(db: asyncpg.Pool, name: str, reason: str = STOPPED_BY_REQUEST) -> bool:
    """Terminate: phase Failed with ``reason``; a turn in flight is discarded when it tries to commit."""
    conversation = await repo.find_conversation(db, name)
    if conversation is None:
        return False
    return await repo.fail_conversation(db, conversation.id, reason)


async def purge(db: asyncpg.Pool, name: str) -> bool:
    """Delete the conversation, its transcript, outbox and the participants' private notes about it."""
    conversation = await repo.find_conversation(db, name)
    if conversation is None:
        return False
    spec = ConversationSpec.from_stored(conversation.spec)
    async with db.acquire() as conn, conn.transaction():
        for participant in spec.participants:
            schema = memory_schema(participant_key(name, participant.agent_ref))
            exists = await conn.fetchval("SELECT to_regclass($1)", f"{schema}.memory")
            if exists:
                await conn.execute(
                    f"DELETE FROM {schema}.memory WHERE conversation_id = $1",  # noqa: S608 (safe name)
                    uuid.UUID(conversation.id),
                )
        await conn.execute("DELETE FROM stoa.conversations WHERE id = $1", uuid.UUID(conversation.id))
    return True


async def release(db: asyncpg.Pool, name: str, uid: str, *, purge_transcript: bool, reason: str) -> str:
    """What deleting the resource does to the conversation it started (``uid``): stop it if it runs, then
    purge it or keep it under its archived name (so the name is free); returns what was done."""
    conversation = await repo.find_conversation(db, name)
    if conversation is None or conversation.id != str(uuid.UUID(uid)):
        return "nothing to stop"
    done = "already finished" if conversation.phase in (Phase.SUCCEEDED, Phase.FAILED) else "stopped"
    if purge_transcript:
        await stop(db, name, reason=reason)
        await purge(db, name)
        return f"{done}, transcript purged"
    return f"{done}, transcript kept as {await archive(db, conversation, reason)}"


async def reconcile_conversation(
    db: asyncpg.Pool, bus: Bus, name: str, spec: ConversationSpec, *, uid: str | None = None
) -> ConversationStatus:
    """start_conversation + follow ``spec.stop`` and ``spec.suspend``; what an operator's reconcile calls
    every time."""
    status = await start_conversation(db, bus, name, spec, uid=uid)
    if spec.stop and status.phase not in (Phase.SUCCEEDED, Phase.FAILED):
        await stop(db, name, reason=STOPPED_BY_REQUEST)
    elif spec.suspend and status.phase in (Phase.PENDING, Phase.RUNNING):
        await suspend(db, name)
    elif not spec.suspend and status.phase is Phase.SUSPENDED:
        await resume(db, bus, name)
    else:
        return status
    refreshed = await conversation_status(db, name)
    assert refreshed is not None
    return refreshed


async def conversation_status(db: asyncpg.Pool, name: str) -> ConversationStatus | None:
    conversation = await repo.find_conversation(db, name)
    if conversation is None:
        return None
    rows = await db.fetch(
        "SELECT speaker, count(*) AS turns, sum(tokens_in) AS tin, sum(tokens_out) AS tout,"
        " sum(cost_usd) AS cost, count(*) FILTER (WHERE cost_source = 'unpriced') AS unpriced"
        " FROM stoa.turns WHERE conversation_id = $1 GROUP BY speaker ORDER BY speaker",
        uuid.UUID(conversation.id),
    )
    shares = {
        r["speaker"]: AgentShare(
            turns=int(r["turns"]),
            tokens_in=int(r["tin"] or 0),
            tokens_out=int(r["tout"] or 0),
            cost_usd=round(float(r["cost"] or 0), 8),
            unpriced_turns=int(r["unpriced"] or 0),
        )
        for r in rows
    }
    return status_of(conversation, shares)


async def agent_status(db: asyncpg.Pool, agent: str, namespace: str = "") -> AgentStatus:
    """The runtime's part of Agent ``namespace/agent``'s status: which pod is the active consumer
    (recorded at its first delivery) and its totals; ``namespace=""`` for unscoped agents (``stoa run``)."""
    key = agent_key(namespace, agent)
    act = await db.fetchrow("SELECT * FROM stoa.agent_activity WHERE agent = $1", key)
    tot = await db.fetchrow("SELECT * FROM stoa.agent_totals WHERE agent = $1", key)
    return AgentStatus(
        active_pod=act["pod"] if act else None,
        previous_pod=act["previous_pod"] if act else None,
        takeovers=int(act["takeovers"]) if act else 0,
        turns_handled=int(tot["turns"]) if tot else 0,
        tokens_in=int(tot["tokens_in"]) if tot else 0,
        tokens_out=int(tot["tokens_out"]) if tot else 0,
        cost_usd=round(float(tot["cost_usd"]), 8) if tot else 0.0,
        unpriced_turns=int(tot["unpriced_turns"]) if tot else 0,
    )
