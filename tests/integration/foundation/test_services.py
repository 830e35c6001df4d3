"""Smoke tests proving the test session really runs PostgreSQL and RabbitMQ."""

from __future__ import annotations

import asyncio
import json
import uuid

import aio_pika
import asyncpg

from stoa_devenv.postgres import PostgresServer
from stoa_devenv.rabbitmq import RabbitMQServer


async def test_postgres_jsonb_round_trip(postgres: PostgresServer) -> None:
    conn = await asyncpg.connect(postgres.dsn)
    try:
        version = await conn.fetchval("SHOW server_version")
        await conn.execute("CREATE TEMP TABLE docs (id int PRIMARY KEY, body jsonb NOT NULL)")
        doc = {"agent": "moderator", "turns": [1, 2, 3], "nested": {"ok": True}}
        await conn.execute("INSERT INTO docs VALUES (1, $1::jsonb)", json.dumps(doc))
        stored = await conn.fetchval("SELECT body FROM docs WHERE id = 1")
        assert json.loads(stored) == doc
        assert await conn.fetchval("SELECT body->'nested'->>'ok' FROM docs") == "true"
    finally:
        await conn.close()
    assert int(str(version).split(".")[0]) >= 13


async def test_rabbitmq_quorum_publish_confirm_consume_ack(rabbitmq: RabbitMQServer) -> None:
    connection = await aio_pika.connect_robust(rabbitmq.url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        name = f"smoke-{uuid.uuid4().hex[:8]}"
        queue = await channel.declare_queue(name, durable=True, arguments={"x-queue-type": "quorum"})
        body = uuid.uuid4().bytes
        confirmation = await channel.default_exchange.publish(
            aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT), routing_key=name
        )
        assert confirmation is not None  # a broker ack, not a nack (aio-pika raises on nack)
        message = await queue.get(timeout=5, fail=True)
        assert message is not None
        assert message.body == body
        await message.ack()
        declared = await channel.declare_queue(name, durable=True, passive=True)
        assert declared.declaration_result.message_count == 0
        await queue.delete(if_unused=False, if_empty=False)


async def test_postgres_survives_restart(postgres: PostgresServer) -> None:
    conn = await asyncpg.connect(postgres.dsn)
    await conn.execute("CREATE TABLE IF NOT EXISTS restart_probe (v text)")
    await conn.execute("INSERT INTO restart_probe VALUES ('kept')")
    await conn.close()
    await asyncio.to_thread(postgres.restart, "immediate")  # a crash: no checkpoint, WAL replay
    conn = await asyncpg.connect(postgres.dsn)
    try:
        assert await conn.fetchval("SELECT v FROM restart_probe LIMIT 1") == "kept"
    finally:
        await conn.execute("DROP TABLE restart_probe")
        await conn.close()
