"""Strategies and routing rules: weighted split, cheap model for short prompts, headers, pinning."""

from __future__ import annotations

import asyncio
from collections import Counter

import aiohttp

from stoa_testing.fake_provider import Behaviour
from stoa_testing.gateway import FakeFactory, GatewayFactory, ask, chat, target


async def test_weighted_split_within_tolerance(
    fake: FakeFactory, gateway: GatewayFactory, http: aiohttp.ClientSession
) -> None:
    a = await fake()
    b = await fake()
    gw = await gateway(
        {"chat": {"strategy": "weighted", "targets": [target("a", a, weight=3), target("b", b, weight=1)]}}
    )

    served = Counter([(await chat(http, gw, ask("chat")))[2]["X-Stoa-Target"] for _ in range(200)])

    assert served["a"] + served["b"] == 200
    assert 0.62 <= served["a"] / 200 <= 0.88  # 0.75 expected; > 4 standard deviations of slack


async def test_round_robin_alternates(
    fake: FakeFactory, gateway: GatewayFactory, http: aiohttp.ClientSession
) -> None:
    a = await fake()
    b = await fake()
    gw = await gateway({"chat": {"strategy": "roundRobin", "targets": [target("a", a), target("b", b)]}})

    served = [(await chat(http, gw, ask("chat")))[2]["X-Stoa-Target"] for _ in range(4)]

    assert served in (["a", "b", "a", "b"], ["b", "a", "b", "a"])


async def test_least_busy_avoids_the_busy_target(
    fake: FakeFactory, gateway: GatewayFactory, http: aiohttp.ClientSession
) -> None:
    a = await fake(default=Behaviour(latency=0.5))
    b = await fake()
    gw = await gateway({"chat": {"strategy": "leastBusy", "targets": [target("a", a), target("b", b)]}})

    slow = asyncio.create_task(chat(http, gw, ask("chat")))
    for _ in range(500):
        if a.state.in_flight:
            break
        await asyncio.sleep(0.01)
    served = [(await chat(http, gw, ask("chat")))[2]["X-Stoa-Target"] for _ in range(3)]
    assert (await slow)[2]["X-Stoa-Target"] == "a"

    assert served == ["b", "b", "b"]


async def test_short_prompts_go_to_the_cheap_model(
    fake: FakeFactory, gateway: GatewayFactory, http: aiohttp.ClientSession
) -> None:
    cheap = await fake(replies=["cheap"])
    large = await fake(replies=["large"])
    gw = await gateway(
        {
            "chat": {
                "targets": [target("large", large), target("cheap", cheap)],
                "routes": [
                    {
                        "name": "short",
                        "match": {"maxInputTokens": 50},
                        "targets": ["cheap"],
                        "fallbackTargets": ["large"],
                    }
                ],
            }
        }
    )

    short = await chat(http, gw, ask("chat", "What is 2+2?"))
    long = await chat(http, gw, ask("chat", "Explain this contract. " * 40))

    assert short[2]["X-Stoa-Target"] == "cheap"
    assert long[2]["X-Stoa-Target"] == "large"
    cheap.set_default(Behaviour(status=503))
    assert (await chat(http, gw, ask("chat", "hi")))[2]["X-Stoa-Target"] == "large"  # the rule's fallback


async def test_tier_header_and_agent_routes(
    fake: FakeFactory, gateway: GatewayFactory, http: aiohttp.ClientSession
) -> None:
    premium = await fake()
    standard = await fake()
    coder = await fake()
    gw = await gateway(
        {
            "chat": {
                "targets": [target("standard", standard), target("premium", premium), target("coder", coder)],
                "routes": [
                    {
                        "name": "gold",
                        "match": {"headers": [{"name": "X-Stoa-Tier", "values": ["gold"]}]},
                        "targets": ["premium"],
                    },
                    {"name": "code", "match": {"agents": ["coder"]}, "targets": ["coder"]},
                    {"name": "rest", "targets": ["standard"]},
                ],
            }
        }
    )

    assert (await chat(http, gw, ask("chat"), {"X-Stoa-Tier": "gold"}))[2]["X-Stoa-Target"] == "premium"
    assert (await chat(http, gw, ask("chat"), {"X-Stoa-Agent": "coder"}))[2]["X-Stoa-Target"] == "coder"
    assert (await chat(http, gw, ask("chat"), {"X-Stoa-Tier": "silver"}))[2]["X-Stoa-Target"] == "standard"


async def test_pinned_target(fake: FakeFactory, gateway: GatewayFactory, http: aiohttp.ClientSession) -> None:
    a = await fake()
    b = await fake()
    gw = await gateway({"chat": {"targets": [target("a", a), target("b", b)]}})

    assert (await chat(http, gw, ask("chat/b")))[2]["X-Stoa-Target"] == "b"
    status, body, _ = await chat(http, gw, ask("chat/zzz"))
    assert status == 404
    assert "zzz" in body["error"]["message"]
