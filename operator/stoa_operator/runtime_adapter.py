"""The operator's door to the agent runtime (``stoa_agents.control``): a sync facade over its async API.

Reconciles run in kopf's worker threads; this adapter owns one private event loop thread where the
asyncpg pools and RabbitMQ connections live (one per distinct connection, reused across reconciles).
Connection problems surface as ``RuntimeUnavailableError`` so status can say so instead of crashing.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import logging
import threading
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

from stoa_agents import control
from stoa_agents.bus.broker import Bus
from stoa_agents.bus.topology import queue_name
from stoa_agents.identity import agent_key
from stoa_agents.probes import run_probe
from stoa_agents.store.db import CONNECTION_ERRORS, open_pool
from stoa_agents.store.turn_records import turn_counts
from stoa_api.conversation import ConversationSpec
from stoa_api.status import AgentStatus, ConversationStatus

log = logging.getLogger(__name__)
T = TypeVar("T")
FAILURE_TTL_SECONDS = 10.0  # after a failed connect, answer "unreachable" at once for this long


class RuntimeUnavailableError(Exception):
    """Postgres or RabbitMQ could not be reached (or refused us); the message says which and why."""


@dataclass(frozen=True)
class Connection:
    postgres_dsn: str
    rabbitmq_url: str | None = None


def connection_from(
    postgres_dsn: str | None, rabbitmq_url: str | None, secret_name: str, secret: dict[str, Any] | None
) -> tuple[Connection | None, str | None]:
    """Which runtime store a namespace uses (the operator and ``stoa api`` both ask this): the configured
    DSN when set, else the namespace's connection Secret. Returns (connection, what is missing)."""
    if postgres_dsn:
        return Connection(postgres_dsn, rabbitmq_url), None
    if secret is None:
        return None, f"Secret {secret_name} not found"
    data = secret.get("data") or {}
    if "postgresDsn" not in data:
        return None, f"Secret {secret_name} has no key postgresDsn"
    url = base64.b64decode(data["rabbitmqUrl"]).decode() if "rabbitmqUrl" in data else None
    return Connection(base64.b64decode(data["postgresDsn"]).decode(), url), None


def runtime_name(namespace: str, name: str) -> str:
    """Conversations of all namespaces share the runtime store: the key is ``<namespace>/<name>``."""
    return f"{namespace}/{name}"


def agent_queue(namespace: str, agent: str) -> str:
    """The queue of Agent ``namespace/agent``: agent identity is namespace-scoped in the runtime."""
    return queue_name(agent_key(namespace, agent))


RESOURCE_DELETED = "Conversation resource deleted"


def transcript_hint(namespace: str, name: str, agent: str) -> str:
    """``status.transcript``: a command that prints the transcript from anywhere kubectl works, through a
    pod of one of its agents (the Stoa image, with the namespace's DSN in its env)."""
    inner = f'stoa transcript {runtime_name(namespace, name)} --postgres-url "$STOA_POSTGRES_DSN"'
    return f"kubectl exec -n {namespace} deploy/agent-{agent} -- sh -c '{inner}'"


