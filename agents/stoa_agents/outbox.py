"""Publishing committed outbox rows with confirms; used after each turn, on start and periodically."""

from __future__ import annotations

import logging

import asyncpg

from stoa_agents.bus.broker import Bus
from stoa_agents.store import repo

log = logging.getLogger("stoa.agents.outbox")


async def publish_outbox(
    db: asyncpg.Pool, bus: Bus, conversation_id: str | None = None, min_age_seconds: float = 0.0
) -> int:
    """Publish unpublished rows (all, or of one conversation) and mark them; a duplicate publish is harmless
    because consumers dedupe by message id."""
    rows = await repo.unpublished(db, conversation_id, min_age_seconds)
    for row in rows:
        await bus.publish(row.routing_key, row.body, message_id=row.message_id)
        await repo.mark_published(db, row.id)
    if rows and conversation_id is None:
        log.info("Relayed outbox messages count=%d", len(rows))
    return len(rows)
