"""A real Prometheus scrapes a live gateway and live agent replicas; injected failures fire the alerts.

Agents (subprocess replicas, namespace ``obs``) debate through an in-process gateway whose primary target
fails (the breaker opens, requests fail over); then every target fails, so turns and conversations fail.
Prometheus (Debian's, 1 s scrape and evaluation) loads the shipped alerts and the SLO rules of one Agent
and one ModelPolicy. The test waits for the alerts to fire, and checks that every metric the dashboard
names exists in the scrape and that every dashboard query runs.

The shipped alerts wait (``for: 1m`` .. ``10m``) before firing; their timing is covered by
``promtool test rules`` (test_rules_promtool.py). Here the same expressions run with ``for`` removed, so
a one-minute test proves they match real series, labels included.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aio_pika
import aiohttp
import pytest
import yaml

from stoa_agents.bus.broker import Bus
from stoa_agents.bus.topology import queue_name
from stoa_agents.identity import agent_key
from stoa_devenv.postgres import PostgresServer
from stoa_devenv.prometheus import PrometheusServer, Target
from stoa_devenv.rabbitmq import RabbitMQServer
from stoa_gateway.server import RunningGateway
from stoa_telemetry.dashboard import concrete, panel_queries
from stoa_telemetry.rules import agent_rules, policy_rules
from stoa_telemetry.shipped import shipped_rules
from stoa_telemetry.spec import AgentSLO, PolicySLO
from stoa_testing.fake_provider import Behaviour, RunningFake, start_fake_provider
from stoa_testing.gateway import GatewayFactory, ask, chat, chat_stream, target
from tests.integration.runtime.harness import Cluster, distinct_replies

NS = "obs"
METRIC = re.compile(r"\b((?:stoa|gen_ai)_[a-z0-9_]+|stoa:[a-z0-9_:]+)\b")
GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")


def metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression (label names in grouping clauses and selectors excluded)."""
    return set(METRIC.findall(re.sub(r"\{[^}]*\}", "", GROUPING.sub("", expr))))


def _without_for(rules: dict[str, Any]) -> dict[str, Any]:
    return {
        "groups": [
            {**g, "rules": [{k: v for k, v in r.items() if k != "for"} for r in g["rules"]]}
            for g in rules["groups"]
        ]
    }


@pytest.fixture
async def providers() -> AsyncIterator[tuple[RunningFake, RunningFake]]:
    primary = await start_fake_provider(default=Behaviour(status=503), replies=distinct_replies())
    backup = await start_fake_provider(replies=distinct_replies())
    yield primary, backup
    await primary.close()
    await backup.close()


async def _until_scraped(prom: PrometheusServer, count: int, within: float = 60.0) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        up = prom.query("sum(up)")
        zeros = prom.query('count(stoa_agent_turns_total{outcome="model-failed"})')
        if up and float(up[0]["value"][1]) == count and zeros and float(zeros[0]["value"][1]) == count - 1:
            return
        await asyncio.sleep(0.5)
    raise AssertionError(f"Prometheus did not scrape all {count} targets: {prom.targets_up()}")


async def _steady_traffic(http: aiohttp.ClientSession, gw: RunningGateway) -> None:
    """Direct requests, 5 a second: each passes over the failing primary (a failover), then fails."""
    while True:
        await chat(http, gw, ask("chat"))
        await asyncio.sleep(0.2)


def _firing(prom: PrometheusServer) -> dict[str, list[dict[str, str]]]:
    firing: dict[str, list[dict[str, str]]] = {}
    for alert in prom.alerts():
        if alert["state"] == "firing":
            firing.setdefault(alert["labels"]["alertname"], []).append(alert["labels"])
    return firing


def _rule_states(prom: PrometheusServer, names: set[str]) -> list[dict[str, object]]:
    rules = [r for g in prom.api("rules")["groups"] for r in g["rules"] if r.get("name") in names]
    return [{k: r.get(k) for k in ("name", "state", "health", "lastError", "query", "alerts")} for r in rules]


def _pages(firing: dict[str, list[dict[str, str]]]) -> set[str]:
    return {labels["slo"] for labels in firing.get("StoaSLOBurnRatePage", [])}


