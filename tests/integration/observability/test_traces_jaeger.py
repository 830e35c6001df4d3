"""One debate with a failover and a kill -9, traced into a real Jaeger (v1.76, built from the Go module
proxy): one trace per turn, with the right parent/child links across the agent and gateway processes.

Agents are subprocess replicas (active + standby), the gateway is its own process (``stoa gateway``),
both exporting OTLP/HTTP to Jaeger by the standard ``OTEL_*`` variables. The gateway's primary target
fails (every turn fails over to the backup); during one model call the active replica of the speaker is
killed with SIGKILL, and its standby completes the turn.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from stoa_agents.control import agent_status, conversation_status
from stoa_devenv.jaeger import JaegerServer
from stoa_devenv.postgres import PostgresServer
from stoa_devenv.procs import free_port, port_open, wait_until
from stoa_devenv.rabbitmq import RabbitMQServer
from stoa_telemetry import ids
from stoa_testing.fake_provider import Behaviour, RunningFake, start_fake_provider
from stoa_testing.gateway import GatewayFactory, target
from tests.integration.runtime.harness import Cluster, distinct_replies

TURNS = 6


@pytest.fixture(scope="module")
def jaeger() -> Iterator[JaegerServer]:
    server = JaegerServer().start()
    yield server
    server.destroy()


def _otel(jaeger: JaegerServer) -> dict[str, str]:
    return {"OTEL_EXPORTER_OTLP_ENDPOINT": jaeger.otlp_endpoint, "OTEL_BSP_SCHEDULE_DELAY": "200"}


class GatewayProcess:
    def __init__(self, config: Path, log: Path, env: dict[str, str]) -> None:
        self.port = free_port()
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "stoa_gateway.cli", "--config", str(config), "--port", str(self.port)],
                env={**os.environ, **env},
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        wait_until(lambda: port_open(self.port), 30, "gateway", log)
        self.base_url = f"http://127.0.0.1:{self.port}/v1"

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(30)


def _spans(trace: dict[str, Any]) -> list[dict[str, Any]]:
    processes = trace["processes"]
    out = []
    for span in trace["spans"]:
        tags = {t["key"]: t["value"] for t in span.get("tags", [])}
        parents = [r["spanID"] for r in span.get("references", []) if r["refType"] == "CHILD_OF"]
        out.append(
            {
                "id": span["spanID"],
                "name": span["operationName"],
                "service": processes[span["processID"]]["serviceName"],
                "parent": parents[0] if parents else None,
                "links": [
                    (r["traceID"], r["spanID"])
                    for r in span.get("references", [])
                    if r["refType"] == "FOLLOWS_FROM"
                ],
                "tags": tags,
            }
        )
    return out


def _tree(spans: list[dict[str, Any]]) -> str:
    """The trace as indented text (for the report and for failure messages)."""
    by_parent: dict[str | None, list[dict[str, Any]]] = {}
    ids_ = {s["id"] for s in spans}
    for s in spans:
        by_parent.setdefault(s["parent"] if s["parent"] in ids_ else None, []).append(s)
    lines: list[str] = []

    def walk(parent: str | None, depth: int) -> None:
        for s in sorted(by_parent.get(parent, []), key=lambda x: x["name"]):
            extra = {
                k: s["tags"][k]
                for k in ("stoa.turn.outcome", "stoa.attempt.decision", "stoa.outcome", "error.type")
                if k in s["tags"]
            }
            orphan = " (parent not exported)" if depth == 0 and s["parent"] else ""
            lines.append(f"{'  ' * depth}{s['name']} [{s['service']}] {extra}{orphan}")
            walk(s["id"], depth + 1)

    walk(None, 0)
    return "\n".join(lines)


@pytest.fixture
async def providers() -> Any:
    primary = await start_fake_provider(default=Behaviour(status=503))
    backup = await start_fake_provider(replies=distinct_replies(), default=Behaviour(latency=0.6))
    yield primary, backup
    await primary.close()
    await backup.close()


async def test_one_trace_per_turn_across_processes_with_failover_and_kill(
    postgres: PostgresServer,
    rabbitmq: RabbitMQServer,
    jaeger: JaegerServer,
    providers: tuple[RunningFake, RunningFake],
    tmp_path: Path,
) -> None:
    primary, backup = providers
    factory = GatewayFactory(tmp_path)
    factory.write(
        {
            "chat": {
                "targets": [target("primary", primary), target("backup", backup)],
                "retry": {"attempts": 2},
                "circuitBreaker": {"enabled": False},  # every turn tries the primary, then fails over
            }
        }
    )
    gateway = GatewayProcess(factory.config_path, tmp_path / "gateway.log", _otel(jaeger))
    prefix = f"t{uuid.uuid4().hex[:4]}"
    cluster = await Cluster.start(
        prefix=prefix,
        postgres_dsn=postgres.dsn,
        rabbitmq_url=rabbitmq.url,
        model_url=gateway.base_url,
        log_dir=tmp_path / "agents",
        replicas=2,
        env={**_otel(jaeger), "STOA_MODEL_NAME": "chat"},
    )
    try:
        (name,) = await cluster.start_conversations(1, max_turns=TURNS, label="traced")
        # Kill -9 the speaker's active replica while its model call for turn 3 is in flight.
        status = await conversation_status(cluster.db, name)
        assert status is not None
        deadline = time.monotonic() + 60
        killed = None
        while killed is None and time.monotonic() < deadline:
            current = await conversation_status(cluster.db, name)
            if current is not None and current.turns == 2 and backup.state.in_flight > 0:
                speaker = cluster.agents[(2) % len(cluster.agents)]
                pod = (await agent_status(cluster.db, speaker)).active_pod
                if pod and cluster.fleet.kill(pod):
                    killed = pod
            await asyncio.sleep(0.02)
        assert killed is not None, "could not kill a replica during turn 3's model call"
        await cluster.wait_finished([name], within=120)
        final = await conversation_status(cluster.db, name)
        assert final is not None
        assert final.turns == TURNS
        assert final.phase.value == "Succeeded"
        conversation_id = final.conversation_id
        assert conversation_id is not None
    finally:
        await cluster.close()  # SIGTERM: replicas export what they buffered
        gateway.stop()

    # Every turn has exactly one trace: its id derives from the turn's message id.
    expected = {seq: f"{ids.turn_trace_id(f'{conversation_id}:{seq}'):032x}" for seq in range(1, TURNS + 1)}
    traces: dict[int, list[dict[str, Any]]] = {}
    for _ in range(100):
        found = {seq: jaeger.trace(tid) for seq, tid in expected.items()}
        if all(found.values()):
            traces = {seq: _spans(t) for seq, t in found.items() if t}
            if all(
                sum(s["tags"].get("stoa.turn.outcome") == "stored" for s in spans) == 1
                for spans in traces.values()
            ):
                break
        await asyncio.sleep(0.2)
    assert set(traces) == set(expected), f"turns without a trace: {set(expected) - set(traces)}"
    agent_traces = {
        t["traceID"]
        for t in jaeger.traces("stoa-agent")
        if any(s["operationName"].startswith("invoke_agent") for s in t["spans"])
    }
    assert agent_traces == set(expected.values())  # nothing else, no turn split over two traces

    for seq, spans in traces.items():
        stored = [
            s
            for s in spans
            if s["name"].startswith("invoke_agent") and s["tags"].get("stoa.turn.outcome") == "stored"
        ]
        assert len(stored) == 1, f"turn {seq}:\n{_tree(spans)}"
        turn = stored[0]
        assert turn["parent"] is None
        assert turn["service"] == "stoa-agent"
        assert turn["tags"]["gen_ai.operation.name"] == "invoke_agent"
        assert turn["tags"]["gen_ai.conversation.id"] == conversation_id
        assert turn["tags"]["stoa.turn.seq"] == seq
        # Agent chat span -> gateway SERVER span (another process) -> upstream attempts: primary fails
        # over to the backup, which answers.
        chats = [s for s in spans if s["parent"] == turn["id"] and s["name"] == "chat chat"]
        assert len(chats) == 1, f"turn {seq}:\n{_tree(spans)}"
        served = [s for s in spans if s["parent"] == chats[0]["id"] and s["service"] == "stoa-gateway"]
        assert len(served) == 1, f"turn {seq}:\n{_tree(spans)}"
        assert served[0]["tags"]["stoa.outcome"] == "ok"
        assert served[0]["tags"]["gen_ai.response.model"] == "model-backup"
        attempts = {
            s["name"]: s["tags"]["stoa.attempt.decision"] for s in spans if s["parent"] == served[0]["id"]
        }
        assert attempts == {"chat model-primary": "retry", "chat model-backup": "ok"}, _tree(spans)
        children = {s["name"] for s in spans if s["parent"] == turn["id"]}
        assert "COMMIT stoa.turns" in children
        # The link to the previous turn (turn 1: to the conversation's start).
        if seq > 1:
            assert any(tid == expected[seq - 1] for tid, _ in turn["links"]), turn["links"]

    # The killed turn: the standby's delivery links to the interrupted one (same trace); the interrupted
    # attempt's gateway request is in the trace too, ended when its client went away.
    killed_turn = traces[3]
    tree = _tree(killed_turn)
    redelivered = next(
        s
        for s in killed_turn
        if s["name"].startswith("invoke_agent") and s["tags"].get("stoa.turn.outcome") == "stored"
    )
    assert redelivered["tags"]["messaging.rabbitmq.message.delivery_count"] >= 1, tree
    interrupted = f"{ids.attempt_span_id(f'{conversation_id}:3', 0):016x}"
    assert (expected[3], interrupted) in redelivered["links"], tree
    gone = [
        s
        for s in killed_turn
        if s["service"] == "stoa-gateway" and s["tags"].get("stoa.outcome") == "client_disconnected"
    ]
    assert gone, tree
    print(f"Trace of turn 3 (kill -9 of {killed} during its model call):\n{tree}")
    print(f"Trace of turn 2:\n{_tree(traces[2])}")
