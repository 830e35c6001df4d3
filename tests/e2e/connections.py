"""A private database and vhost on the session's PostgreSQL and RabbitMQ, for e2e tests that run Stoa's
components against the host's servers (the web console tests)."""

from __future__ import annotations

import asyncio
import subprocess
import uuid
from dataclasses import dataclass

import asyncpg

from stoa_devenv.postgres import PostgresServer
from stoa_devenv.rabbitmq import RABBIT_BIN, RabbitMQServer


@dataclass(frozen=True)
class Connections:
    """The connection Secret's values: a database and a vhost of the session's servers, for one test."""

    postgres_dsn: str
    rabbitmq_url: str


def private_connections(postgres: PostgresServer, rabbitmq: RabbitMQServer) -> Connections:
    name = f"stoa_e2e_{uuid.uuid4().hex[:8]}"

    async def create_database() -> None:
        conn = await asyncpg.connect(postgres.dsn)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()

    asyncio.run(create_database())
    for args in (("add_vhost", name), ("set_permissions", "-p", name, "guest", ".*", ".*", ".*")):
        subprocess.run(
            [str(RABBIT_BIN / "rabbitmqctl"), "-q", *args],
            env=rabbitmq.env(),
            capture_output=True,
            check=True,
            timeout=60,
        )
    dsn = postgres.dsn.rsplit("/", 1)[0] + f"/{name}"
    return Connections(dsn, f"{rabbitmq.url.rstrip('/')}/{name}")
