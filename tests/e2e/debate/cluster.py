"""Helpers of the debate e2e: kubectl/helm, a private database and vhost, waiting, failure dumps."""

from __future__ import annotations

import asyncio
import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import asyncpg

from stoa_devenv.cluster import ControlPlane
from stoa_devenv.postgres import PostgresServer
from stoa_devenv.rabbitmq import RABBIT_BIN, RabbitMQServer
from stoa_devenv.tools import helm_binary, kubectl_binary

REPO = Path(__file__).resolve().parents[3]
T = TypeVar("T")


def run_tool(
    tool: Path, plane: ControlPlane, *args: str, stdin: str | None = None, timeout: float = 120
) -> str:
    proc = subprocess.run(
        [str(tool), "--kubeconfig", str(plane.kubeconfig), *args],
        input=stdin,
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
    )
    assert proc.returncode == 0, f"{tool.name} {' '.join(args)}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def kubectl(plane: ControlPlane, *args: str, stdin: str | None = None) -> str:
    return run_tool(kubectl_binary(), plane, *args, stdin=stdin)


def helm(plane: ControlPlane, *args: str) -> str:
    return run_tool(helm_binary(), plane, *args, timeout=300)


def wait_for(check: Callable[[], T | None], timeout: float, what: str) -> T:
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


@dataclass(frozen=True)
class Connections:
    """The connection Secret's values: a database and a vhost of the session's servers, for this test only
    (queue names are per agent, not per namespace: docs/operator.md)."""

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


async def _fetch(dsn: str, query: str, *args: Any) -> list[dict[str, Any]]:
    conn = await asyncpg.connect(dsn)
    try:
        return [dict(r) for r in await conn.fetch(query, *args)]
    finally:
        await conn.close()


def fetch(dsn: str, query: str, *args: Any) -> list[dict[str, Any]]:
    """Rows of one query against the runtime's store (a fresh connection each time)."""
    return asyncio.run(_fetch(dsn, query, *args))
