"""Opening the asyncpg pool and applying migrations, retrying while Postgres is not reachable yet."""

from __future__ import annotations

import asyncio
import logging

import asyncpg

from stoa_agents.store.migrate import migrate

log = logging.getLogger("stoa.agents.store")

CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.exceptions.OperatorInterventionError,
    TimeoutError,
)


async def open_pool(dsn: str, *, max_size: int = 4, wait_seconds: float = 60.0) -> asyncpg.Pool:
    """A pool whose schema is migrated. Broken connections are replaced by the pool on the next acquire."""
    deadline = asyncio.get_running_loop().time() + wait_seconds
    delay = 0.2
    while True:
        try:
            pool = await asyncpg.create_pool(
                dsn, min_size=1, max_size=max_size, command_timeout=30, timeout=10
            )
            async with pool.acquire() as conn:
                await migrate(conn)
            return pool
        except CONNECTION_ERRORS as exc:
            if asyncio.get_running_loop().time() > deadline:
                raise
            log.warning("Postgres not reachable yet error=%r retry_in=%.1fs", exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 3.0)
