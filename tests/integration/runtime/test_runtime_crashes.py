"""kill -9 of the active replica at every point of a turn, and at random times: every conversation
completes with contiguous seqs, no turn stored twice, none missing, one next message per seq."""

from __future__ import annotations

import asyncio
import os
import random
import signal
from pathlib import Path

import pytest

from stoa_agents.control import agent_status, conversation_status
from stoa_agents.turns.policy import speaker_for
from stoa_devenv.postgres import PostgresServer
from stoa_devenv.rabbitmq import RabbitMQServer
from stoa_testing.fake_provider import Behaviour, RunningFake, start_fake_provider
from tests.integration.runtime.harness import Cluster, distinct_replies, unique_prefix

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
    postgres: PostgresServer, rabbitmq: RabbitMQServer, runtime_logs: Path
) -> None:
    # A little model latency spreads the kills over every stage of a turn.
    fake = await start_fake_provider(replies=distinct_replies(), default=Behaviour(latency=0.01))
    cluster = await Cluster.start(
        prefix=unique_prefix("x"),
        postgres_dsn=postgres.dsn,
        rabbitmq_url=rabbitmq.url,
        model_url=fake.base_url,
        log_dir=runtime_logs,
        env={"STOA_DELIVERY_LIMIT": "20"},
    )
    rng = random.Random()
    kills = 0
    try:
        names = await cluster.start_conversations(5, max_turns=30)
        finished = asyncio.create_task(cluster.wait_finished(names, within=180))
        while not finished.done() and kills < 15:
            await asyncio.sleep(rng.uniform(0.05, 0.5))
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
        await fake.close()


@pytest.mark.slow
async def test_frozen_active_replica_is_replaced_and_its_late_work_is_discarded(
    postgres: PostgresServer, rabbitmq: RabbitMQServer, runtime_logs: Path
) -> None:
    """SIGSTOP mid-turn: the broker notices after ~2-3 heartbeats (2 s here) and the standby redoes the
    turn; when the frozen process wakes up its commit loses on ``next_seq`` and its ack fails."""
    fake = await start_fake_provider(replies=distinct_replies(), default=Behaviour(latency=0.3))
    cluster = await Cluster.start(
        prefix=unique_prefix("f"),
        postgres_dsn=postgres.dsn,
        rabbitmq_url=rabbitmq.url,
        model_url=fake.base_url,
        log_dir=runtime_logs,
        agents=2,
    )
    try:
        name = (await cluster.start_conversations(1, max_turns=8))[0]
        for _ in range(200):
            status = await conversation_status(cluster.db, name)
            if status is not None and status.turns >= 2:
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.1)  # the next speaker is now inside its model call
        status = await conversation_status(cluster.db, name)
        assert status is not None
        speaker = speaker_for(cluster.spec(8), status.turns + 1, [])
        pod = (await agent_status(cluster.db, speaker)).active_pod
        frozen = cluster.fleet.by_pod(pod or "")
        assert frozen is not None
        os.kill(frozen.process.pid, signal.SIGSTOP)
        try:
            for _ in range(300):
                now = await conversation_status(cluster.db, name)
                if now is not None and now.turns > status.turns:
                    break
                await asyncio.sleep(0.1)
        finally:
            os.kill(frozen.process.pid, signal.SIGCONT)
        await cluster.wait_finished([name], within=90)
        assert await cluster.check_exactly_once(name, 8) == 8
        assert (await agent_status(cluster.db, speaker)).takeovers >= 1
    finally:
        await cluster.close()
        await fake.close()
