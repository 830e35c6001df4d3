"""Reading the runtime store (PostgreSQL) of a namespace: conversation rows, turns, agent activity.

The API only reads. Which database a namespace uses is decided exactly as the operator decides it
(``stoa_operator.runtime_adapter.connection_from``); the connection Secret is read with the API's own
service account (RBAC: ``get`` on that one Secret name). Pools are opened lazily, one per DSN, without
running migrations (a namespace whose agents never ran has no tables yet: that reads as "no record").
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from stoa_agents.identity import agent_key
from stoa_agents.store import repo
from stoa_operator.runtime_adapter import connection_from, runtime_name
from stoa_web.events import Activity
from stoa_web.kube import Kube, KubeError
from stoa_web.models import Turn
from stoa_web.problems import ApiProblemError
from stoa_web.settings import ApiSettings

log = logging.getLogger("stoa.api.store")
DSN_TTL_SECONDS = 30.0
POOL_SIZE = 8  # connections per database, whatever the number of open streams
STORE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    TimeoutError,
)


@dataclass(frozen=True)
class ConversationRecord:
    id: str
    phase: str
    reason: str
    turns: int
    created_at: datetime
    finished_at: datetime | None


class StoreUnavailableError(ApiProblemError):
    def __init__(self, message: str) -> None:
        super().__init__(503, message, "ServiceUnavailable")


class Store:
    def __init__(self, kube: Kube, settings: ApiSettings) -> None:
        self.kube = kube
        self.settings = settings
        self._dsns: dict[str, tuple[float, str]] = {}
        self._pools: dict[str, asyncpg.Pool] = {}
        self._lock = asyncio.Lock()

    async def close(self) -> None:
        for pool in self._pools.values():
            await pool.close()
        self._pools.clear()

    async def _dsn(self, namespace: str) -> str:
        found = self._dsns.get(namespace)
        if found is not None and found[0] > time.monotonic():
            return found[1]
        s = self.settings
        secret = None
        if not s.postgres_dsn:
            path = f"/api/v1/namespaces/{namespace}/secrets/{s.connection_secret}"
            try:
                secret = await self.kube.get_or_none(path)
            except KubeError as exc:
                raise StoreUnavailableError(
                    f"cannot read Secret {namespace}/{s.connection_secret}: {exc.message}"
                ) from exc
        conn, problem = connection_from(s.postgres_dsn, None, s.connection_secret, secret)
        if conn is None:
            raise StoreUnavailableError(f"namespace {namespace} has no runtime store: {problem}")
        self._dsns[namespace] = (time.monotonic() + DSN_TTL_SECONDS, conn.postgres_dsn)
        return conn.postgres_dsn

    async def pool(self, namespace: str) -> asyncpg.Pool:
        dsn = await self._dsn(namespace)
        async with self._lock:
            pool = self._pools.get(dsn)
            if pool is None:
                try:
                    pool = await asyncpg.create_pool(
                        dsn,
                        min_size=0,
                        max_size=POOL_SIZE,
                        command_timeout=10,
                        timeout=5,
                        server_settings={"application_name": "stoa-api"},
                    )
                except (*STORE_ERRORS, asyncpg.PostgresError) as exc:
                    raise StoreUnavailableError(
                        f"PostgreSQL of namespace {namespace} unreachable: {exc!r}"
                    ) from exc
                self._pools[dsn] = pool
            return pool

    async def conversation(self, namespace: str, name: str, uid: str) -> ConversationRecord | None:
        """The runtime record of Conversation ``namespace/name`` if it belongs to this resource (``uid``)."""
        pool = await self.pool(namespace)
        try:
            row = await repo.find_conversation(pool, runtime_name(namespace, name))
        except asyncpg.UndefinedTableError:
            return None
        except (*STORE_ERRORS, asyncpg.PostgresError) as exc:
            raise StoreUnavailableError(f"reading conversation {namespace}/{name}: {exc!r}") from exc
        if row is None or row.id != str(uuid.UUID(uid)):
            return None
        return ConversationRecord(
            row.id, row.phase.value, row.reason, row.turns, row.created_at, row.finished_at
        )

    async def turns(self, namespace: str, conversation_id: str, after: int, limit: int) -> list[Turn]:
        pool = await self.pool(namespace)
        try:
            stored = await repo.load_transcript(pool, conversation_id, after, limit)
        except asyncpg.UndefinedTableError:
            return []
        except (*STORE_ERRORS, asyncpg.PostgresError) as exc:
            raise StoreUnavailableError(f"reading turns: {exc!r}") from exc
        return [
            Turn(
                seq=t.seq,
                speaker=t.speaker,
                role=t.role,
                content=t.content,
                tokens_in=t.tokens_in,
                tokens_out=t.tokens_out,
                cost_usd=round(t.cost_usd, 8),
                model=t.model,
                duration_ms=t.duration_ms,
                pod=t.pod,
                created_at=t.created_at,
            )
            for t in stored
        ]

    async def activity(self, namespace: str, agents: list[str]) -> dict[str, Activity]:
        """The active-consumer record of each agent (by Agent name) that has one."""
        if not agents:
            return {}
        pool = await self.pool(namespace)
        keys = {agent_key(namespace, a): a for a in agents}
        try:
            rows = await pool.fetch(
                "SELECT agent, pod, previous_pod, takeovers, active_since FROM stoa.agent_activity"
                " WHERE agent = ANY($1::text[])",
                list(keys),
            )
        except asyncpg.UndefinedTableError:
            return {}
        except (*STORE_ERRORS, asyncpg.PostgresError) as exc:
            raise StoreUnavailableError(f"reading agent activity: {exc!r}") from exc
        return {
            keys[r["agent"]]: Activity(r["pod"], r["previous_pod"], int(r["takeovers"]), r["active_since"])
            for r in rows
        }
