"""Operator-facing functions: idempotent start, suspend/resume/stop, status, active pod, graceful SIGTERM,
health and metrics, trace context passed to the model."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import aiohttp
import pytest

from stoa_agents.control import (
    STOPPED_BY_REQUEST,
    agent_status,
    conversation_status,
    purge,
    reconcile_conversation,
    resume,
    start_conversation,
    stop,
    suspend,
)
from stoa_agents.store.db import open_pool
from stoa_agents.store.repo import record_activity
from stoa_agents.turns.policy import Phase
from stoa_devenv.postgres import PostgresServer
from stoa_devenv.rabbitmq import RabbitMQServer
from stoa_testing.fake_provider import Behaviour, start_fake_provider
from tests.integration.runtime.harness import Cluster, distinct_replies, unique_prefix


async def _wait_turns(cluster: Cluster, name: str, turns: int) -> None:
    for _ in range(400):
        status = await conversation_status(cluster.db, name)
        if status is not None and status.turns >= turns:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{name} did not reach {turns} turns")


@pytest.mark.slow
async def test_start_is_idempotent_and_suspend_resume_stop_work(
    postgres: PostgresServer, rabbitmq: RabbitMQServer, runtime_logs: Path
) -> None:
    fake = await start_fake_provider(replies=distinct_replies(), default=Behaviour(latency=0.15))
    cluster = await Cluster.start(
        prefix=unique_prefix("s"),
        postgres_dsn=postgres.dsn,
        rabbitmq_url=rabbitmq.url,
        model_url=fake.base_url,
        log_dir=runtime_logs,
    )
    try:
        name = f"{cluster.agents[0]}-suspendable"
        spec = cluster.spec(12)
        first = await start_conversation(cluster.db, cluster.bus, name, spec)
        again = await start_conversation(cluster.db, cluster.bus, name, spec)
        assert first.id == again.id
        assert await cluster.db.fetchval("SELECT count(*) FROM stoa.conversations WHERE name = $1", name) == 1

        await _wait_turns(cluster, name, 3)
        assert await suspend(cluster.db, name)
        for _ in range(200):  # the in-flight turn commits, its successor arrives and is parked
            if await cluster.db.fetchval(
                "SELECT parked_message FROM stoa.conversations WHERE name = $1", name
            ):
                break
            await asyncio.sleep(0.05)
        parked = await conversation_status(cluster.db, name)
        assert parked is not None
        assert parked.phase is Phase.SUSPENDED
        await asyncio.sleep(0.8)
        still = await conversation_status(cluster.db, name)
        assert still is not None
        assert still.turns == parked.turns
        resumed = await reconcile_conversation(cluster.db, cluster.bus, name, spec)  # spec.suspend is False
        assert resumed.phase is Phase.RUNNING
        assert not await resume(cluster.db, cluster.bus, name)  # already running: no-op
        await cluster.wait_finished([name], within=60)
        assert await cluster.check_exactly_once(name, 12) == 12

        status = await conversation_status(cluster.db, name)
        assert status is not None
        assert status.last_speaker == cluster.agents[2]  # turn 12 of moderator, pro, con
        assert status.tokens_out > 0
        assert status.started_at is not None
        assert status.finished_at is not None
        assert sum(s.turns for s in status.agents.values()) == 12
        assert status.model_dump(mode="json", by_alias=True)["phase"] == "Succeeded"
        shown = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "stoa_cli.main", "transcript", name, "--postgres-url", postgres.dsn],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
        assert shown.returncode == 0, shown.stderr
        assert "[  1]" in shown.stdout
        assert "[ 12]" in shown.stdout
        assert "Phase Succeeded" in shown.stdout

        # The model saw who was calling, for which conversation, in which trace.
        headers = [r.get("headers", {}) for r in fake.state.stats()["lastRequests"]]
        assert any("traceparent" in h for h in headers), headers[:1]
        assert any(h.get("X-Stoa-Conversation") == name for h in headers)

        for agent in cluster.agents:
            active = await agent_status(cluster.db, agent)
            assert active.active_pod is not None
            assert active.active_pod.startswith(agent)
            assert active.turns_handled >= 1

        # Created suspended: nothing runs until the spec says otherwise.
        held = f"{cluster.agents[0]}-held"
        held_spec = cluster.spec(3).model_copy(update={"suspend": True})
        created = await reconcile_conversation(cluster.db, cluster.bus, held, held_spec)
        assert created.phase is Phase.SUSPENDED
        await asyncio.sleep(0.5)
        idle = await conversation_status(cluster.db, held)
        assert idle is not None
        assert idle.turns == 0
        released = await reconcile_conversation(cluster.db, cluster.bus, held, cluster.spec(3))
        assert released.phase is Phase.PENDING
        await cluster.wait_finished([held], within=60)
        assert await cluster.check_exactly_once(held, 3) == 3

        # Stop: a running conversation ends Failed with the reason, nothing more is stored.
        other = (await cluster.start_conversations(1, max_turns=40, label="stop"))[0]
        await _wait_turns(cluster, other, 2)
        assert await stop(cluster.db, other, "Stopped by test")
        await asyncio.sleep(0.8)
        stopped = await conversation_status(cluster.db, other)
        assert stopped is not None
        assert stopped.phase is Phase.FAILED
        assert stopped.reason == "Stopped by test"
        frozen = stopped.turns
        await asyncio.sleep(0.5)
        final = await conversation_status(cluster.db, other)
        assert final is not None
        assert final.turns == frozen
        assert await purge(cluster.db, other)
        assert await conversation_status(cluster.db, other) is None

        # spec.stop (what `stoa api` .../stop sets): the reconcile stops it, again and again the same way.
        halted = (await cluster.start_conversations(1, max_turns=40, label="halt"))[0]
        await _wait_turns(cluster, halted, 1)
        stop_spec = cluster.spec(40).model_copy(update={"stop": True})
        for _ in range(2):
            ended = await reconcile_conversation(cluster.db, cluster.bus, halted, stop_spec)
            assert ended.phase is Phase.FAILED
            assert ended.reason == STOPPED_BY_REQUEST
    finally:
        await cluster.close()
        await fake.close()


@pytest.mark.slow
async def test_sigterm_finishes_the_current_turn_and_health_endpoints(
    postgres: PostgresServer, rabbitmq: RabbitMQServer, runtime_logs: Path
) -> None:
    fake = await start_fake_provider(replies=distinct_replies(), default=Behaviour(latency=0.3))
    cluster = await Cluster.start(
        prefix=unique_prefix("t"),
        postgres_dsn=postgres.dsn,
        rabbitmq_url=rabbitmq.url,
        model_url=fake.base_url,
        log_dir=runtime_logs,
        agents=2,
        metrics=True,
    )
    cluster.fleet.restart = False
    try:
        name = (await cluster.start_conversations(1, max_turns=10))[0]
        await _wait_turns(cluster, name, 2)
        active = cluster.fleet.by_pod((await agent_status(cluster.db, cluster.agents[0])).active_pod or "")
        assert active is not None
        port = active.metrics_port
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{port}/readyz") as resp:
                assert resp.status == 200
                assert "broker=up database=up" in await resp.text()
            async with http.get(f"http://127.0.0.1:{port}/healthz") as resp:
                assert resp.status == 200
            async with http.get(f"http://127.0.0.1:{port}/metrics") as resp:
                text = await resp.text()
                assert "stoa_agent_turns_total" in text
                assert "stoa_agent_turn_duration_seconds" in text
        # SIGTERM the active replica of the agent that is speaking now.
        for agent in cluster.agents:
            pod = (await agent_status(cluster.db, agent)).active_pod
            replica = cluster.fleet.by_pod(pod or "")
            assert replica is not None
            replica.process.send_signal(signal.SIGTERM)
            assert await asyncio.to_thread(replica.process.wait, 20) == 0
        await cluster.wait_finished([name], within=60)
        assert await cluster.check_exactly_once(name, 10) == 10
        conv = await conversation_status(cluster.db, name)
        assert conv is not None
        pods = {
            r["pod"]
            for r in await cluster.db.fetch(
                "SELECT DISTINCT pod FROM stoa.turns WHERE conversation_id = $1", uuid.UUID(conv.id)
            )
        }
        assert any(p.endswith("-1-g0") for p in pods), pods  # the standbys took over
    finally:
        await cluster.close()
        await fake.close()


async def test_agent_activity_keeps_the_real_previous_pod(postgres: PostgresServer) -> None:
    """A pod recording itself again (reconnect, restarted container) must not erase who it took over from."""
    db = await open_pool(postgres.dsn)
    agent = f"activity-{uuid.uuid4().hex[:6]}"
    try:
        assert await record_activity(db, agent, "pod-1") is None
        assert await record_activity(db, agent, "pod-2") == "pod-1"
        assert await record_activity(db, agent, "pod-2") is None
        status = await agent_status(db, agent)
    finally:
        await db.close()
    assert status.active_pod == "pod-2"
    assert status.previous_pod == "pod-1"
    assert status.takeovers == 1