class Runtime:
    """Idempotent conversation control and status reads, called synchronously from reconciles."""

    def __init__(self, timeout_seconds: float = 20.0) -> None:
        self.timeout = timeout_seconds
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="stoa-runtime", daemon=True)
        self._thread.start()
        self._pools: dict[str, Any] = {}
        self._buses: dict[str, Any] = {}
        self._lock: asyncio.Lock | None = None
        self._failures: dict[str, tuple[float, str]] = {}

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result(self.timeout)
        except (concurrent.futures.TimeoutError, TimeoutError) as exc:
            future.cancel()
            raise RuntimeUnavailableError(f"runtime call timed out after {self.timeout:.0f}s") from exc

    async def _pool(self, dsn: str) -> Any:
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            pool = self._pools.get(dsn)
            if pool is not None:
                return pool
            failed = self._failures.get(dsn)
            now = asyncio.get_running_loop().time()
            if failed is not None and now - failed[0] < FAILURE_TTL_SECONDS:
                raise RuntimeUnavailableError(failed[1])  # fail fast: never stall every reconcile on it
            try:
                pool = await open_pool(dsn, max_size=4, wait_seconds=0)
            except Exception as exc:
                message = f"PostgreSQL unreachable: {exc}"
                self._failures[dsn] = (now, message)
                raise RuntimeUnavailableError(message) from exc
            self._failures.pop(dsn, None)
            self._pools[dsn] = pool
            return pool

    async def _bus(self, url: str | None) -> Any:
        if url is None:
            raise RuntimeUnavailableError("RabbitMQ URL not configured")
        bus = self._buses.get(url)
        if bus is None or bus.is_closed:
            try:
                bus = await Bus.connect(url, name="stoa-operator")
            except Exception as exc:
                raise RuntimeUnavailableError(f"RabbitMQ unreachable: {exc}") from exc
            self._buses[url] = bus
        return bus

    async def _guard(self, coro: Coroutine[Any, Any, T], what: str) -> T:
        try:
            return await coro
        except RuntimeUnavailableError:
            raise
        except CONNECTION_ERRORS as exc:
            raise RuntimeUnavailableError(f"{what}: {exc!r}") from exc

    # -- conversations -------------------------------------------------------------------------------

    def ensure_conversation(
        self, conn: Connection, namespace: str, name: str, spec: ConversationSpec, uid: str
    ) -> ConversationStatus:
        """Start once (any number of calls start it once) and follow ``spec.suspend``; the runtime's part
        of the resource's status."""

        async def go() -> ConversationStatus:
            pool = await self._pool(conn.postgres_dsn)
            bus = await self._bus(conn.rabbitmq_url)
            return await control.reconcile_conversation(
                pool, bus, runtime_name(namespace, name), spec, uid=uid
            )

        return self._run(self._guard(go(), "start conversation"))

    def conversation_status(self, conn: Connection, namespace: str, name: str) -> ConversationStatus | None:
        async def go() -> ConversationStatus | None:
            return await control.conversation_status(
                await self._pool(conn.postgres_dsn), runtime_name(namespace, name)
            )

        return self._run(self._guard(go(), "read conversation"))

    def stop_conversation(self, conn: Connection, namespace: str, name: str, uid: str, purge: bool) -> str:
        """Stop (and purge when asked) the conversation this resource started; returns what was done."""

        async def go() -> str:
            pool = await self._pool(conn.postgres_dsn)
            return await control.release(
                pool, runtime_name(namespace, name), uid, purge_transcript=purge, reason=RESOURCE_DELETED
            )

        return self._run(self._guard(go(), "stop conversation"))

    # -- agents --------------------------------------------------------------------------------------

    def agent_status(self, conn: Connection, namespace: str, agent: str) -> AgentStatus:
        """The runtime's part of the Agent's status (active pod, takeovers, totals)."""

        async def go() -> AgentStatus:
            return await control.agent_status(await self._pool(conn.postgres_dsn), agent, namespace)

        return self._run(self._guard(go(), "read agent status"))

    # -- observability -------------------------------------------------------------------------------

    def agent_turn_counts(
        self, conn: Connection, namespace: str, agent: str, windows: dict[str, int], latency_ms: int | None
    ) -> dict[str, Any]:
        """Turn records of Agent ``namespace/agent`` per window (``turn_records.WindowCounts``)."""

        async def go() -> dict[str, Any]:
            pool = await self._pool(conn.postgres_dsn)
            return dict(await turn_counts(pool, agent_key(namespace, agent), windows, latency_ms))

        return self._run(self._guard(go(), "read turn records"))

    def run_probe(self, conn: Connection, namespace: str, agent: str, probe: Any, now: Any) -> Any:
        """One probe scheduling step for the Agent (``stoa_agents.probes.run_probe``): its report."""

        async def go() -> Any:
            pool = await self._pool(conn.postgres_dsn)
            bus = await self._bus(conn.rabbitmq_url)
            return await run_probe(pool, bus, namespace, agent, probe=probe, now=now)

        return self._run(self._guard(go(), "run probe"))

    def close(self) -> None:
        async def go() -> None:
            for bus in self._buses.values():
                await bus.close()
            for pool in self._pools.values():
                await pool.close()

        try:
            self._run(go())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
