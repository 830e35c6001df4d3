"""Two namespaces with Agents of the same names on ONE RabbitMQ vhost and ONE database (the Helm chart's
bundled mode): each namespace's conversation is handled only by its own namespace's replicas, and
activity, totals and memory stay per namespace."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest

from stoa_agents.control import agent_status, conversation_status
from stoa_agents.identity import memory_schema
from stoa_agents.turns.policy import Phase
from stoa_devenv.postgres import PostgresServer
from stoa_devenv.rabbitmq import RabbitMQServer
from stoa_testing.fake_provider import RunningFake
from tests.integration.runtime.harness import Cluster, unique_prefix

AGENTS = ["moderator", "team-a", "team-b"]
TURNS = 9


@pytest.mark.slow
async def test_same_agent_names_in_two_namespaces_do_not_share_turns_status_or_memory(
    postgres: PostgresServer, rabbitmq: RabbitMQServer, fake_model: RunningFake, runtime_logs: Path
) -> None:
    namespaces = [unique_prefix("ns-a"), unique_prefix("ns-b")]
    clusters: list[Cluster] = []
    try:
        for ns in namespaces:
            clusters.append(
                await Cluster.start(
                    prefix=ns,
                    postgres_dsn=postgres.dsn,
                    rabbitmq_url=rabbitmq.url,  # one vhost
                    model_url=fake_model.base_url,
                    log_dir=runtime_logs,
                    namespace=ns,
                    agent_names=AGENTS,
                )
            )
        # Start both before waiting for either: the two conversations run concurrently.
        names = [(await c.start_conversations(1, max_turns=TURNS, label="iso"))[0] for c in clusters]
        assert names == [f"{ns}/moderator-iso0" for ns in namespaces]
        await asyncio.gather(
            *(c.wait_finished([n], within=120) for c, n in zip(clusters, names, strict=True))
        )

        db = clusters[0].db  # one database
        for ns, cluster, name in zip(namespaces, clusters, names, strict=True):
            assert await cluster.check_exactly_once(name, TURNS) == TURNS
            status = await conversation_status(db, name)
            assert status is not None
            assert status.phase is Phase.SUCCEEDED
            conv_id = uuid.UUID(status.id)
            turns = await db.fetch("SELECT speaker, pod FROM stoa.turns WHERE conversation_id = $1", conv_id)
            # Speakers stay bare Agent names; every turn came from a pod of this namespace.
            assert {t["speaker"] for t in turns} == set(AGENTS)
            assert all(t["pod"].startswith(f"{ns}-") for t in turns), [t["pod"] for t in turns]
            processed = await db.fetch(
                "SELECT DISTINCT agent FROM stoa.processed_messages WHERE conversation_id = $1", conv_id
            )
            assert {r["agent"] for r in processed} == {f"{ns}/{a}" for a in AGENTS}
            for agent in AGENTS:
                st = await agent_status(db, agent, ns)
                assert st.active_pod is not None
                assert st.active_pod.startswith(f"{ns}-{agent}-"), st.active_pod
                assert st.turns_handled == status.agents[agent].turns
                notes = await db.fetch(f"SELECT conversation_id FROM {memory_schema(f'{ns}/{agent}')}.memory")  # noqa: S608
                assert {r["conversation_id"] for r in notes} == {conv_id}
                assert len(notes) == st.turns_handled
        # Nothing of these namespaces was recorded under the unscoped identity of these names (which
        # ``stoa run`` tests in the same session may use).
        for agent in AGENTS:
            bare = await agent_status(db, agent)
            assert not (bare.active_pod or "").startswith(tuple(namespaces)), bare.active_pod
    finally:
        for cluster in clusters:
            await cluster.close()
