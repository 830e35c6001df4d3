"""Poison and malformed messages, model errors and timeouts: readable Failed reasons, others unaffected."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import aio_pika
import pytest

from stoa_agents.bus.topology import queue_name
from stoa_agents.control import conversation_status, start_conversation
from stoa_agents.turns.policy import Phase
from stoa_devenv.postgres import PostgresServer
from stoa_devenv.rabbitmq import RabbitMQServer
from stoa_testing.fake_provider import Behaviour, RunningFake, start_fake_provider
from tests.integration.runtime.harness import Cluster, unique_prefix


@pytest.mark.slow
async def test_poison_message_is_dead_lettered_and_fails_only_its_conversation(
    postgres: PostgresServer, rabbitmq: RabbitMQServer, fake_model: RunningFake, runtime_logs: Path
) -> None:
    cluster = await Cluster.start(
        prefix=unique_prefix("p"),
        postgres_dsn=postgres.dsn,
        rabbitmq_url=rabbitmq.url,
        model_url=fake_model.base_url,
        log_dir=runtime_logs,
        env={
            "STOA_TEST_FAIL_CONVERSATION": "poison-raise",  # raises on every delivery
            "STOA_TEST_CRASH_AT": "before_model",  # ... and this one kills every replica that takes it
            "STOA_TEST_CRASH_CONVERSATION": "poison-crash",
        },
    )
    try:
        healthy = await cluster.start_conversations(2, max_turns=6, label="ok")
        poison = f"{cluster.agents[0]}-poison-raise"
        crasher = f"{cluster.agents[0]}-poison-crash"
        await start_conversation(cluster.db, cluster.bus, poison, cluster.spec(6))
        await start_conversation(cluster.db, cluster.bus, crasher, cluster.spec(6))
        await cluster.wait_finished([*healthy, poison, crasher], within=120)
        for name in healthy:
            assert await cluster.check_exactly_once(name, 6) == 6
        status = await conversation_status(cluster.db, poison)
        assert status is not None
        assert status.phase is Phase.FAILED
        assert "failed on all 4 deliveries (delivery limit 3) and was dead-lettered" in status.reason
        assert "injected failure for conversation" in status.reason
        assert status.turns == 0
        dead = await cluster.db.fetchrow(
            "SELECT death_reason, agent FROM stoa.dead_letters WHERE conversation_id = $1",
            uuid.UUID(status.id),
        )
        assert dead is not None
        assert dead["death_reason"] == "delivery_limit"
        crashed = await conversation_status(cluster.db, crasher)
        assert crashed is not None
        assert crashed.phase is Phase.FAILED
        assert "the agent process died while handling it" in crashed.reason
        assert cluster.fleet.restarts >= 4  # every delivery of that message killed a replica

        # Malformed JSON straight into an agent queue: dead-lettered at once, agents keep working.
        body = b"{not json"
        message_id = f"garbage-{uuid.uuid4().hex[:6]}"
        await cluster.bus.channel.default_exchange.publish(
            aio_pika.Message(body, message_id=message_id, delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
            routing_key=queue_name(cluster.agents[1]),
        )
        for _ in range(100):
            row = await cluster.db.fetchrow(
                "SELECT * FROM stoa.dead_letters WHERE message_id = $1", message_id
            )
            if row is not None:
                break
            await asyncio.sleep(0.1)
        assert row is not None, cluster.log_tail()
        assert row["death_reason"] == "rejected"
        assert "body is not JSON" in row["reason"]
        after = await cluster.start_conversations(1, max_turns=4, label="after")
        await cluster.wait_finished(after, within=60)
        assert await cluster.check_exactly_once(after[0], 4) == 4
        assert all(r.process.poll() is None for r in cluster.fleet.members.values())
    finally:
        await cluster.close()


@pytest.mark.slow
async def test_model_errors_and_timeouts_fail_the_conversation_with_the_provider_error(
    postgres: PostgresServer, rabbitmq: RabbitMQServer, runtime_logs: Path
) -> None:
    overloaded = await start_fake_provider(
        default=Behaviour(status=503, retry_after="0", error_message="upstream overloaded, try later")
    )
    hanging = await start_fake_provider(default=Behaviour(hang=True))
    prefix = unique_prefix("e")
    cluster = await Cluster.start(
        prefix=prefix,
        postgres_dsn=postgres.dsn,
        rabbitmq_url=rabbitmq.url,
        replicas=1,
        model_url={
            f"{prefix}-m": overloaded.base_url,
            f"{prefix}-a": hanging.base_url,
            f"{prefix}-b": hanging.base_url,
        },
        log_dir=runtime_logs,
        env={"STOA_MODEL_RETRIES": "2", "STOA_MODEL_TIMEOUT_SECONDS": "0.5"},
    )
    try:
        names = await cluster.start_conversations(1, max_turns=4)
        await cluster.wait_finished(names, within=60)
        status = await conversation_status(cluster.db, names[0])
        assert status is not None
        assert status.phase is Phase.FAILED
        assert "after 3 attempts" in status.reason
        assert "HTTP 503" in status.reason
        assert "upstream overloaded" in status.reason
        assert overloaded.chat_requests == 3

        # Second conversation whose first speaker hangs: timeouts, bounded, then Failed.
        spec = cluster.spec(4).model_copy(
            update={"moderator": None, "participants": cluster.spec(4).participants[1:]}
        )
        await start_conversation(cluster.db, cluster.bus, f"{prefix}-hang", spec)
        await cluster.wait_finished([f"{prefix}-hang"], within=60)
        hung = await conversation_status(cluster.db, f"{prefix}-hang")
        assert hung is not None
        assert hung.phase is Phase.FAILED
        assert "timed out after 0.5s" in hung.reason
    finally:
        await cluster.close()
        await overloaded.close()
        await hanging.close()
