"""The consumer side of one replica: each delivery is parsed, processed, and settled exactly once.

Per delivery: parse (malformed -> dead-letter at once) -> process -> ack; a failure is classified by
``turns.classify`` into retry in place, requeue, reject or exit without ack (docs/runtime.md, failure
matrix). The delivery is never cancelled while held: SIGTERM waits for it (``drain``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import asyncpg
from aio_pika.abc import AbstractIncomingMessage

from stoa_agents.bus.broker import Bus
from stoa_agents.errors import failure_kind
from stoa_agents.metrics import AgentMetrics
from stoa_agents.protocol import MalformedMessageError, TurnMessage, parse_message
from stoa_agents.store import repo
from stoa_agents.turn_trace import turn_outcome, turn_span
from stoa_agents.turns.classify import Action, FailureKind, classify, retry_delay

log = logging.getLogger("stoa.agents.consumer")


class Replica(Protocol):
    """What the consumer needs of its replica (``AgentRuntime``)."""

    agent: str
    pod: str
    key: str
    metrics: AgentMetrics
    db: asyncpg.Pool | None
    bus: Bus | None
    stopping: asyncio.Event

    def give_up(self) -> None:
        """Stop consuming and exit non-zero (the message is left unacked for a standby)."""


def header_int(headers: dict[str, Any], key: str) -> int | None:
    value = headers.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def message_key(message: AbstractIncomingMessage) -> str:
    return message.message_id or "sha256:" + hashlib.sha256(message.body).hexdigest()[:32]


class Consumer:
    def __init__(
        self,
        replica: Replica,
        process: Callable[[TurnMessage], Awaitable[str]],
        on_delivery: Callable[[bool], Awaitable[None]],
        infra_retry_seconds: float,
    ) -> None:
        """``process``: run the turn of a message, returning its outcome (``stored``, ``duplicate`` ...);
        ``on_delivery(redelivered)``: called before each attempt (records the active replica)."""
        self.r = replica
        self.process = process
        self.on_delivery = on_delivery
        self.infra_retry_seconds = infra_retry_seconds
        self.inflight: set[asyncio.Task[Any]] = set()

    async def on_message(self, message: AbstractIncomingMessage) -> None:
        if self.r.stopping.is_set():
            return  # not acked: returned to the queue when the connection closes
        task = asyncio.current_task()
        if task is not None:
            self.inflight.add(task)
        try:
            await self._handle(message)
        except Exception:  # a bug in the handler itself must not leave the message held forever
            log.exception(
                "Handler crashed agent=%s pod=%s message_id=%s", self.r.agent, self.r.pod, message.message_id
            )
            with contextlib.suppress(Exception):
                await message.nack(requeue=True)
        finally:
            if task is not None:
                self.inflight.discard(task)

    async def drain(self, grace_seconds: float) -> None:
        """SIGTERM: never cancel the consumer while holding a message. Finish and ack the current turns
        (bounded by the grace period); closing the connection afterwards returns anything unacked."""
        if self.inflight:
            log.info("Agent finishing current turn before exit agent=%s pod=%s", self.r.agent, self.r.pod)
            await asyncio.wait(list(self.inflight), timeout=grace_seconds)

    async def _handle(self, message: AbstractIncomingMessage) -> None:
        r = self.r
        started = time.monotonic()
        headers = dict(message.headers or {})
        if message.redelivered:
            r.metrics.redeliveries.labels(r.agent).inc()
        try:
            msg = parse_message(message.body)
        except MalformedMessageError as exc:
            log.error(
                "Rejecting malformed message agent=%s pod=%s message_id=%s reason=%r",
                r.agent,
                r.pod,
                message.message_id,
                str(exc),
            )
            decision = classify(FailureKind.MALFORMED, 0.0, self.infra_retry_seconds)
            await self._settle(
                decision.action, message, message_key(message), f"malformed: {exc}", "malformed"
            )
            return
        delivery = header_int(headers, "x-delivery-count") or 0
        with turn_span(
            msg,
            agent=r.agent,
            namespace=r.key.rpartition("/")[0],
            pod=r.pod,
            delivery=delivery,
            redelivered=bool(message.redelivered),
        ) as span:
            attempt = 0
            while True:
                attempt += 1
                try:
                    await self.on_delivery(bool(message.redelivered))
                    outcome = await self.process(msg)
                    await message.ack()
                    turn_outcome(span, outcome)
                    r.metrics.turns.labels(r.agent, outcome).inc()
                    if outcome == "stored":
                        r.metrics.turn_seconds.labels(r.agent).observe(time.monotonic() - started)
                    return
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    bus = r.bus
                    kind = failure_kind(exc, broker_closed=bus is None or bus.is_closed)
                    decision = classify(kind, time.monotonic() - started, self.infra_retry_seconds)
                    log.log(
                        logging.INFO if decision.action is Action.RETRY else logging.WARNING,
                        "Turn failed agent=%s pod=%s conversation=%s seq=%d kind=%s action=%s error=%r "
                        "delivery_count=%s",
                        r.agent,
                        r.pod,
                        msg.conversation,
                        msg.seq,
                        kind.value,
                        decision.action.value,
                        exc,
                        header_int(headers, "x-delivery-count"),
                    )
                    if decision.action is Action.RETRY:
                        await asyncio.sleep(retry_delay(attempt))
                        continue
                    turn_outcome(span, decision.action.value)
                    await self._settle(decision.action, message, msg.message_id, f"{kind.value}: {exc}")
                    return

    async def _settle(
        self,
        action: Action,
        message: AbstractIncomingMessage,
        key: str,
        error: str,
        label: str = "rejected",
    ) -> None:
        """Apply ``action`` to the delivery; ``key``: its message id (the error is recorded under it)."""
        r = self.r
        if action in (Action.REQUEUE, Action.REJECT) and r.db is not None:
            with contextlib.suppress(Exception):
                await repo.record_error(r.db, key, r.key, r.pod, error)
        try:
            if action is Action.REQUEUE:
                await message.nack(requeue=True)
            elif action is Action.REJECT:
                r.metrics.dead_lettered.labels(r.agent, label).inc()
                await message.reject(requeue=False)
            elif action is Action.EXIT:
                log.error("Exiting without ack agent=%s pod=%s reason=%r", r.agent, r.pod, error)
                r.give_up()
                if r.bus is not None:
                    await r.bus.close()
        except Exception as exc:  # channel already gone: the broker redelivers
            log.warning(
                "Could not settle message agent=%s pod=%s action=%s error=%r",
                r.agent,
                r.pod,
                action.value,
                exc,
            )
