"""A throwaway runtime for benchmarks: private PostgreSQL + RabbitMQ, a 0-latency fake model (the
gateway's fake provider) and agent replica subprocesses (the same ``stoa agent`` processes a Deployment
runs). Used by ``bench/runtime_*.py``."""

from __future__ import annotations

import asyncio
import contextlib
import json
import statistics
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg

from stoa_agents.bus.broker import Bus
from stoa_agents.envcontract import Wiring, agent_env, literal_env
from stoa_agents.local.fleet import Fleet
from stoa_agents.store.db import open_pool
from stoa_api.agent import AgentSpec
from stoa_api.conversation import ConversationSpec
from stoa_devenv.postgres import PostgresServer
from stoa_devenv.rabbitmq import RabbitMQServer
from stoa_testing.fake_provider import RunningFake, start_fake_provider


def replies(n: int = 80) -> list[str]:
    words = ("nurses", "drivers", "coders", "farmers", "clerks", "teachers", "welders", "artists", "doctors")
    return [f"Claim {i}: {words[i % 9]} and {words[(i * 4 + 1) % 9]} adapt in round {i}." for i in range(n)]


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def summary_ms(values: list[float]) -> dict[str, float]:
    ms = [v * 1000 for v in values]
    return {
        "n": len(ms),
        "p50_ms": round(pct(ms, 50), 1),
        "p95_ms": round(pct(ms, 95), 1),
        "max_ms": round(max(ms), 1) if ms else float("nan"),
        "mean_ms": round(statistics.fmean(ms), 1) if ms else float("nan"),
    }


@dataclass
class Env:
    postgres: PostgresServer
    rabbitmq: RabbitMQServer
    fake: RunningFake
    db: asyncpg.Pool
    bus: Bus
    logs: Path


@contextlib.asynccontextmanager
async def environment(fsync: bool = True) -> AsyncIterator[Env]:
    print("Starting PostgreSQL and RabbitMQ ...", flush=True)
    pg, mq = await asyncio.gather(
        asyncio.to_thread(lambda: PostgresServer(fsync=fsync).start()),
        asyncio.to_thread(lambda: RabbitMQServer().start()),
    )
    fake = await start_fake_provider(replies=replies())
    db = await open_pool(pg.dsn, max_size=8)
    bus = await Bus.connect(mq.url, name="stoa-bench", delivery_limit=20)
    try:
        yield Env(pg, mq, fake, db, bus, Path(tempfile.mkdtemp(prefix="stoa-bench-")))
    finally:
        await bus.close()
        await db.close()
        await fake.close()
        await asyncio.to_thread(mq.destroy)
        await asyncio.to_thread(pg.destroy)


def fleet_for(env: Env, agents: list[str], replicas: int, extra: dict[str, str] | None = None) -> Fleet:
    envs = {
        name: literal_env(
            agent_env(
                name,
                # Direct to the fake (no gateway): the policy is only the name the spec needs.
                AgentSpec.model_validate(
                    {"role": "member", "persona": "Bench agent.", "modelPolicyRef": {"name": "fake"}}
                ),
                Wiring(
                    rabbitmq_url=env.rabbitmq.url,
                    postgres_dsn=env.postgres.dsn,
                    model_url=env.fake.base_url,
                    default_model="fake-model",
                    metrics_port_number=0,
                ),
                {
                    "STOA_DELIVERY_LIMIT": "20",
                    "STOA_HEARTBEAT_SECONDS": "2",
                    "STOA_LOG_LEVEL": "WARNING",
                    "STOA_MEMORY_ENABLED": "false",
                    **(extra or {}),
                },
            )
        )
        for name in agents
    }
    return Fleet(envs, replicas, env.logs / "agents", restart_delay=0.0)


def conversation(agents: list[str], max_turns: int) -> ConversationSpec:
    return ConversationSpec.model_validate(
        {"topic": "bench", "participants": [{"agentRef": a} for a in agents], "maxTurns": max_turns}
    )


def write_result(directory: Path, name: str, data: dict[str, Any]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.json"
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path
