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


class PublishedMarks:
    """Outbox rows published by this replica's turns, marked in one statement per flush, off the turn's
    critical path (the turn publishes its next message itself, with a confirm). A row not marked yet is
    at worst republished by the relay later: a duplicate the receiver dedupes. The receiving turn's
    commit marks it too, so a finished conversation's rows are all marked."""

    def __init__(self) -> None:
        self.pending: set[str] = set()

    def add(self, message_id: str) -> None:
        self.pending.add(message_id)

    async def flush(self, db: asyncpg.Pool) -> int:
        if not self.pending:
            return 0
        ids, self.pending = self.pending, set()
        try:
            await repo.mark_published_ids(db, sorted(ids))
        except BaseException:
            self.pending |= ids  # retried on the next flush
            raise
        return len(ids)
