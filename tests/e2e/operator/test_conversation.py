"""Conversations against real Postgres + RabbitMQ: started exactly once across retries and operator
restarts (kill -9 mid-reconcile), suspend, deletion stops it; restarts duplicate no children."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path
from typing import Any

import aio_pika
import asyncpg

from stoa_devenv.cluster import ControlPlane
from stoa_devenv.postgres import PostgresServer
from stoa_devenv.rabbitmq import RabbitMQServer
from tests.e2e.operator.harness import Cluster, OperatorProcess, cond, settled, wait_for, wait_object


def _agent(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "stoa.dev/v1alpha1",
        "kind": "Agent",
        "metadata": {"name": name},
        "spec": {"role": "member", "persona": f"You are {name}.", "modelPolicyRef": {"name": "talk-models"}},
    }


POLICY = {
    "apiVersion": "stoa.dev/v1alpha1",
    "kind": "ModelPolicy",
    "metadata": {"name": "talk-models"},
    "spec": {"targets": [{"name": "local", "baseURL": "http://127.0.0.1:9/v1", "model": "smollm2-135m"}]},
}


async def _db_counts(dsn: str, name: str) -> tuple[int, int, str | None]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT id, phase FROM stoa.conversations WHERE name = $1", name)
        outbox = 0
        if rows:
            outbox = await conn.fetchval(
                "SELECT count(*) FROM stoa.outbox WHERE conversation_id = $1", rows[0]["id"]
            )
        return len(rows), int(outbox), rows[0]["phase"] if rows else None
    finally:
        await conn.close()


async def _queue_depth(url: str, queue: str) -> int:
    connection = await aio_pika.connect(url)
    try:
        channel = await connection.channel()
        declared = await channel.declare_queue(queue, passive=True)
        return int(declared.declaration_result.message_count or 0)
    finally:
        await connection.close()


def test_conversation_starts_once_across_restarts_suspends_and_stops(
    cluster: Cluster,
    *,
    op_kubeconfig: Path,
    control_plane: ControlPlane,
    postgres: PostgresServer,
    rabbitmq: RabbitMQServer,
    operator_factory: list[OperatorProcess],
) -> None:
    ns = cluster.ns
    cluster.secret("stoa-connections", {"postgresDsn": postgres.dsn, "rabbitmqUrl": rabbitmq.url})
    suffix = uuid.uuid4().hex[:5]
    first, second = f"a-{suffix}", f"b-{suffix}"
    cluster.create("modelpolicies", POLICY)  # no gateway pod runs here (no node): it does not hold the start
    for name in (first, second):
        cluster.create("agents", _agent(name))
    log = control_plane.base / f"operator-{ns}.log"
    op = OperatorProcess(op_kubeconfig, [ns], log).start()
    operator_factory.append(op)
    # Agents report runtime status from Postgres (no turns yet): RuntimeSynced=True.
    wait_for(
        lambda: settled(cluster.get("agents", first), "RuntimeSynced", "True"), 60, "agent RuntimeSynced"
    )

    conv = {
        "apiVersion": "stoa.dev/v1alpha1",
        "kind": "Conversation",
        "metadata": {"name": "talk"},
        "spec": {
            "topic": "Tabs or spaces?",
            "participants": [{"agentRef": first}, {"agentRef": second}],
            "maxTurns": 4,
        },
    }
    created = cluster.create("conversations", conv)
    uid = created["metadata"]["uid"]
    # Kill -9 while the create handler is (likely) running, then start a fresh operator: kopf's in-memory
    # progress is gone; the runtime's idempotent start must keep it to one conversation, one kickoff.
    time.sleep(0.3)
    op.kill()
    op = OperatorProcess(op_kubeconfig, [ns], log).start()
    operator_factory.append(op)
    obj = wait_object(
        cluster,
        "conversations",
        "talk",
        lambda o: bool((o.get("status") or {}).get("conversationId")),
        60,
    )
    assert obj["status"]["conversationId"] == uid
    assert obj["status"]["phase"] == "Pending"  # no kubelet: nobody consumes turn 1
    assert f"stoa transcript {ns}/talk " in obj["status"]["transcript"]
    assert cond(obj, "Progressing")["status"] == "True"
    assert obj["metadata"]["finalizers"] == ["stoa.dev/finalizer"]

    # Retry + another restart: reconciles run again (timer every 2 s), nothing is started twice.
    op.kill()
    op = OperatorProcess(op_kubeconfig, [ns], log).start()
    operator_factory.append(op)
    cluster.patch("conversations", "talk", {"metadata": {"labels": {"poke": "1"}}})
    time.sleep(6)
    rows, outbox, phase = asyncio.run(_db_counts(postgres.dsn, f"{ns}/talk"))
    assert (rows, outbox, phase) == (1, 1, "Pending")
    assert asyncio.run(_queue_depth(rabbitmq.url, f"stoa.agent.{ns}.{first}")) == 1
    assert asyncio.run(_queue_depth(rabbitmq.url, f"stoa.agent.{ns}.{second}")) == 0

    # suspend: true pauses it (in Postgres and in status).
    cluster.patch("conversations", "talk", {"spec": {"suspend": True}})
    wait_object(
        cluster,
        "conversations",
        "talk",
        lambda o: o["status"].get("phase") == "Suspended" and settled(o, "Ready", "True"),
        30,
    )
    assert asyncio.run(_db_counts(postgres.dsn, f"{ns}/talk"))[2] == "Suspended"

    # Deleting the resource stops the conversation (finalizer) and keeps the transcript (default policy),
    # archived under <name>@<uid8> so that the name is free for a new Conversation.
    cluster.delete("conversations", "talk")
    wait_for(lambda: cluster.get("conversations", "talk") is None, 30, "finalizer released")
    rows, _, phase = asyncio.run(_db_counts(postgres.dsn, f"{ns}/talk@{uid.replace('-', '')[:8]}"))
    assert (rows, phase) == (1, "Failed")
    assert asyncio.run(_db_counts(postgres.dsn, f"{ns}/talk"))[0] == 0


def test_restart_mid_reconcile_duplicates_nothing(
    cluster: Cluster,
    op_kubeconfig: Path,
    control_plane: ControlPlane,
    operator_factory: list[OperatorProcess],
) -> None:
    ns = cluster.ns
    cluster.secret(
        "stoa-connections",
        {"postgresDsn": "postgresql://x@127.0.0.1:1/none", "rabbitmqUrl": "amqp://x@127.0.0.1:1/"},
    )
    names = [f"r{i}" for i in range(12)]
    log = control_plane.base / f"operator-{ns}.log"
    op = OperatorProcess(op_kubeconfig, [ns], log).start()
    operator_factory.append(op)
    cluster.create("modelpolicies", POLICY)
    for name in names:
        cluster.create("agents", _agent(name))
    wait_for(lambda: cluster.deployment("agent-r0"), 30, "first Deployment")
    op.kill()  # some agents reconciled, some not
    op = OperatorProcess(op_kubeconfig, [ns], log).start()
    operator_factory.append(op)
    for name in names:
        wait_object(cluster, "agents", name, lambda o: settled(o, "Progressing", "True"), 60)
    # (and the namespace's gateway for their ModelPolicy, checked elsewhere)
    deployments = [
        d for d in cluster.apps.list_namespaced_deployment(ns).items if d.metadata.name != "stoa-gateway"
    ]
    assert sorted(d.metadata.name for d in deployments) == sorted(f"agent-{n}" for n in names)
    # Server-side apply cannot create a second object of a name, so what a restart could duplicate is
    # ownership and field management: each Deployment is owned once, by its own Agent (uid), and is
    # managed (applied) by the operator's one field manager only.
    uids = {n: (cluster.get("agents", n) or {})["metadata"]["uid"] for n in names}
    for d in deployments:
        agent = d.metadata.name.removeprefix("agent-")
        owners = [(o.kind, o.name, o.uid) for o in d.metadata.owner_references]
        assert owners == [("Agent", agent, uids[agent])]
        applied = {f.manager for f in d.metadata.managed_fields if f.operation == "Apply"}
        assert applied == {"stoa-operator"}, applied

    # One rollout each: no spec flapping between two writers. The controller-manager creates the
    # ReplicaSets asynchronously, so wait until each Deployment has one, then check none has two.
    def replica_sets() -> list[Any]:
        items = cluster.apps.list_namespaced_replica_set(ns).items
        return [r for r in items if r.metadata.name.startswith("agent-")]

    wait_for(lambda: len(replica_sets()) >= len(names), 30, "a ReplicaSet per Deployment")
    assert len(replica_sets()) == len(names)
    assert all(d.metadata.generation == 1 for d in deployments)
