"""A connection + confirming channel: declare agent queues, publish persistent messages and await confirms."""

from __future__ import annotations

import logging
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractQueue

from stoa_agents.bus.topology import (
    DEAD_LETTER_EXCHANGE,
    dead_letter_queue_arguments,
    dead_letter_queue_name,
    queue_arguments,
    queue_name,
    with_heartbeat,
)
from stoa_agents.protocol import CONTENT_TYPE

log = logging.getLogger("stoa.agents.bus")


class Bus:
    """Not robust on purpose: when the connection drops, the owner reconnects and re-consumes explicitly."""

    def __init__(self, connection: Any, channel: AbstractChannel, delivery_limit: int) -> None:
        self.connection = connection
        self.channel = channel
        self.delivery_limit = delivery_limit
        self._declared: set[str] = set()

    @classmethod
    async def connect(
        cls,
        url: str,
        *,
        delivery_limit: int = 3,
        heartbeat_seconds: int = 5,
        prefetch: int = 1,
        name: str = "stoa",
    ) -> Bus:
        connection = await aio_pika.connect(
            with_heartbeat(url, heartbeat_seconds), timeout=10, client_properties={"connection_name": name}
        )
        try:
            channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
            await channel.set_qos(prefetch_count=prefetch)
        except BaseException:
            await connection.close()
            raise
        return cls(connection, channel, delivery_limit)

    @property
    def is_closed(self) -> bool:
        return bool(self.connection.is_closed or self.channel.is_closed)

    async def close(self) -> None:
        if not self.connection.is_closed:
            await self.connection.close()

    async def declare_agent(self, agent: str) -> tuple[AbstractQueue, AbstractQueue]:
        """Idempotent: dead-letter exchange + DLQ, then the agent's single-active-consumer quorum queue.

        ``agent`` is the agent key (``identity.agent_key``: ``<namespace>/<name>`` or a bare name)."""
        dlx = await self.channel.declare_exchange(
            DEAD_LETTER_EXCHANGE, aio_pika.ExchangeType.DIRECT, durable=True
        )
        dlq = await self.channel.declare_queue(
            dead_letter_queue_name(agent), durable=True, arguments=dead_letter_queue_arguments()
        )
        await dlq.bind(dlx, routing_key=agent)
        queue = await self.channel.declare_queue(
            queue_name(agent), durable=True, arguments=queue_arguments(agent, self.delivery_limit)
        )
        self._declared.add(agent)
        return queue, dlq

    async def publish(
        self, agent: str, body: bytes, *, message_id: str, headers: dict[str, Any] | None = None
    ) -> None:
        """Persistent, mandatory, and returns only after the broker confirmed it (raises otherwise).

        ``agent`` is the agent key of the receiving agent (the outbox row's ``routing_key``)."""
        if agent not in self._declared:
            await self.declare_agent(agent)
        message = aio_pika.Message(
            body,
            message_id=message_id,
            content_type=CONTENT_TYPE,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            headers=headers or {},
        )
        await self.channel.default_exchange.publish(message, routing_key=queue_name(agent), mandatory=True)
