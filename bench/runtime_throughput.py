"""Turns per second with a 0-latency fake model for 1, 10 and 100 concurrent conversations (two agents,
active + standby each), next to the raw ceiling measured in the same run: a bare loop doing what one turn
must do at least (consume, one Postgres commit, one confirmed publish, one ack).

    .venv/bin/python bench/runtime_throughput.py [--turns 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from pathlib import Path

import aio_pika

from stoa_agents.control import conversation_status, start_conversation
from stoa_agents.turns.policy import TERMINAL_PHASES
from stoa_testing.sandbox import Env, conversation, environment, fleet_for, write_result

RESULTS = Path(__file__).parent / "results"


async def raw_ceiling(env: Env, messages: int) -> float:
    """Sequential: get a delivery, commit a row, publish the next message with a confirm, ack."""
    queue_name = f"bench.raw.{uuid.uuid4().hex[:6]}"
    await env.db.execute("CREATE TABLE IF NOT EXISTS stoa_bench_raw (id text PRIMARY KEY, at timestamptz)")
    channel = env.bus.channel
    queue = await channel.declare_queue(queue_name, durable=True, arguments={"x-queue-type": "quorum"})
    await channel.default_exchange.publish(
        aio_pika.Message(b"0", delivery_mode=aio_pika.DeliveryMode.PERSISTENT), routing_key=queue_name
    )
    started = time.monotonic()
    count = 0
    async with queue.iterator() as deliveries:
        async for message in deliveries:
            count += 1
            async with env.db.acquire() as conn, conn.transaction():
                await conn.execute("INSERT INTO stoa_bench_raw VALUES ($1, now())", f"{queue_name}:{count}")
            if count < messages:
                await channel.default_exchange.publish(
                    aio_pika.Message(str(count).encode(), delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                    routing_key=queue_name,
                )
            await message.ack()
            if count >= messages:
                break
    elapsed = time.monotonic() - started
    await queue.delete(if_unused=False, if_empty=False)
    return count / elapsed


async def runtime_rate(env: Env, concurrent: int, total_turns: int, prefetch: int) -> dict[str, float]:
    prefix = f"tp{concurrent}p{prefetch}-{uuid.uuid4().hex[:4]}"
    agents = [f"{prefix}-a", f"{prefix}-b"]
    fleet = fleet_for(env, agents, 2, {"STOA_PREFETCH": str(prefetch)})
    for agent in agents:
        await env.bus.declare_agent(agent)
    fleet.start()
    await asyncio.sleep(3.0)  # processes up and consuming
    per_conversation = min(200, max(2, total_turns // concurrent))  # maxTurns is capped at 200
    names = [f"{prefix}-c{i}" for i in range(concurrent)]
    try:
        started = time.monotonic()
        for name in names:
            await start_conversation(env.db, env.bus, name, conversation(agents, per_conversation))
        while True:
            statuses = [await conversation_status(env.db, n) for n in names]
            if all(s is not None and s.phase in TERMINAL_PHASES for s in statuses):
                break
            await asyncio.sleep(0.02)
        elapsed = time.monotonic() - started
        turns = sum(s.turns for s in statuses if s is not None)
        return {
            "concurrent_conversations": concurrent,
            "prefetch": prefetch,
            "turns": turns,
            "seconds": round(elapsed, 2),
            "turns_per_s": round(turns / elapsed, 1),
        }
    finally:
        await asyncio.to_thread(fleet.stop, 10.0)


async def main_async(turns: int) -> None:
    async with environment() as env:
        ceiling = await raw_ceiling(env, turns)
        print(f"raw ceiling: {ceiling:.1f} msgs/s", flush=True)
        rows = []
        for concurrent, prefetch in ((1, 1), (10, 1), (100, 1), (10, 10), (100, 10)):
            row = await runtime_rate(env, concurrent, turns, prefetch)
            print(row, flush=True)
            rows.append(row)
    result = {
        "benchmark": "runtime_throughput",
        "model": "fake, 0 latency",
        "raw_ceiling_msgs_per_s": round(ceiling, 1),
        "raw_ceiling": "sequential: consume + 1 Postgres commit + 1 confirmed publish + ack, one process",
        "runtime": rows,
        "note": "two agents (active + standby each); a turn = dedupe read, history read, model call, one "
        "transaction (turn + processed id + outbox + totals), confirmed publish, ack",
    }
    path = write_result(RESULTS, "runtime_throughput", result)
    print(f"Wrote {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--turns", type=int, default=1000, help="turns per configuration (1 conversation: 200)"
    )
    args = parser.parse_args()
    asyncio.run(main_async(args.turns))


if __name__ == "__main__":
    main()
