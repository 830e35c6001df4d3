"""The ``stoa agent`` process: one replica of one agent (active consumer or hot standby).

Per delivery: dedupe -> load history -> call the model -> one transaction (turn + processed id + outbox)
-> publish the outbox with confirms -> ack. Any crash in between ends, after redelivery, in exactly one
stored turn and one next message per seq (docs/runtime.md, "Exactly once").
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import random
import signal
import time
from typing import Any

import asyncpg
from aio_pika.abc import AbstractIncomingMessage

from stoa_agents.bus.broker import Bus
from stoa_agents.errors import InjectedFailureError, MisroutedError, UnknownConversationError, failure_kind
from stoa_agents.health import start_health_server
from stoa_agents.identity import agent_key, conversation_namespace, participant_key
from stoa_agents.metrics import AgentMetrics
from stoa_agents.model_client import Completion, ModelClient, ModelConfig, ModelError
from stoa_agents.outbox import publish_outbox
from stoa_agents.protocol import MalformedMessageError, TurnMessage, make_message, parse_message
from stoa_agents.settings import AgentSettings
from stoa_agents.store import repo
from stoa_agents.store.db import CONNECTION_ERRORS, open_pool
from stoa_agents.store.migrate import ensure_memory
from stoa_agents.tracing import child_traceparent, trace_id_of
from stoa_agents.turns.classify import Action, classify, retry_delay
from stoa_agents.turns.policy import TERMINAL_PHASES, End, Phase, Turn, after_turn, speaker_for, turn_limit
from stoa_agents.turns.prompts import TurnContext, build_messages, memory_note
from stoa_api.conversation import ConversationSpec, TurnPolicyType

log = logging.getLogger("stoa.agents.runtime")


def model_config(settings: AgentSettings) -> ModelConfig:
    key = settings.model_api_key.get_secret_value() if settings.model_api_key else None
    if key is None and settings.model_api_key_env:
        key = os.environ.get(settings.model_api_key_env)
    return ModelConfig(
        base_url=settings.model_base_url,
        model=settings.model_name,
        api_key=key,
        max_tokens=settings.model_max_tokens,
        temperature=settings.model_temperature,
        timeout_seconds=settings.model_timeout_seconds,
        retries=settings.model_retries,
        backoff_seconds=settings.model_backoff_seconds,
        backoff_max_seconds=settings.model_backoff_max_seconds,
        unreachable_grace_seconds=settings.model_unreachable_grace_seconds,
        fallback_models=tuple(m.strip() for m in settings.model_fallbacks.split(",") if m.strip()),
    )


def _header_int(headers: dict[str, Any], key: str) -> int | None:
    value = headers.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


class AgentRuntime:
    def __init__(self, settings: AgentSettings) -> None:
        self.s = settings
        self.agent = settings.agent_name  # bare name: protocol, transcript, logs, metrics
        self.namespace = settings.namespace
        self.key = agent_key(settings.namespace, settings.agent_name)  # queues, activity, totals, memory
        self.pod = settings.pod_name
        self.metrics = AgentMetrics()
        self.model = ModelClient(model_config(settings))
        self.stopping = asyncio.Event()
        self.inflight: set[asyncio.Task[Any]] = set()
        self.crash_points = settings.crash_points()
        self.db: asyncpg.Pool | None = None
        self.bus: Bus | None = None
        self.active_recorded = False
        self.exit_code = 0

    # ---- process lifecycle -------------------------------------------------------------------------

    def ready(self) -> tuple[bool, str]:
        broker = self.bus is not None and not self.bus.is_closed
        database = self.db is not None and not self.db.is_closing()
        return (
            broker and database,
            f"broker={'up' if broker else 'down'} database={'up' if database else 'down'}",
        )

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stopping.set)
        health = None
        if self.s.metrics_port_number:
            health = await start_health_server(
                self.s.metrics_host, self.s.metrics_port_number, self.metrics, self.ready
            )
        log.info(
            "Agent starting agent=%s namespace=%s pod=%s model=%s",
            self.agent,
            self.namespace or "-",
            self.pod,
            self.s.model_name,
        )
        try:
            self.db = await open_pool(self.s.postgres_dsn, wait_seconds=self.s.infra_retry_seconds)
            async with self.db.acquire() as conn:
                await ensure_memory(conn, self.key, self.s.memory_retention_days)
            relay = asyncio.create_task(self._relay_loop())
            delay = 0.2
            while not self.stopping.is_set():
                try:
                    await self._session()
                    delay = 0.2
                except Exception as exc:  # any broker/database failure: reconnect with backoff
                    if self.stopping.is_set():
                        break
                    log.warning(
                        "Broker session ended agent=%s pod=%s error=%r retry_in=%.1fs",
                        self.agent,
                        self.pod,
                        exc,
                        delay,
                    )
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self.stopping.wait(), delay)
                    delay = min(delay * 2, 5.0)
            relay.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await relay
        finally:
            await self.model.close()
            if self.db is not None:
                await self.db.close()
            if health is not None:
                await health.cleanup()
        log.info("Agent stopped agent=%s pod=%s exit_code=%d", self.agent, self.pod, self.exit_code)
        return self.exit_code

    async def _session(self) -> None:
        bus = await Bus.connect(
            self.s.rabbitmq_url,
            delivery_limit=self.s.delivery_limit,
            heartbeat_seconds=self.s.heartbeat_seconds,
            prefetch=self.s.prefetch,
            name=f"stoa-agent {self.agent} {self.pod}",
        )
        self.bus = bus
        self.active_recorded = False
        try:
            queue, dlq = await bus.declare_agent(self.key)
            assert self.db is not None
            await publish_outbox(self.db, bus)  # finish publishes of a replica that died after its commit
            await queue.consume(self._on_message)
            await dlq.consume(self._on_dead_letter)
            self.metrics.ready.labels(self.agent).set(1)
            log.info("Agent consuming agent=%s pod=%s queue=%s", self.agent, self.pod, queue.name)
            waiters = [
                asyncio.ensure_future(self.stopping.wait()),
                asyncio.ensure_future(bus.connection.closed()),
                asyncio.ensure_future(bus.channel.closed()),
            ]
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            for waiter in waiters:
                waiter.cancel()
            if self.stopping.is_set():
                await self._drain()
            elif not bus.connection.is_closed:
                raise ConnectionError("channel closed by the broker")
            else:
                raise ConnectionError("connection to the broker lost")
        finally:
            self.metrics.ready.labels(self.agent).set(0)
            self.metrics.active.labels(self.agent).set(0)
            self.bus = None
            with contextlib.suppress(Exception):
                await bus.close()

    async def _drain(self) -> None:
        """SIGTERM: never cancel the consumer while holding a message. Finish and ack the current turn
        (bounded by the grace period); then close the connection, which returns anything unacked."""
        if self.inflight:
            log.info("Agent finishing current turn before exit agent=%s pod=%s", self.agent, self.pod)
            await asyncio.wait(list(self.inflight), timeout=self.s.shutdown_grace_seconds)

    async def _relay_loop(self) -> None:
        while True:
            await asyncio.sleep(self.s.relay_interval_seconds)
            bus, db = self.bus, self.db
            if bus is None or db is None or bus.is_closed:
                continue
            try:
                await publish_outbox(db, bus, min_age_seconds=self.s.relay_interval_seconds)
            except Exception as exc:  # the relay must survive outages; the next tick retries
                log.warning("Outbox relay failed agent=%s pod=%s error=%r", self.agent, self.pod, exc)

    async def _fail(
        self, db: asyncpg.Pool, *, conv_id: str, conv_name: str, message_id: str, reason: str, outcome: str
    ) -> None:
        """Mark the conversation Failed with a readable reason, recording which message ended it."""
        await repo.fail_conversation(
            db, conv_id, reason, message_id=message_id, agent=self.key, pod=self.pod, outcome=outcome
        )
        log.error("Conversation failed agent=%s conversation=%s reason=%r", self.agent, conv_name, reason)

    # ---- test hooks ----------------------------------------------------------------------------------

    def _crash(self, point: str, conversation: str) -> None:
        if point not in self.crash_points:
            return
        if self.s.test_crash_conversation and self.s.test_crash_conversation not in conversation:
            return
        if random.random() < self.s.test_crash_probability:  # noqa: S311 (fault injection, not crypto)
            log.warning("Crashing on purpose point=%s agent=%s pod=%s", point, self.agent, self.pod)
            logging.shutdown()
            os.kill(os.getpid(), signal.SIGKILL)

    # ---- deliveries --------------------------------------------------------------------------------

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        if self.stopping.is_set():
            return  # not acked: returned to the queue when the connection closes
        task = asyncio.current_task()
        if task is not None:
            self.inflight.add(task)
        try:
            await self._handle(message)
        except Exception:  # a bug in the handler itself must not leave the message held forever
            log.exception(
                "Handler crashed agent=%s pod=%s message_id=%s", self.agent, self.pod, message.message_id
            )
            with contextlib.suppress(Exception):
                await message.nack(requeue=True)
        finally:
            if task is not None:
                self.inflight.discard(task)

    async def _note_active(self, redelivered: bool) -> None:
        if self.active_recorded or self.db is None:
            return
        previous = await repo.record_activity(self.db, self.key, self.pod)
        self.active_recorded = True
        self.metrics.active.labels(self.agent).set(1)
        if previous is not None:
            self.metrics.takeovers.labels(self.agent).inc()
            log.info(
                "Agent took over agent=%s pod=%s from=%s redelivered=%s",
                self.agent,
                self.pod,
                previous,
                redelivered,
            )

    async def _handle(self, message: AbstractIncomingMessage) -> None:
        started = time.monotonic()
        headers = dict(message.headers or {})
        if message.redelivered:
            self.metrics.redeliveries.labels(self.agent).inc()
        try:
            msg = parse_message(message.body)
        except MalformedMessageError as exc:
            log.error(
                "Rejecting malformed message agent=%s pod=%s message_id=%s reason=%r",
                self.agent,
                self.pod,
                message.message_id,
                str(exc),
            )
            self.metrics.dead_lettered.labels(self.agent, "malformed").inc()
            with contextlib.suppress(Exception):
                if self.db is not None:
                    await repo.record_error(
                        self.db, _message_key(message), self.key, self.pod, f"malformed: {exc}"
                    )
            await message.reject(requeue=False)
            return
        attempt = 0
        while True:
            attempt += 1
            try:
                await self._note_active(bool(message.redelivered))
                outcome = await self._process(msg)
                await message.ack()
                self.metrics.turns.labels(self.agent, outcome).inc()
                if outcome == "stored":
                    self.metrics.turn_seconds.labels(self.agent).observe(time.monotonic() - started)
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                bus = self.bus
                kind = failure_kind(exc, broker_closed=bus is None or bus.is_closed)
                decision = classify(kind, time.monotonic() - started, self.s.infra_retry_seconds)
                log.log(
                    logging.INFO if decision.action in (Action.ACK, Action.RETRY) else logging.WARNING,
                    "Turn failed agent=%s pod=%s conversation=%s seq=%d kind=%s action=%s error=%r "
                    "delivery_count=%s",
                    self.agent,
                    self.pod,
                    msg.conversation,
                    msg.seq,
                    kind.value,
                    decision.action.value,
                    exc,
                    _header_int(headers, "x-delivery-count"),
                )
                if decision.action is Action.RETRY:
                    await asyncio.sleep(retry_delay(attempt))
                    continue
                await self._apply(decision.action, message, msg, f"{kind.value}: {exc}")
                return

    async def _apply(
        self, action: Action, message: AbstractIncomingMessage, msg: TurnMessage, error: str
    ) -> None:
        if action in (Action.REQUEUE, Action.REJECT) and self.db is not None:
            with contextlib.suppress(Exception):
                await repo.record_error(self.db, msg.message_id, self.key, self.pod, error)
        try:
            if action is Action.ACK:
                await message.ack()
            elif action is Action.REQUEUE:
                await message.nack(requeue=True)
            elif action is Action.REJECT:
                self.metrics.dead_lettered.labels(self.agent, "rejected").inc()
                await message.reject(requeue=False)
            elif action is Action.EXIT:
                log.error("Exiting without ack agent=%s pod=%s reason=%r", self.agent, self.pod, error)
                self.exit_code = 1
                self.stopping.set()
                if self.bus is not None:
                    await self.bus.close()
        except Exception as exc:  # channel already gone: the broker redelivers
            log.warning(
                "Could not settle message agent=%s pod=%s action=%s error=%r",
                self.agent,
                self.pod,
                action.value,
                exc,
            )

    async def _admit(self, db: asyncpg.Pool, bus: Bus, msg: TurnMessage) -> repo.ConversationRow | str:
        """Dedupe and phase checks: the conversation to work on, or the outcome to ack with."""
        if msg.to != self.agent:
            raise MisroutedError(f"message for {msg.to} delivered to {self.agent}")
        conv = await repo.load_conversation(db, msg.conversation_id)
        if conv is None:
            raise UnknownConversationError(f"no conversation {msg.conversation_id} ({msg.conversation})")
        if conversation_namespace(conv.name) != self.namespace:
            raise MisroutedError(f"conversation {conv.name} is not in namespace {self.namespace!r}")
        if msg.seq < conv.next_seq or await repo.is_processed(db, msg.message_id):
            await publish_outbox(db, bus, conv.id)  # a crash after commit left it unpublished
            return "duplicate"
        if conv.phase in TERMINAL_PHASES:
            return "finished"
        if msg.seq > conv.next_seq:
            raise MisroutedError(f"seq {msg.seq} is ahead of the conversation (next is {conv.next_seq})")
        if conv.phase is Phase.SUSPENDED and await repo.park_message(db, conv.id, msg.message_id):
            log.info(
                "Parked turn of suspended conversation agent=%s conversation=%s seq=%d",
                self.agent,
                conv.name,
                msg.seq,
            )
            return "parked"
        if self.s.test_fail_conversation and self.s.test_fail_conversation in conv.name:
            raise InjectedFailureError(f"injected failure for conversation {conv.name} turn {msg.seq}")
        return conv

    async def _context(
        self, db: asyncpg.Pool, conv: repo.ConversationRow, spec: ConversationSpec, msg: TurnMessage
    ) -> tuple[TurnContext, list[Turn], str]:
        history = await repo.load_turns(db, conv.id)
        expected = speaker_for(spec, msg.seq, history)
        if expected != self.agent:
            raise MisroutedError(f"turn {msg.seq} belongs to {expected}, not {self.agent}")
        participant = spec.participant(self.agent)
        role = participant.role.value if participant else self.s.agent_role
        if self.agent == spec.moderator_name():
            role = "moderator"
        memory = await repo.load_memory(db, self.key, conv.id) if self.s.memory_enabled else []
        members = [p.agent_ref for p in spec.participants if p.agent_ref != spec.moderator_name()]
        selected = spec.turn_policy.type is TurnPolicyType.MODERATOR_SELECTED
        ctx = TurnContext(
            agent=self.agent,
            role=role,
            persona=self.s.persona,
            topic=spec.topic,
            seq=msg.seq,
            turn_limit=turn_limit(spec),
            history=history,
            memory=memory,
            history_turns=self.s.history_turns,
            next_speakers=members if selected else None,
        )
        return ctx, history, role

    async def _process(self, msg: TurnMessage) -> str:
        db, bus = self.db, self.bus
        assert db is not None
        assert bus is not None
        self._crash("on_receive", msg.conversation)
        admitted = await self._admit(db, bus, msg)
        if isinstance(admitted, str):
            return admitted
        conv = admitted
        spec = ConversationSpec.model_validate(conv.spec)
        ctx, history, role = await self._context(db, conv, spec, msg)
        trace = trace_id_of(msg.traceparent) or hashlib.sha256(conv.id.encode()).hexdigest()[:32]
        traceparent = child_traceparent(msg.traceparent, trace, os.urandom(8).hex())
        self._crash("before_model", conv.name)
        try:
            completion = await self._call_model(build_messages(ctx), conv.name, traceparent)
        except ModelError as exc:
            self.metrics.model_errors.labels(self.agent).inc()
            reason = f"Agent {self.agent} could not get turn {msg.seq} from its model: {exc}"
            await self._fail(
                db,
                conv_id=conv.id,
                conv_name=conv.name,
                message_id=msg.message_id,
                reason=reason,
                outcome="model-failed",
            )
            return "model-failed"
        self.metrics.tokens.labels(self.agent, "in").inc(completion.tokens_in)
        self.metrics.tokens.labels(self.agent, "out").inc(completion.tokens_out)
        decision = after_turn(spec, [*history, Turn(msg.seq, self.agent, completion.content)])
        next_message = None
        end = None
        if isinstance(decision, End):
            end = (decision.phase, decision.reason)
        else:
            nxt = make_message(
                conv.id,
                conv.name,
                decision.seq,
                sender=self.agent,
                to=decision.speaker,
                traceparent=traceparent,
            )
            receiver = participant_key(conv.name, decision.speaker)
            next_message = repo.NextMessage(nxt.message_id, nxt.seq, receiver, nxt.body())
        outcome = await repo.commit_turn(
            db,
            self._new_turn(conv.id, msg, role, completion, traceparent),
            next_message,
            end,
            memory_note(completion.content) if self.s.memory_enabled else None,
        )
        if outcome != "stored":
            await publish_outbox(db, bus, conv.id)
            return outcome
        self._crash("after_commit", conv.name)
        await publish_outbox(db, bus, conv.id)
        self._crash("after_publish", conv.name)
        if end is not None:
            log.info(
                "Conversation finished agent=%s conversation=%s turns=%d reason=%r",
                self.agent,
                conv.name,
                msg.seq,
                end[1],
            )
        return "stored"

    def _new_turn(
        self, conversation_id: str, msg: TurnMessage, role: str, completion: Completion, traceparent: str
    ) -> repo.NewTurn:
        cost = (
            completion.tokens_in * self.s.model_input_cost_per_1k
            + completion.tokens_out * self.s.model_output_cost_per_1k
        ) / 1000
        return repo.NewTurn(
            conversation_id=conversation_id,
            seq=msg.seq,
            speaker=self.agent,
            agent=self.key,
            role=role,
            content=completion.content,
            tokens_in=completion.tokens_in,
            tokens_out=completion.tokens_out,
            cost_usd=cost,
            model=completion.model,
            duration_ms=completion.duration_ms,
            pod=self.pod,
            message_id=msg.message_id,
            traceparent=traceparent,
        )

    async def _call_model(
        self, messages: list[dict[str, str]], conversation: str, traceparent: str
    ) -> Completion:
        call = self.model.complete(
            messages, agent=self.agent, conversation=conversation, traceparent=traceparent
        )
        if "during_model" not in self.crash_points:
            return await call
        task = asyncio.ensure_future(call)
        await asyncio.sleep(0.002)
        self._crash("during_model", conversation)
        return await task

    # ---- dead letters ------------------------------------------------------------------------------

    async def _on_dead_letter(self, message: AbstractIncomingMessage) -> None:
        """Record a dead-lettered message and fail its conversation with a readable reason."""
        db = self.db
        if self.stopping.is_set() or db is None:
            return
        headers = dict(message.headers or {})
        death_reason = str(headers.get("x-first-death-reason") or _x_death(headers, "reason") or "unknown")
        deliveries = _header_int(headers, "x-delivery-count")
        key = _message_key(message)
        msg: TurnMessage | None = None
        with contextlib.suppress(MalformedMessageError):
            msg = parse_message(message.body)
        try:
            error = await repo.last_error(db, msg.message_id if msg else key)
            if msg is None:
                reason = f"Malformed message dead-lettered ({death_reason}): {error or 'unreadable body'}"
            else:
                cause = error or "no error recorded: the agent process died while handling it"
                if death_reason == "delivery_limit":
                    limit = self.s.delivery_limit
                    what = (
                        f"failed on all {limit + 1} deliveries (delivery limit {limit}) and was dead-lettered"
                    )
                else:
                    what = f"was dead-lettered ({death_reason})"
                reason = f"Turn {msg.seq} for agent {msg.to} {what}. Last error: {cause}"
            fresh = await repo.record_dead_letter(
                db,
                message_id=msg.message_id if msg else key,
                conversation_id=msg.conversation_id if msg else None,
                agent=self.key,
                death_reason=death_reason,
                deliveries=deliveries,
                reason=reason,
                body=message.body,
                headers=headers,
            )
            if msg is not None:
                conv = await repo.load_conversation(db, msg.conversation_id)
                if conv is not None and conv.next_seq == msg.seq and conv.phase not in TERMINAL_PHASES:
                    await self._fail(
                        db,
                        conv_id=conv.id,
                        conv_name=conv.name,
                        message_id=msg.message_id,
                        reason=reason,
                        outcome="dead-lettered",
                    )
            if fresh:
                self.metrics.dead_lettered.labels(self.agent, death_reason).inc()
            await message.ack()
        except CONNECTION_ERRORS as exc:
            log.warning("Could not record dead letter agent=%s error=%r", self.agent, exc)
            await asyncio.sleep(1.0)
            with contextlib.suppress(Exception):
                await message.nack(requeue=True)


def _message_key(message: AbstractIncomingMessage) -> str:
    return message.message_id or "sha256:" + hashlib.sha256(message.body).hexdigest()[:32]


def _x_death(headers: dict[str, Any], field: str) -> Any:
    deaths = headers.get("x-death")
    if isinstance(deaths, list) and deaths and isinstance(deaths[0], dict):
        return deaths[0].get(field)
    return None


def configure_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("aio_pika").setLevel(logging.WARNING)
    logging.getLogger("aiormq").setLevel(logging.WARNING)


def run_agent(settings: AgentSettings) -> int:
    configure_logging(settings.log_level)
    return asyncio.run(AgentRuntime(settings).run())
