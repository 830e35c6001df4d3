"""Rate limits (per target, per agent) working together with fallback, and the daily budget."""

from __future__ import annotations

import aiohttp

from stoa_testing.gateway import FakeFactory, GatewayFactory, ask, chat, metric, target


async def test_target_rpm_limit_falls_back_then_rejects_with_retry_after(
    fake: FakeFactory, gateway: GatewayFactory, http: aiohttp.ClientSession
) -> None:
    cheap = await fake(replies=["cheap"])
    spare = await fake(replies=["spare"])
    gw = await gateway(
        {
            "both": {"targets": [target("cheap", cheap, rpm=2), target("spare", spare, rpm=1)]},
            "solo": {"targets": [target("cheap", cheap, rpm=2)]},
        }
    )

    answers = [(await chat(http, gw, ask("both")))[1]["choices"][0]["message"]["content"] for _ in range(3)]
    assert answers == ["cheap", "cheap", "spare"]  # the limit moves traffic to the next target

    async with http.post(f"{gw.base_url}/chat/completions", json=ask("both")) as resp:
        body = await resp.json()
        assert resp.status == 429
        assert int(resp.headers["Retry-After"]) >= 1
    assert body["error"]["code"] == "rate_limited"
    assert cheap.chat_requests == 2
    assert spare.chat_requests == 1

    assert (await chat(http, gw, ask("solo")))[0] == 200
    assert (await chat(http, gw, ask("solo")))[0] == 200
    assert (await chat(http, gw, ask("solo")))[0] == 429  # limits are per policy and target
    assert await metric(http, gw, "stoa_gateway_rate_limited_total", policy="both", scope="policy") == 1
    assert any(e["event"] == "rate_limited" for e in gateway.audit())


async def test_target_tpm_limit_counts_input_and_output_tokens(
    fake: FakeFactory, gateway: GatewayFactory, http: aiohttp.ClientSession
) -> None:
    small = await fake(replies=["x" * 200])  # 50 output tokens
    big = await fake(replies=["big"])
    gw = await gateway({"chat": {"targets": [target("small", small, tpm=120), target("big", big)]}})

    prompt = "y" * 200  # 50 input tokens
    first = await chat(http, gw, ask("chat", prompt))
    second = await chat(http, gw, ask("chat", prompt))

    assert first[2]["X-Stoa-Target"] == "small"
    assert second[2]["X-Stoa-Target"] == "big"  # 100 used + 50 estimated > 120
    assert small.chat_requests == 1
    assert await metric(http, gw, "stoa_gateway_input_tokens_total", target="small") == 50
    assert await metric(http, gw, "stoa_gateway_output_tokens_total", target="small") == 50


async def test_per_agent_limits(
    fake: FakeFactory, gateway: GatewayFactory, http: aiohttp.ClientSession
) -> None:
    model = await fake()
    gw = await gateway(
        {
            "chat": {
                "targets": [target("m", model)],
                "rateLimit": {"perAgent": {"rpm": 1}, "agents": [{"agent": "planner", "rpm": 3}]},
            }
        }
    )
    writer = {"X-Stoa-Agent": "writer"}
    planner = {"X-Stoa-Agent": "planner"}

    assert (await chat(http, gw, ask("chat"), writer))[0] == 200
    status, body, headers = await chat(http, gw, ask("chat"), writer)
    assert status == 429
    assert body["error"]["code"] == "agent_rate_limited"
    assert "writer" in body["error"]["message"]
    assert int(headers["Retry-After"]) >= 1
    assert [(await chat(http, gw, ask("chat"), planner))[0] for _ in range(4)] == [200, 200, 200, 429]
    assert await metric(http, gw, "stoa_gateway_rate_limited_total", scope="agent", name="writer") == 1


async def test_daily_budget_caps_spend(
    fake: FakeFactory, gateway: GatewayFactory, http: aiohttp.ClientSession
) -> None:
    model = await fake(replies=["z" * 400])  # 100 output tokens
    gw = await gateway(
        {
            "chat": {
                "targets": [target("m", model, inputCostPer1k=1.0, outputCostPer1k=10.0)],
                "budget": {"dailyLimitUSD": 1.5},
            }
        }
    )

    assert (await chat(http, gw, ask("chat", "q" * 40)))[0] == 200  # 10 in, 100 out: 1.01 USD
    assert (await chat(http, gw, ask("chat", "q" * 40)))[0] == 200  # 2.02 USD: over the cap now
    status, body, headers = await chat(http, gw, ask("chat"))

    assert status == 429
    assert body["error"]["code"] == "budget_exceeded"
    assert 0 < int(headers["Retry-After"]) <= 86400
    assert model.chat_requests == 2
    assert abs(await metric(http, gw, "stoa_gateway_cost_usd_total", policy="chat") - 2.02) < 1e-6
    assert any(e["event"] == "budget_exceeded" for e in gateway.audit())
