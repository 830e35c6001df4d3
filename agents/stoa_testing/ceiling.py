"""The honest ceiling of ``bench/runtime_throughput.py``: the bare work of a turn, in the runtime's shape.

One process per agent, as the runtime's active replicas: ``python -m stoa_testing.ceiling QUEUE NEXT``
consumes agent queue QUEUE (the runtime's quorum queue, same client and prefetch) and, per delivery,
does the least a turn must do: one PostgreSQL transaction (a row keyed by the message id), one
confirmed publish of the next hop to agent NEXT (while the chain has hops left), then the ack. With the
same number of processes, prefetch and concurrent chains (conversations) as a benchmark row, the
runtime cannot do better; its ratio to this is what the benchmark reports.

Configured by ``CEILING_RABBITMQ_URL``, ``CEILING_POSTGRES_DSN``, ``CEILING_PREFETCH``,
``CEILING_DELIVERY_LIMIT`` (the queues' ``x-delivery-limit``, 20 as the benchmark's agents).
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys

from aio_pika.abc import AbstractIncomingMessage

from stoa_agents.bus.broker import Bus
from stoa_agents.store.db import open_pool

TABLE = "stoa_bench_ceiling"


def hop_body(chain: int, hop: int, hops: int) -> bytes:
    return f"{chain}:{hop}:{hops}".encode()


async def run(queue_key: str, next_key: str) -> int:
    prefetch = int(os.environ.get("CEILING_PREFETCH", "1"))
    db = await open_pool(os.environ["CEILING_POSTGRES_DSN"], max_size=prefetch + 1)
    bus = await Bus.connect(
        os.environ["CEILING_RABBITMQ_URL"],
        prefetch=prefetch,
        delivery_limit=int(os.environ.get("CEILING_DELIVERY_LIMIT", "20")),  # as the benchmark's agents
        name=f"ceiling {queue_key}",
    )
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)

    async def on_message(message: AbstractIncomingMessage) -> None:
        chain, hop, hops = (int(x) for x in message.body.decode().split(":"))
        async with db.acquire() as conn, conn.transaction():
            await conn.execute(
                f"INSERT INTO {TABLE} (id) VALUES ($1) ON CONFLICT DO NOTHING",  # noqa: S608 (constant)
                message.message_id,
            )
        if hop < hops:
            await bus.publish(next_key, hop_body(chain, hop + 1, hops), message_id=f"{chain}:{hop + 1}")
        await message.ack()

    queue, _ = await bus.declare_agent(queue_key)
    await queue.consume(on_message)
    await stopping.wait()
    await bus.close()
    await db.close()
    return 0


def main() -> int:
    return asyncio.run(run(sys.argv[1], sys.argv[2]))


if __name__ == "__main__":
    sys.exit(main())
