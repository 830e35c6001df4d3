"""Turns per second with a 0-latency fake model for 1, 10 and 100 concurrent conversations and prefetch 1
and 10 (two agents, active + standby each), each row next to its own ceiling measured in the same run:
the bare work of a turn (consume, one Postgres commit, one confirmed publish, ack) by as many consumer
processes (two: the active replicas), with the same prefetch and the same number of concurrent chains
(``stoa_testing.ceiling``). The ratio runtime / ceiling is what to read; absolute rates depend on the
machine.

    .venv/bin/python bench/runtime_throughput.py [--turns 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import uuid
from pathlib import Path

from stoa_agents.bus.topology import queue_name
from stoa_agents.control import start_conversation
from stoa_testing.ceiling import TABLE, hop_body
from stoa_testing.sandbox import Env, conversation, environment, fleet_for, write_result

RESULTS = Path(__file__).parent / "results"


ROWS = ((1, 1), (10, 1), (100, 1), (10, 10), (100, 10))  # (concurrent conversations, prefetch)


def _hops(concurrent: int, total_turns: int) -> int:
    return min(200, max(2, total_turns // concurrent))  # a Conversation's maxTurns is capped at 200


async def _until(env: Env, query: str, args: list[object], done: int) -> None:
    """Poll with one cheap query every 50 ms (polling must not compete with what is measured)."""
    while True:
        if int(await env.db.fetchval(query, *args) or 0) >= done:
            return
        await asyncio.sleep(0.05)


async def ceiling_rate(env: Env, concurrent: int, total_turns: int, prefetch: int) -> dict[str, float]:
    hops = _hops(concurrent, total_turns)
    prefix = f"ceil{concurrent}p{prefetch}-{uuid.uuid4().hex[:4]}"
    a, b = f"{prefix}-a", f"{prefix}-b"
    await env.db.execute(f"CREATE TABLE IF NOT EXISTS {TABLE} (id text PRIMARY KEY)")
    await env.db.execute(f"TRUNCATE {TABLE}")
    for key in (a, b):
        await env.bus.declare_agent(key)
    environ = {
        "CEILING_RABBITMQ_URL": env.rabbitmq.url,
        "CEILING_POSTGRES_DSN": env.postgres.dsn,
        "CEILING_PREFETCH": str(prefetch),
    }
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable, "-m", "stoa_testing.ceiling", mine, other, env=environ
        )
        for mine, other in ((a, b), (b, a))
    ]
    try:
        await asyncio.sleep(3.0)  # processes up and consuming (as the runtime rows)
        started = time.monotonic()
        await asyncio.gather(
            *(env.bus.publish(a, hop_body(i, 1, hops), message_id=f"{i}:1") for i in range(concurrent))
        )
        await _until(env, f"SELECT count(*) FROM {TABLE}", [], concurrent * hops)  # noqa: S608
        elapsed = time.monotonic() - started
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            await asyncio.wait_for(proc.wait(), 10)
        for key in (a, b):
            await env.bus.channel.queue_delete(queue_name(key))
    return {
        "messages": concurrent * hops,
        "seconds": round(elapsed, 2),
        "msgs_per_s": round(concurrent * hops / elapsed, 1),
    }


async def runtime_rate(env: Env, concurrent: int, total_turns: int, prefetch: int) -> dict[str, float]:
    prefix = f"tp{concurrent}p{prefetch}-{uuid.uuid4().hex[:4]}"
    agents = [f"{prefix}-a", f"{prefix}-b"]
    fleet = fleet_for(env, agents, 2, {"STOA_PREFETCH": str(prefetch)})
    for agent in agents:
        await env.bus.declare_agent(agent)
    fleet.start()
    await asyncio.sleep(3.0)  # processes up and consuming
    hops = _hops(concurrent, total_turns)
    names = [f"{prefix}-c{i}" for i in range(concurrent)]
    try:
        started = time.monotonic()
        await asyncio.gather(
            *(start_conversation(env.db, env.bus, n, conversation(agents, hops)) for n in names)
        )
        await _until(
            env,
            "SELECT count(*) FROM stoa.conversations"
            " WHERE name = ANY($1) AND phase IN ('Succeeded', 'Failed')",
            [names],
            concurrent,
        )
        elapsed = time.monotonic() - started
        turns = int(
            await env.db.fetchval("SELECT sum(turns) FROM stoa.conversations WHERE name = ANY($1)", names)
        )
        return {"turns": turns, "seconds": round(elapsed, 2), "turns_per_s": round(turns / elapsed, 1)}
    finally:
        await asyncio.to_thread(fleet.stop, 10.0)


async def main_async(turns: int) -> None:
    async with environment() as env:
        rows = []
        for concurrent, prefetch in ROWS:
            # The ceiling right before and right after the runtime, the better one counts: on a shared
            # machine the load moves, and a ceiling measured in a quiet moment never flatters the ratio.
            before = await ceiling_rate(env, concurrent, turns, prefetch)
            runtime = await runtime_rate(env, concurrent, turns, prefetch)
            after = await ceiling_rate(env, concurrent, turns, prefetch)
            ceiling = max(before["msgs_per_s"], after["msgs_per_s"])
            row = {
                "concurrent_conversations": concurrent,
                "prefetch": prefetch,
                "ceiling_msgs_per_s": ceiling,
                "runtime_turns_per_s": runtime["turns_per_s"],
                "ratio": round(runtime["turns_per_s"] / ceiling, 2),
                "runtime": runtime,
                "ceilings": [before, after],
            }
            print(row, flush=True)
            rows.append(row)
    result = {
        "benchmark": "runtime_throughput",
        "model": "fake, 0 latency",
        "ceiling": "per row: two consumer processes (the active replicas) with the row's prefetch and "
        "concurrent chains doing consume + 1 Postgres commit + 1 confirmed publish + ack "
        "(stoa_testing.ceiling); measured before and after the runtime, the higher counts",
        "rows": rows,
        "note": "two agents (active + standby each); a turn = dedupe + conversation + history read, model "
        "call, one transaction (turn + processed id + outbox + totals), confirmed publish, ack",
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