async def _until_firing(
    prom: PrometheusServer, wanted: set[str], pages: set[str], within: float
) -> dict[str, list[dict[str, str]]]:
    deadline = time.monotonic() + within
    firing: dict[str, list[dict[str, str]]] = {}
    while time.monotonic() < deadline:
        firing = _firing(prom)
        if wanted <= set(firing) and pages <= _pages(firing):
            return firing
        await asyncio.sleep(1)
    raise AssertionError(
        f"not firing after {within:.0f}s: {sorted(wanted - set(firing))},"
        f" pages {sorted(pages - _pages(firing))}; firing: {sorted(firing)}; targets: {prom.targets_up()};"
        f" rules: {_rule_states(prom, wanted - set(firing))}"
    )


async def test_live_scrape_fires_the_alerts_and_feeds_every_dashboard_panel(
    postgres: PostgresServer,
    rabbitmq: RabbitMQServer,
    providers: tuple[RunningFake, RunningFake],
    tmp_path: Path,
) -> None:
    primary, backup = providers
    factory = GatewayFactory(tmp_path)
    chat_policy = {
        "targets": [target("primary", primary), target("backup", backup, outputCostPer1k=0.002)],
        "retry": {"attempts": 3, "baseBackoffSeconds": 0.01},
        "circuitBreaker": {"minRequests": 3, "openSeconds": 600},
        "healthCheck": {"intervalSeconds": 1, "unhealthyThreshold": 100},
        "slo": {
            "availability": {"objective": 99.9},
            "timeToFirstToken": {"objective": 99, "thresholdSeconds": 1},
        },
    }
    policies: dict[str, dict[str, Any]] = {
        "chat": chat_policy,
        # Direct requests only: a tiny rpm (rate-limit hits) and a budget made nearly spent below.
        "limited": {"targets": [target("backup", backup, rpm=1)]},
        "spendy": {
            "targets": [target("backup", backup, outputCostPer1k=1.0)],
            "budget": {"dailyLimitUSD": 100},
        },
    }
    gw: RunningGateway = await factory(policies, reload_interval=0.5)
    prefix = f"o{uuid.uuid4().hex[:4]}"
    cluster = await Cluster.start(
        prefix=prefix,
        postgres_dsn=postgres.dsn,
        rabbitmq_url=rabbitmq.url,
        model_url=gw.base_url,
        log_dir=tmp_path / "agents",
        replicas=2,
        metrics=True,
        namespace=NS,
        env={"STOA_MODEL_NAME": "chat", "STOA_MODEL_RETRIES": "0"},
    )
    moderator = cluster.agents[0]
    agent_slo = AgentSLO.model_validate(
        {"availability": {"objective": 99.9}, "latency": {"objective": 99, "thresholdSeconds": 10}}
    )
    rule_file = tmp_path / "rules.yaml"
    groups = [
        *_without_for(shipped_rules())["groups"],
        *agent_rules(NS, moderator, agent_slo)["groups"],
        *policy_rules(NS, "chat", PolicySLO.model_validate(chat_policy["slo"]))["groups"],
    ]
    rule_file.write_text(yaml.safe_dump({"groups": groups}, sort_keys=False))
    targets = [Target("gateway", f"127.0.0.1:{gw.port}", {"namespace": NS, "pod": "stoa-gateway-0"})]
    targets += [
        Target("agents", f"127.0.0.1:{r.metrics_port}", {"namespace": NS, "pod": r.pod})
        for r in cluster.fleet.members.values()
    ]
    prom = PrometheusServer(interval="2s").start(targets, [rule_file])
    try:
        # Failures are injected only once Prometheus holds every target's zero-valued series: a counter
        # first seen at 1 has no increase (on a loaded machine the first scrapes may time out).
        await _until_scraped(prom, len(targets))
        async with aiohttp.ClientSession() as http:
            # Phase 1: the primary fails, the backup answers; the breaker opens; one stream, direct calls.
            names = await cluster.start_conversations(2, max_turns=6, label="ok")
            await cluster.wait_finished(names, within=120)
            # Each passes over the open primary. rate() divides by its whole 5m window, so a minute-old test
            # needs more than 50 failovers to show over 10 per minute.
            for _ in range(150):
                status, _, headers = await chat(http, gw, ask("chat"))
                assert (status, headers["X-Stoa-Target"]) == (200, "backup")
            status, events = await chat_stream(http, gw, ask("chat"))
            assert (status, events[-1]) == (200, "[DONE]")
            assert (await chat(http, gw, ask("limited")))[0] == 200
            assert (await chat(http, gw, ask("limited")))[0] == 429
            assert (await chat(http, gw, ask("spendy")))[0] == 200
            async with http.get(f"{gw.url}/v1/stoa/status") as response:
                spent = (await response.json())["policies"]["spendy"]["spentTodayUSD"]
            assert spent > 0
            policies["spendy"]["budget"] = {"dailyLimitUSD": round(spent / 0.95, 9)}  # 95% spent
            factory.write(policies)
            # A malformed message dead-letters (stoa_agent_dead_lettered_total), and a kill -9 of an active
            # replica makes its standby take over (stoa_agent_takeovers_total).
            bus = await Bus.connect(rabbitmq.url, name="stoa-obs-test")
            await bus.channel.default_exchange.publish(
                _message(b"not json"), routing_key=queue_name(agent_key(NS, cluster.agents[1]))
            )
            await bus.close()
            active = next(
                r for r in cluster.fleet.members.values() if r.agent.endswith(moderator) and r.index == 0
            )
            cluster.fleet.restart = False  # the killed replica stays down: its metrics port is not re-scraped
            cluster.fleet.kill(active.pod)
            more = await cluster.start_conversations(1, max_turns=3, label="after-kill")
            await cluster.wait_finished(more, within=120)

            # Phase 2: every target fails: turns fail their conversations (in two rounds, so that each
            # failure counter moves while Prometheus already scrapes it).
            backup.set_default(Behaviour(status=503))
            for round_ in ("fail", "fail-again"):
                failing = await cluster.start_conversations(3, max_turns=6, label=round_)
                await cluster.wait_finished(failing, within=120)
                await asyncio.sleep(3)

            wanted = {
                "StoaGatewayErrorRateHigh",
                "StoaGatewayCircuitOpen",
                "StoaGatewayFailoversHigh",
                "StoaSpendBudgetNearExhaustion",
                "StoaConversationsFailing",
                "StoaDeadLetteredMessages",
                "StoaSLOBurnRatePage",
                "StoaSLOBurnRateTicket",
            }
            pages = {f"agent/{NS}/{moderator}/availability", f"policy/{NS}/chat/availability"}
            traffic = asyncio.create_task(_steady_traffic(http, gw))  # keeps failing over while we wait
            try:
                firing = await _until_firing(prom, wanted, pages, within=120)
            finally:
                traffic.cancel()
            assert {"namespace": NS, "policy": "chat", "target": "primary"}.items() <= firing[
                "StoaGatewayCircuitOpen"
            ][0].items()
            failing_agents = {labels["agent"] for labels in firing["StoaConversationsFailing"]}
            assert moderator in failing_agents
            print("Alerts firing:", {name: len(v) for name, v in sorted(firing.items())})

            # Every metric a dashboard panel names is in the scrape (or recorded by the SLO rules) ...
            names_seen = prom.metric_names()
            named = {m for _, q in panel_queries() for m in metric_names(q)}
            assert len(named) >= 29
            missing = sorted(named - names_seen)
            assert not missing, f"dashboard metrics absent from the scrape: {missing}"
            # ... and every panel query runs and returns data.
            empty = [title for title, q in panel_queries() if not prom.query(concrete(q, rate_interval="1m"))]
            assert not empty, f"dashboard panels without data: {empty}"
    finally:
        prom.destroy()
        await cluster.close()
        for running in factory.running:
            await running.close()


def _message(body: bytes) -> aio_pika.Message:
    return aio_pika.Message(
        body, message_id=f"malformed-{uuid.uuid4().hex[:6]}", delivery_mode=aio_pika.DeliveryMode.PERSISTENT
    )
