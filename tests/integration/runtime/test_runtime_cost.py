"""The cost of each turn comes from its source: the gateway's price of the target that answered (after a
failover: the backup's), or in direct mode the configured price, or 0 marked unpriced; never a guess.
Totals (conversation, per agent, agent) are the sums of what was stored."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

import pytest

from stoa_agents.control import agent_status, conversation_status
from stoa_devenv.postgres import PostgresServer
from stoa_devenv.rabbitmq import RabbitMQServer
from stoa_testing.fake_provider import Behaviour, RunningFake, start_fake_provider
from stoa_testing.gateway import GatewayFactory
from tests.integration.runtime.harness import Cluster, distinct_replies, unique_prefix

TURNS = 4
PRIMARY = {"inputCostPer1k": 0.5, "outputCostPer1k": 1.5}  # what a wrong answer would charge
BACKUP = {"inputCostPer1k": 0.003, "outputCostPer1k": 0.006}


async def _turns(cluster: Cluster, name: str) -> list[dict[str, Any]]:
    status = await conversation_status(cluster.db, name)
    assert status is not None
    rows = await cluster.db.fetch(
        "SELECT seq, speaker, tokens_in, tokens_out, cost_usd, cost_source, model, target FROM stoa.turns"
        " WHERE conversation_id = $1 ORDER BY seq",
        uuid.UUID(status.id),
    )
    return [{**dict(r), "cost_usd": float(r["cost_usd"])} for r in rows]


async def _check_totals(cluster: Cluster, name: str, turns: list[dict[str, Any]]) -> None:
    status = await conversation_status(cluster.db, name)
    assert status is not None
    assert status.cost_usd == pytest.approx(sum(t["cost_usd"] for t in turns), abs=1e-8)
    assert status.unpriced_turns == sum(t["cost_source"] == "unpriced" for t in turns)
    for agent in cluster.agents:
        mine = [t for t in turns if t["speaker"] == agent]
        share = status.agents[agent]
        assert share.cost_usd == pytest.approx(sum(t["cost_usd"] for t in mine), abs=1e-8)
        assert share.unpriced_turns == sum(t["cost_source"] == "unpriced" for t in mine)
        totals = await agent_status(cluster.db, agent, cluster.namespace)
        assert totals.cost_usd == pytest.approx(share.cost_usd, abs=1e-8)  # one conversation per agent
        assert totals.unpriced_turns == share.unpriced_turns


@pytest.mark.slow
async def test_turn_cost_comes_from_its_source(
    postgres: PostgresServer, rabbitmq: RabbitMQServer, runtime_logs: Path, tmp_path: Path
) -> None:
    failing = await start_fake_provider(default=Behaviour(status=500))
    backup = await start_fake_provider(replies=distinct_replies())
    direct = await start_fake_provider(replies=distinct_replies())
    reporting = await start_fake_provider(replies=distinct_replies(), default=Behaviour(cost=0.00125))
    gateways = GatewayFactory(tmp_path)
    target = {"model": "m"}
    gw = await gateways(
        {
            "priced": {
                "targets": [
                    {"name": "primary", "baseURL": failing.base_url, **target, **PRIMARY},
                    {"name": "backup", "baseURL": backup.base_url, "model": "backup-model", **BACKUP},
                ],
                "retry": {"retryOnStatuses": [], "failoverOnStatuses": [500]},
            }
        }
    )
    fakes: list[RunningFake] = [failing, backup, direct, reporting]

    def start(prefix: str, model_url: str, env: dict[str, str] | None = None) -> Awaitable[Cluster]:
        return Cluster.start(
            prefix=unique_prefix(prefix),
            postgres_dsn=postgres.dsn,
            rabbitmq_url=rabbitmq.url,
            model_url=model_url,
            log_dir=runtime_logs,
            agents=2,
            replicas=1,
            env=env,
        )

    clusters = await asyncio.gather(
        start("cg", gw.base_url, {"STOA_MODEL_NAME": "priced"}),
        start(
            "cp",
            direct.base_url,
            {"STOA_MODEL_INPUT_COST_PER_1K": "0.002", "STOA_MODEL_OUTPUT_COST_PER_1K": "0.004"},
        ),
        start("cu", direct.base_url),
        start("cr", reporting.base_url, {"STOA_MODEL_INPUT_COST_PER_1K": "0.002"}),
    )
    via_gateway, priced, unpriced, reported = clusters
    try:
        names = [(await c.start_conversations(1, max_turns=TURNS))[0] for c in clusters]
        await asyncio.gather(*(c.wait_finished([n], within=90) for c, n in zip(clusters, names, strict=True)))
        for cluster, name in zip(clusters, names, strict=True):
            assert await cluster.check_exactly_once(name, TURNS) == TURNS

        # Through the gateway, the primary failing: every turn carries the backup's price, model, target.
        turns = await _turns(via_gateway, names[0])
        assert failing.state.chat_requests >= 1  # the primary was tried (then skipped by its breaker)
        for t in turns:
            assert (t["cost_source"], t["target"], t["model"]) == ("reported", "backup", "backup-model")
            expected = (
                t["tokens_in"] * BACKUP["inputCostPer1k"] + t["tokens_out"] * BACKUP["outputCostPer1k"]
            ) / 1000
            assert t["tokens_in"] > 0
            assert t["cost_usd"] == pytest.approx(expected, abs=1e-8)
        await _check_totals(via_gateway, names[0], turns)

        # Direct, with a configured price: tokens x price.
        turns = await _turns(priced, names[1])
        for t in turns:
            assert (t["cost_source"], t["target"]) == ("policy", None)
            assert t["cost_usd"] == pytest.approx(
                (t["tokens_in"] * 0.002 + t["tokens_out"] * 0.004) / 1000, abs=1e-8
            )
        await _check_totals(priced, names[1], turns)

        # Direct, no price known: 0, marked unpriced, counted in the totals.
        turns = await _turns(unpriced, names[2])
        assert {(t["cost_source"], t["cost_usd"]) for t in turns} == {("unpriced", 0.0)}
        await _check_totals(unpriced, names[2], turns)
        status = await conversation_status(unpriced.db, names[2])
        assert status is not None
        assert status.unpriced_turns == TURNS

        # An endpoint that reports usage.cost (OpenRouter does): exactly that, over a configured price.
        turns = await _turns(reported, names[3])
        assert {(t["cost_source"], t["cost_usd"]) for t in turns} == {("reported", 0.00125)}
        await _check_totals(reported, names[3], turns)
    finally:
        await asyncio.gather(*(c.close() for c in clusters))
        for gateway in gateways.running:
            await gateway.close()
        for fake in fakes:
            await fake.close()
