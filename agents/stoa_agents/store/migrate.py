"""Apply ``migrations/NNNN_name.sql`` in order, once, under an advisory lock (many replicas start at once)."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from importlib import resources

import asyncpg

from stoa_agents.identity import memory_schema

__all__ = ["MIGRATION_LOCK", "Migration", "available_migrations", "ensure_memory", "memory_schema", "migrate"]

log = logging.getLogger("stoa.agents.store")

MIGRATION_LOCK = 0x5704_0001  # pg_advisory_lock key shared by every Stoa runtime process
_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def available_migrations() -> list[Migration]:
    """The packaged migrations, sorted by version (pure apart from reading package data)."""
    found = []
    for entry in resources.files("stoa_agents.store").joinpath("migrations").iterdir():
        match = _FILE.match(entry.name)
        if match:
            found.append(Migration(int(match.group(1)), match.group(2), entry.read_text()))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise RuntimeError(f"duplicate migration versions: {versions}")
    return found


async def migrate(conn: asyncpg.Connection) -> list[int]:
    """Apply pending migrations; returns the versions applied now (empty when up to date)."""
    applied_now: list[int] = []
    await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK)
    try:
        await conn.execute("CREATE SCHEMA IF NOT EXISTS stoa")
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS stoa.schema_migrations ("
            " version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {r["version"] for r in await conn.fetch("SELECT version FROM stoa.schema_migrations")}
        for migration in available_migrations():
            if migration.version in done:
                continue
            async with conn.transaction():
                await conn.execute(migration.sql)
                await conn.execute(
                    "INSERT INTO stoa.schema_migrations (version, name) VALUES ($1, $2)",
                    migration.version,
                    migration.name,
                )
            log.info("Applied migration version=%d name=%s", migration.version, migration.name)
            applied_now.append(migration.version)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK)
    return applied_now


async def ensure_memory(conn: asyncpg.Connection, agent: str, retention_days: int) -> None:
    """Create the private memory schema of agent key ``agent`` and drop notes older than the retention."""
    schema = memory_schema(agent)
    await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK)
    try:
        await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
        await conn.execute(
            f"CREATE TABLE IF NOT EXISTS {schema}.memory ("
            " conversation_id uuid NOT NULL, seq integer NOT NULL, note text NOT NULL,"
            " created_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (conversation_id, seq))"
        )
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK)
    if retention_days > 0:
        await conn.execute(
            f"DELETE FROM {schema}.memory WHERE created_at < now() - make_interval(days => $1)",  # noqa: S608
            retention_days,
        )
