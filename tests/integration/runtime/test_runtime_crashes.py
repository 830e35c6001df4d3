"""kill -9 of the active replica at every point of a turn, and at random times: every conversation
completes with contiguous seqs, no turn stored twice, none missing, one next message per seq."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest

from stoa_agents.control import agent_status
from stoa_devenv.postgres import PostgresServer
from stoa_devenv.rabbitmq import RabbitMQServer
from stoa_gateway.fake_provider import RunningFake
from tests.integration.runtime.harness import Cluster, unique_prefix

TURNS = 9


@pytest.mark.slow
@pytest.mark.parametrize(
    "point", ["on_receive", "before_model", "during_model", "after_commit", "after_publish"]
)
async def test_crash_at_each_point_of_a_turn(
    point: str,
    postgres: PostgresServer,
    rabbitmq: RabbitMQServer,
    fake_model: RunningFake,
    runtime_logs: Path,
) -> None:
    cluster = await Cluster.start(
        prefix=unique_prefix("k"),
        postgres_dsn=postgres.dsn,
        rabbitmq_url=rabbitmq.url,
        model_url=fake_model.base_url,
        log_dir=runtime_logs,
        # A high delivery limit: several crashes on the same message are expected here, not poison.
        env={"STOA_TEST_CRASH_AT": point, "STOA_TEST_CRASH_PROBABILITY": "0.25", "STOA_DELIVERY_LIMIT": "20"},
    )
    try:
        names = await cluster.start_conversations(3, max_turns=TURNS)
        await cluster.wait_finished(names, within=150)
        for name in names:
            assert await cluster.check_exactly_once(name, TURNS) == TURNS
        assert cluster.fleet.restarts >= 1, f"no replica crashed at {point}"
    finally:
        await cluster.close()


@pytest.mark.slow
async def test_random_external_kills_of_the_active_replica(
    postgres: PostgresServer, rabbitmq: RabbitMQServer, fake_model: RunningFake, runtime_logs: Path
) -> None:
    cluster = await Cluster.start(
        prefix=unique_prefix("x"),
        postgres_dsn=postgres.dsn,
        rabbitmq_url=rabbitmq.url,
        model_url=fake_model.base_url,
        log_dir=runtime_logs,
        env={"STOA_DELIVERY_LIMIT": "20"},
    )
    rng = random.Random()
    kills = 0
    try:
        names = await cluster.start_conversations(4, max_turns=30)
        finished = asyncio.create_task(cluster.wait_finished(names, within=180))
        while not finished.done() and kills < 8:
            await asyncio.sleep(rng.uniform(0.05, 0.6))
            agent = rng.choice(cluster.agents)
            pod = (await agent_status(cluster.db, agent)).active_pod
            if pod and cluster.fleet.kill(pod):
                kills += 1
        await finished
        for name in names:
            assert await cluster.check_exactly_once(name, 30) == 30
        assert kills >= 1
        takeovers = sum([(await agent_status(cluster.db, a)).takeovers for a in cluster.agents])
        assert takeovers >= 1
    finally:
        await cluster.close()
