"""Per-call cost from its source: ``usage.cost``, ``model``, ``X-Stoa-Target`` and ``X-Stoa-Cost-USD``."""

from __future__ import annotations

import json
from decimal import Decimal

import aiohttp

from stoa_testing.fake_provider import Behaviour
from stoa_testing.gateway import FakeFactory, GatewayFactory, ask, chat, chat_stream, target


async def test_failover_answer_carries_the_backup_price(
    fake: FakeFactory, gateway: GatewayFactory, http: aiohttp.ClientSession
) -> None:
    primary = await fake(default=Behaviour(status=503))
    backup = await fake(replies=["b" * 40])  # 10 output tokens
    gw = await gateway(
        {
            "chat": {
                "targets": [
                    target("primary", primary, inputCostPer1k=100.0, outputCostPer1k=100.0),
                    target("backup", backup, inputCostPer1k=1.0, outputCostPer1k=3.0),
                ],
                "retry": {"attempts": 2},
            }
        }
    )

    status, body, headers = await chat(http, gw, ask("chat", "q" * 80))  # 20 input tokens

    assert status == 200
    assert headers["X-Stoa-Target"] == "backup"
    assert body["model"] == "model-backup"  # the model the serving target used
    expected = (20 * 1.0 + 10 * 3.0) / 1000
    assert body["usage"]["cost"] == expected
    assert (body["usage"]["prompt_tokens"], body["usage"]["completion_tokens"]) == (20, 10)
    assert Decimal(headers["X-Stoa-Cost-USD"]) == Decimal(repr(expected))
    assert "e" not in headers["X-Stoa-Cost-USD"].lower()


async def test_cost_without_provider_usage_is_estimated_and_said_so(
    fake: FakeFactory, gateway: GatewayFactory, http: aiohttp.ClientSession
) -> None:
    model = await fake(default=Behaviour(include_usage=False, reply="x" * 8))
    gw = await gateway({"chat": {"targets": [target("m", model, outputCostPer1k=1000.0)]}})

    status, body, headers = await chat(http, gw, ask("chat", "hi"))

    assert status == 200
    assert body["usage"] == {
        "prompt_tokens": 1,
        "completion_tokens": 2,
        "total_tokens": 3,
        "estimated": True,
        "cost": 2.0,
    }
    assert headers["X-Stoa-Cost-USD"] == "2"


async def test_stream_final_usage_chunk_has_the_cost(
    fake: FakeFactory, gateway: GatewayFactory, http: aiohttp.ClientSession
) -> None:
    with_usage = await fake(replies=["12345678"])
    without = await fake(default=Behaviour(include_usage=False, reply="12345678"))
    gw = await gateway(
        {
            "a": {"targets": [target("m", with_usage, outputCostPer1k=500.0)]},
            "b": {"targets": [target("m", without, outputCostPer1k=500.0)]},
        }
    )

    for policy in ("a", "b"):
        status, events = await chat_stream(http, gw, ask(policy, stream_options={"include_usage": True}))
        assert status == 200
        assert events[-1] == "[DONE]"
        last = json.loads(events[-2])
        assert last["choices"] == []
        assert last["usage"]["cost"] == 1.0  # 2 output tokens at 500 USD per 1k
        assert last["usage"]["completion_tokens"] == 2
