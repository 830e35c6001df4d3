"""Broker and database restarts in the middle of conversations: they resume, nothing lost or doubled."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from stoa_agents.control import conversation_status
from stoa_devenv.postgres import PostgresServer
from stoa_devenv.rabbitmq import RabbitMQServer
from stoa_testing.fake_provider import Behaviour, start_fake_provider
from tests.integration.runtime.harness import Cluster, distinct_replies, unique_prefix

TURNS = 16


async def _some_progress(cluster: Cluster, names: list[str], turns: int = 3) -> None:
    for _ in range(300):
        statuses = [await conversation_status(cluster.db, n) for n in names]
        if all(s is not None and s.turns >= turns for s in statuses):
            return
        await asyncio.sleep(0.1)
    raise AssertionError("no progress before the outage")


async def _restart_broker(cluster: Cluster, rabbitmq: RabbitMQServer, postgres: PostgresServer) -> None:
    await cluster.bus.close()  # the test's own publisher; the agents must reconnect by themselves
    await asyncio.to_thread(rabbitmq.restart)
    cluster.bus = await type(cluster.bus).connect(rabbitmq.url, name="stoa-test")


async def _restart_postgres(cluster: Cluster, rabbitmq: RabbitMQServer, postgres: PostgresServer) -> None:
    await asyncio.to_thread(postgres.restart, "immediate")  # a crash: no checkpoint


@pytest.mark.slow
@pytest.mark.parametrize(
    ("prefix", "outage"), [("mq", _restart_broker), ("pg", _restart_postgres)], ids=["broker", "postgres"]
)
async def test_restart_mid_conversation(
    prefix: str,
    outage: Callable[[Cluster, RabbitMQServer, PostgresServer], Awaitable[None]],
    postgres: PostgresServer,
    rabbitmq: RabbitMQServer,
    runtime_logs: Path,
) -> None:
    fake = await start_fake_provider(replies=distinct_replies(), default=Behaviour(latency=0.1))
    cluster = await Cluster.start(
        prefix=unique_prefix(prefix),
        postgres_dsn=postgres.dsn,
        rabbitmq_url=rabbitmq.url,
        model_url=fake.base_url,
        log_dir=runtime_logs,
    )
    try:
        names = await cluster.start_conversations(3, max_turns=TURNS)
        await _some_progress(cluster, names)
        await outage(cluster, rabbitmq, postgres)
        await cluster.wait_finished(names, within=150)
        for name in names:
            assert await cluster.check_exactly_once(name, TURNS) == TURNS
    finally:
        await cluster.close()
        await fake.close()
