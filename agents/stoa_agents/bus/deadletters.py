"""The dead-letter queue of one agent: record each dead letter once and fail its conversation with a
readable reason (what died, how often it was tried, the last error recorded for it)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aio_pika.abc import AbstractIncomingMessage

from stoa_agents.bus.consumer import Replica, header_int, message_key
from stoa_agents.protocol import MalformedMessageError, TurnMessage, parse_message
from stoa_agents.store import repo
from stoa_agents.store.db import CONNECTION_ERRORS
from stoa_agents.turns.policy import TERMINAL_PHASES

log = logging.getLogger("stoa.agents.deadletters")

# (conversation id, conversation name, message id, reason, outcome) -> marks the conversation Failed
FailConversation = Callable[[str, str, str, str, str], Awaitable[None]]


def _x_death(headers: dict[str, Any], field: str) -> Any:
    deaths = headers.get("x-death")
    if isinstance(deaths, list) and deaths and isinstance(deaths[0], dict):
        return deaths[0].get(field)
    return None


def dead_letter_reason(
    msg: TurnMessage | None, death_reason: str, delivery_limit: int, error: str | None
) -> str:
    """The conversation's failure reason for a dead letter (pure)."""
    if msg is None:
        return f"Malformed message dead-lettered ({death_reason}): {error or 'unreadable body'}"
    cause = error or "no error recorded: the agent process died while handling it"
    if death_reason == "delivery_limit":
        tries = delivery_limit + 1
        what = f"failed on all {tries} deliveries (delivery limit {delivery_limit}) and was dead-lettered"
    else:
        what = f"was dead-lettered ({death_reason})"
    return f"Turn {msg.seq} for agent {msg.to} {what}. Last error: {cause}"


class DeadLetters:
    def __init__(self, replica: Replica, delivery_limit: int, fail: FailConversation) -> None:
        self.r = replica
        self.delivery_limit = delivery_limit
        self.fail = fail

    async def on_message(self, message: AbstractIncomingMessage) -> None:
        r = self.r
        db = r.db
        if r.stopping.is_set() or db is None:
            return
        headers = dict(message.headers or {})
        death_reason = str(headers.get("x-first-death-reason") or _x_death(headers, "reason") or "unknown")
        key = message_key(message)
        msg: TurnMessage | None = None
        with contextlib.suppress(MalformedMessageError):
            msg = parse_message(message.body)
        try:
            error = await repo.last_error(db, msg.message_id if msg else key)
            reason = dead_letter_reason(msg, death_reason, self.delivery_limit, error)
            fresh = await repo.record_dead_letter(
                db,
                message_id=msg.message_id if msg else key,
                conversation_id=msg.conversation_id if msg else None,
                agent=r.key,
                death_reason=death_reason,
                deliveries=header_int(headers, "x-delivery-count"),
                reason=reason,
                body=message.body,
                headers=headers,
            )
            if msg is not None:
                conv = await repo.load_conversation(db, msg.conversation_id)
                if conv is not None and conv.next_seq == msg.seq and conv.phase not in TERMINAL_PHASES:
                    await self.fail(conv.id, conv.name, msg.message_id, reason, "dead-lettered")
            if fresh:
                r.metrics.dead_lettered.labels(r.agent, death_reason).inc()
            await message.ack()
        except CONNECTION_ERRORS as exc:
            log.warning("Could not record dead letter agent=%s error=%r", r.agent, exc)
            await asyncio.sleep(1.0)
            with contextlib.suppress(Exception):
                await message.nack(requeue=True)
