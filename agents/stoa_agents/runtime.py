"""The ``stoa agent`` process: one replica of one agent (active consumer or hot standby).

Per delivery (``bus.consumer``): dedupe -> load history -> call the model -> one transaction (turn +
processed id + outbox) -> publish the outbox with confirms -> ack. Any crash in between ends, after
redelivery, in exactly one stored turn and one next message per seq (docs/runtime.md, "Exactly once").
The decisions are pure (``turns.plan``); this module gathers their inputs and applies their results.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import signal

import asyncpg

from stoa_agents.bus.broker import Bus
from stoa_agents.bus.consumer import Consumer
from stoa_agents.bus.deadletters import DeadLetters
from stoa_agents.faults import NO_FAULTS, Faults
from stoa_agents.health import start_health_server
from stoa_agents.identity import agent_key
from stoa_agents.metrics import AgentMetrics
from stoa_agents.model_client import Completion, ModelClient, ModelConfig, ModelError
from stoa_agents.outbox import PublishedMarks, publish_outbox
from stoa_agents.protocol import TurnMessage
from stoa_agents.settings import AgentSettings
from stoa_agents.store import repo
from stoa_agents.store.db import open_pool
from stoa_agents.store.migrate import ensure_memory
from stoa_agents.tracing import child_traceparent, trace_id_of
from stoa_agents.turn_trace import commit_span, current_traceparent, publish_span, turn_ms
from stoa_agents.turns.cost import turn_cost
from stoa_agents.turns.plan import (
    Admission,
    ConversationState,
    Speaker,
    admit,
    history_window,
    next_step,
    turn_context,
)
from stoa_agents.turns.prompts import MEMORY_NOTES, build_messages, memory_note, stored_content
from stoa_api.conversation import ConversationSpec
from stoa_telemetry import genai
from stoa_telemetry.otel import setup_tracing, shutdown_tracing

log = logging.getLogger("stoa.agents.runtime")
MARK_INTERVAL_SECONDS = 0.1  # how often published outbox rows are marked (in one statement)
SPEC_CACHE_SIZE = 10_000
WINDOW_SPEAKERS_UNKNOWN = 100  # the first turn of a conversation here, before its spec is cached


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


class AgentRuntime:
    """``faults``: hooks a test passes in to crash or poison this replica at fixed points."""

    def __init__(self, settings: AgentSettings, faults: Faults = NO_FAULTS) -> None:
        self.s = settings
        self.faults = faults
        self.agent = settings.agent_name  # bare name: protocol, transcript, logs, metrics
        self.namespace = settings.namespace
        self.key = agent_key(settings.namespace, settings.agent_name)  # queues, activity, totals, memory
        self.pod = settings.pod_name
        self.speaker = Speaker(self.agent, settings.agent_role, settings.persona, settings.history_turns)
        self.metrics = AgentMetrics()
        self.metrics.initialize(self.agent)
        self.model = ModelClient(model_config(settings), genai=self.metrics.genai)
        self.stopping = asyncio.Event()
        self.db: asyncpg.Pool | None = None
        self.bus: Bus | None = None
        self.active_recorded = False
        self.exit_code = 0
        self.published = PublishedMarks()
        self._specs: dict[str, ConversationSpec] = {}
        self.consumer = Consumer(self, self._process, self._note_active, settings.infra_retry_seconds)
        self.dead_letters = DeadLetters(self, settings.delivery_limit, self._fail)

    # ---- process lifecycle -------------------------------------------------------------------------

    def ready(self) -> tuple[bool, str]:
        broker = self.bus is not None and not self.bus.is_closed
        database = self.db is not None and not self.db.is_closing()
        return (
            broker and database,
            f"broker={'up' if broker else 'down'} database={'up' if database else 'down'}",
        )

    def give_up(self) -> None:
        self.exit_code = 1
        self.stopping.set()

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
            # One connection per turn in flight (prefetch), plus the relay's and the marks' flushes.
            self.db = await open_pool(
                self.s.postgres_dsn, max_size=self.s.prefetch + 2, wait_seconds=self.s.infra_retry_seconds
            )
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
            with contextlib.suppress(Exception):
                await self.published.flush(self.db)
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
            await queue.consume(self.consumer.on_message)
            await dlq.consume(self.dead_letters.on_message)
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
                await self.consumer.drain(self.s.shutdown_grace_seconds)
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

    async def _relay_loop(self) -> None:
        """Mark what this replica published (often), republish what nobody did (every relay interval)."""
        relayed = asyncio.get_running_loop().time()
        while True:
            await asyncio.sleep(MARK_INTERVAL_SECONDS)
            bus, db = self.bus, self.db
            if db is None:
                continue
            try:
                await self.published.flush(db)
                now = asyncio.get_running_loop().time()
                if bus is not None and not bus.is_closed and now - relayed >= self.s.relay_interval_seconds:
                    relayed = now
                    await publish_outbox(db, bus, min_age_seconds=self.s.relay_interval_seconds)
            except Exception as exc:  # the relay must survive outages; the next tick retries
                log.warning("Outbox relay failed agent=%s pod=%s error=%r", self.agent, self.pod, exc)

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

    async def _fail(self, conv_id: str, conv_name: str, message_id: str, reason: str, outcome: str) -> None:
        """Mark the conversation Failed with a readable reason, recording which message ended it."""
        assert self.db is not None
        await repo.fail_conversation(
            self.db, conv_id, reason, message_id=message_id, agent=self.key, pod=self.pod, outcome=outcome
        )
        log.error("Conversation failed agent=%s conversation=%s reason=%r", self.agent, conv_name, reason)

    # ---- one turn ----------------------------------------------------------------------------------

    async def _process(self, msg: TurnMessage) -> str:
        db, bus = self.db, self.bus
        assert db is not None
        assert bus is not None
        self.faults.at("on_receive", msg.conversation)
        if msg.to != self.agent:  # before any read: another agent's message
            admit(None, msg, agent=self.agent, namespace=self.namespace, processed=False)
        # One connection for the turn's read and its commit (the pool has one per turn in flight).
        async with db.acquire() as conn:
            return await self._turn(db, conn, bus, msg)

    def _window(self, msg: TurnMessage) -> int:
        """How many latest turns to read (``history_window``); the spec's speakers once it is cached."""
        spec = self._specs.get(msg.conversation_id)
        speakers = len(spec.participants) if spec is not None else WINDOW_SPEAKERS_UNKNOWN
        return history_window(self.s.history_turns, speakers)

    def _spec(self, conv: repo.ConversationRow) -> ConversationSpec:
        """The stored spec (written once, when the conversation starts), validated once per process."""
        spec = self._specs.get(conv.id)
        if spec is None:
            if len(self._specs) > SPEC_CACHE_SIZE:
                self._specs.clear()
            spec = self._specs[conv.id] = ConversationSpec.from_stored(conv.spec)
        return spec

    async def _turn(self, db: asyncpg.Pool, conn: asyncpg.Connection, bus: Bus, msg: TurnMessage) -> str:
        memory_of = self.key if self.s.memory_enabled else None
        inputs = await repo.load_turn_inputs(
            conn,
            msg.conversation_id,
            msg.message_id,
            memory_of,
            recent=self._window(msg),
            notes=MEMORY_NOTES,
        )
        conv = inputs.conversation if inputs else None
        state = None if conv is None else ConversationState(conv.id, conv.name, conv.phase, conv.next_seq)
        processed = inputs is not None and inputs.processed
        admission = admit(state, msg, agent=self.agent, namespace=self.namespace, processed=processed)
        if admission is Admission.DUPLICATE:
            await publish_outbox(db, bus, msg.conversation_id)  # a crash after commit left it unpublished
            return "duplicate"
        if admission is Admission.FINISHED:
            return "finished"
        assert inputs is not None
        assert conv is not None
        assert state is not None
        if admission is Admission.PARK and await repo.park_message(conn, conv.id, msg.message_id):
            log.info(
                "Parked turn of suspended conversation agent=%s conversation=%s seq=%d",
                self.agent,
                conv.name,
                msg.seq,
            )
            return "parked"
        self.faults.admit(conv.name, msg.seq)
        spec = self._spec(conv)
        history = inputs.history
        ctx = turn_context(spec, msg.seq, history, inputs.memory, self.speaker)
        # The turn span's context: parent of the model calls, stored with the turn, carried by the next
        # message (whose turn links to it). Outside a delivery (tests calling _process): a fresh one.
        traceparent = current_traceparent() or child_traceparent(
            msg.traceparent,
            trace_id_of(msg.traceparent) or hashlib.sha256(conv.id.encode()).hexdigest()[:32],
            os.urandom(8).hex(),
        )
        self.faults.at("before_model", conv.name)
        try:
            completion = await self.faults.model_call(
                self.model.complete(
                    build_messages(ctx),
                    agent=self.agent,
                    conversation=conv.name,
                    traceparent=traceparent,
                    priority=msg.priority or spec.priority or self.s.agent_priority,
                ),
                conv.name,
            )
        except ModelError as exc:
            self.metrics.model_errors.labels(self.agent).inc()
            reason = f"Agent {self.agent} could not get turn {msg.seq} from its model: {exc}"
            await self._fail(conv.id, conv.name, msg.message_id, reason, "model-failed")
            return "model-failed"
        self.metrics.tokens.labels(self.agent, "in").inc(completion.tokens_in)
        self.metrics.tokens.labels(self.agent, "out").inc(completion.tokens_out)
        step = next_step(state, spec, history, msg, completion.content, traceparent=traceparent)
        content = stored_content(ctx, completion.content, step.end)  # the quote answered; summary, verdict
        next_message = None
        if step.message is not None and step.routing_key is not None:
            nxt = step.message
            next_message = repo.NextMessage(nxt.message_id, nxt.seq, step.routing_key, nxt.body())
        with commit_span() as commit:
            outcome = await repo.commit_turn(
                conn,
                self._new_turn(conv.id, msg, ctx.role, completion, content, traceparent),
                next_message,
                step.end,
                memory_note(completion.content) if self.s.memory_enabled else None,
            )
            commit.set_attribute(genai.STOA_TURN_OUTCOME, outcome)
        if outcome != "stored":
            await publish_outbox(db, bus, conv.id)
            return outcome
        self.faults.at("after_commit", conv.name)
        if next_message is not None:  # committed in the outbox: publish it now, with a confirm
            with publish_span(next_message.routing_key):
                await bus.publish(
                    next_message.routing_key, next_message.body, message_id=next_message.message_id
                )
            self.published.add(next_message.message_id)
        self.faults.at("after_publish", conv.name)
        if step.end is not None:
            log.info(
                "Conversation finished agent=%s conversation=%s turns=%d reason=%r",
                self.agent,
                conv.name,
                msg.seq,
                step.end[1],
            )
        return "stored"

    def _new_turn(  # noqa: PLR0917 - one private call site, positional like the others here
        self,
        conversation_id: str,
        msg: TurnMessage,
        role: str,
        completion: Completion,
        content: str,
        traceparent: str,
    ) -> repo.NewTurn:
        cost = turn_cost(
            completion.cost_usd,
            completion.tokens_in,
            completion.tokens_out,
            self.s.model_input_cost_per_1k,
            self.s.model_output_cost_per_1k,
        )
        return repo.NewTurn(
            conversation_id=conversation_id,
            seq=msg.seq,
            speaker=self.agent,
            agent=self.key,
            role=role,
            content=content,
            tokens_in=completion.tokens_in,
            tokens_out=completion.tokens_out,
            cost_usd=cost.usd,
            cost_source=cost.source,
            model=completion.model,
            target=completion.target,
            duration_ms=completion.duration_ms,
            pod=self.pod,
            message_id=msg.message_id,
            traceparent=traceparent,
            turn_ms=turn_ms(),
        )


def configure_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("aio_pika").setLevel(logging.WARNING)
    logging.getLogger("aiormq").setLevel(logging.WARNING)


def run_agent(settings: AgentSettings, faults: Faults = NO_FAULTS) -> int:
    configure_logging(settings.log_level)
    setup_tracing(
        "stoa-agent",
        extra_resource={
            "k8s.pod.name": settings.pod_name,
            "k8s.namespace.name": settings.namespace,
            genai.AGENT_NAME: settings.agent_name,
        },
    )
    try:
        return asyncio.run(AgentRuntime(settings, faults).run())
    finally:
        shutdown_tracing()  # export what is buffered (a SIGKILL loses it, as it loses the turn)
