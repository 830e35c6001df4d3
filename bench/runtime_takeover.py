"""Takeover time: kill -9 the active replica in the middle of a conversation; time until a turn is
committed by another process. Hot standby (2 replicas) vs. the baseline of a single replica restarted at
once (what "one pod + Kubernetes restarts it" gives at best: no CrashLoop backoff, no scheduling, no image
pull). 0-latency fake model; fsync on.

    .venv/bin/python bench/runtime_takeover.py [--kills 50] [--baseline-kills 10]
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from pathlib import Path

from stoa_agents.control import agent_status, conversation_status, start_conversation
from stoa_agents.local.fleet import Fleet
from stoa_testing.sandbox import Env, conversation, environment, fleet_for, summary_ms, write_result

RESULTS = Path(__file__).parent / "results"


async def _wait_consuming(fleet: Fleet, settle: float) -> None:
    for _ in range(200):
        fleet.supervise()
        if len(fleet.alive()) == len(fleet.members):
            break
        await asyncio.sleep(0.02)
    await asyncio.sleep(settle)  # the restarted process imports, connects and registers as a consumer


async def _first_turn_after(
    env: Env, conversation_id: str, after: float, exclude_pod: str, limit: float
) -> float:
    """Seconds from ``after`` (epoch) to the first turn committed by another pod."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        row = await env.db.fetchrow(
            "SELECT extract(epoch FROM created_at) AS at FROM stoa.turns WHERE conversation_id = $1"
            " AND pod <> $2 AND created_at >= to_timestamp($3) ORDER BY seq LIMIT 1",
            uuid.UUID(conversation_id),
            exclude_pod,
            after,
        )
        if row is not None:
            return max(0.0, float(row["at"]) - after)
        await asyncio.sleep(0.002)
    raise TimeoutError("no takeover observed")


async def measure(env: Env, *, replicas: int, kills: int, label: str) -> list[float]:
    agent = f"bench-{label}-{uuid.uuid4().hex[:4]}"
    fleet = fleet_for(env, [agent], replicas)
    await env.bus.declare_agent(agent)
    fleet.start()
    await _wait_consuming(fleet, 2.0)
    samples: list[float] = []
    try:
        for i in range(kills):
            name = f"{agent}-c{i}"
            status = await start_conversation(env.db, env.bus, name, conversation([agent], 200))
            for _ in range(500):  # let it run: the active replica is mid-conversation
                current = await conversation_status(env.db, name)
                if current is not None and current.turns >= 5:
                    break
                await asyncio.sleep(0.01)
            pod = (await agent_status(env.db, agent)).active_pod
            assert pod is not None
            killed_at = time.time()
            fleet.kill(pod)
            if replicas == 1:
                fleet.supervise()  # "Kubernetes" restarts it immediately
            samples.append(await _first_turn_after(env, status.id, killed_at, pod, 60))
            await env.db.execute(
                "UPDATE stoa.conversations SET phase = 'Failed', reason = 'bench' WHERE name = $1", name
            )
            await _wait_consuming(fleet, 1.5 if replicas > 1 else 0.2)
            print(f"  {label} kill {i + 1}/{kills}: {samples[-1] * 1000:.1f} ms", flush=True)
    finally:
        await asyncio.to_thread(fleet.stop, 10.0)
    return samples


async def main_async(kills: int, baseline_kills: int) -> None:
    async with environment() as env:
        standby = await measure(env, replicas=2, kills=kills, label="standby")
        restart = await measure(env, replicas=1, kills=baseline_kills, label="restart")
    result = {
        "benchmark": "runtime_takeover",
        "what": "kill -9 of the active agent replica mid-conversation"
        " -> first turn committed by another process",
        "model": "fake, 0 latency",
        "hot_standby": summary_ms(standby),
        "single_replica_restarted_immediately": summary_ms(restart),
        "note": "the baseline excludes Kubernetes restart backoff, scheduling and image pull",
    }
    path = write_result(RESULTS, "runtime_takeover", result)
    print(result)
    print(f"Wrote {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--kills", type=int, default=50)
    parser.add_argument("--baseline-kills", type=int, default=10)
    args = parser.parse_args()
    asyncio.run(main_async(args.kills, args.baseline_kills))


if __name__ == "__main__":
    main()
