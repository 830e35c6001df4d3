"""The server shell: OpenAI compatibility, errors, hot reload, metrics, status and trace propagation."""

from __future__ import annotations

import asyncio

import aiohttp
import openai
import pytest

from stoa_testing.fake_provider import Behaviour
from stoa_testing.gateway import FakeFactory, GatewayFactory, ask, chat, metric, target


async def test_official_openai_client_works_unchanged(fake: FakeFactory, gateway: GatewayFactory) -> None:
    model = await fake(replies=["Hello there, friend."])
    gw = await gateway({"chat": {"targets": [target("m", model)]}})

    def use_sync_client() -> tuple[str | None, str]:
        client = openai.OpenAI(base_url=gw.base_url, api_key="unused", max_retries=0)
        completion = client.chat.completions.create(
            model="chat", messages=[{"role": "user", "content": "hi"}]
        )
        stream = client.chat.completions.create(
            model="chat", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        streamed = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        return completion.choices[0].message.content, streamed

    content, streamed = await asyncio.to_thread(use_sync_client)
    assert content == "Hello there, friend."
    assert streamed == "Hello there, friend."

    client = openai.AsyncOpenAI(base_url=gw.base_url, api_key="unused", max_retries=0)
    models = await client.models.list()
    assert [m.id for m in models.data] == ["chat"]
    with pytest.raises(openai.NotFoundError, match="no ModelPolicy named 'gpt-4'"):
        await client.chat.completions.create(model="gpt-4", messages=[{"role": "user", "content": "hi"}])


async def test_openai_client_sees_a_mid_stream_failure(fake: FakeFactory, gateway: GatewayFactory) -> None:
    model = await fake(replies=["a long answer that breaks"])
    model.script(Behaviour(drop_after_chunks=3))
    gw = await gateway({"chat": {"targets": [target("m", model)]}})
    client = openai.AsyncOpenAI(base_url=gw.base_url, api_key="unused", max_retries=0)

    received: list[str] = []

    async def consume() -> None:
        stream = await client.chat.completions.create(
            model="chat", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        async for chunk in stream:
            received.append(chunk.choices[0].delta.content or "")

    with pytest.raises(openai.APIError, match="stream interrupted"):
        await consume()
    assert "".join(received) == "a long answe"  # three 4-character chunks


async def test_malformed_requests_get_openai_style_errors(
    fake: FakeFactory, gateway: GatewayFactory, http: aiohttp.ClientSession
) -> None:
    gw = await gateway({"chat": {"targets": [target("m", await fake())]}})
    cases = [
        (b"{not json", 400, "invalid_json"),
        (b"[1, 2]", 400, "invalid_json"),
        (b'{"messages": [{"role": "user", "content": "x"}]}', 400, "missing_model"),
        (b'{"model": "chat", "messages": []}', 400, "invalid_messages"),
        (b'{"model": "nope", "messages": [{"role": "user", "content": "x"}]}', 404, "model_not_found"),
    ]
    for raw, status, code in cases:
        async with http.post(f"{gw.base_url}/chat/completions", data=raw) as resp:
            body = await resp.json()
        assert resp.status == status, raw
        assert body["error"]["code"] == code
        assert body["error"]["message"]
        assert body["error"]["type"] == "invalid_request_error"


async def test_hot_reload_keeps_in_flight_requests_and_rejects_bad_files(
    fake: FakeFactory, gateway: GatewayFactory, http: aiohttp.ClientSession
) -> None:
    old = await fake(default=Behaviour(latency=1.0), replies=["old"])
    new = await fake(replies=["new"])
    gw = await gateway({"chat": {"targets": [target("old", old)]}}, reload_interval=0.1)

    in_flight = asyncio.create_task(chat(http, gw, ask("chat")))
    for _ in range(500):
        if old.state.in_flight:
            break
        await asyncio.sleep(0.01)
    gateway.write({"chat": {"targets": [target("new", new)]}, "extra": {"targets": [target("new", new)]}})
    for _ in range(100):
        if "extra" in gw.gateway.runtimes:
            break
        await asyncio.sleep(0.05)

    assert (await chat(http, gw, ask("chat")))[1]["choices"][0]["message"]["content"] == "new"
    status, body, _ = await in_flight
    assert status == 200
    assert body["choices"][0]["message"]["content"] == "old"

    gateway.config_path.write_text("policies: [{name: chat, spec: {targets: []}}]")
    for _ in range(100):
        if await metric(http, gw, "stoa_gateway_config_reloads_total", result="error"):
            break
        await asyncio.sleep(0.05)
    assert (await chat(http, gw, ask("extra")))[0] == 200  # the old config is still active
    async with http.get(f"{gw.url}/v1/stoa/status") as resp:
        assert "targets" in (await resp.json())["config"]["lastReloadError"]
    assert await metric(http, gw, "stoa_gateway_config_reloads_total", result="ok") == 1


async def test_metrics_status_trace_and_attribution(
    fake: FakeFactory, gateway: GatewayFactory, http: aiohttp.ClientSession
) -> None:
    model = await fake(replies=["abcdefgh"])
    gw = await gateway({"chat": {"targets": [target("m", model, inputCostPer1k=2.0, outputCostPer1k=4.0)]}})
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    headers = {
        "traceparent": f"00-{trace_id}-00f067aa0ba902b7-01",
        "X-Stoa-Agent": "researcher",
        "X-Stoa-Conversation": "conv-1",
    }

    status, _, response_headers = await chat(http, gw, ask("chat", "12345678"), headers)

    assert status == 200
    assert response_headers["X-Stoa-Trace-Id"] == trace_id
    sent = model.state.last[-1]["headers"]
    assert sent["traceparent"].startswith(f"00-{trace_id}-")
    assert sent["traceparent"] != headers["traceparent"]  # a new span id for the upstream call
    assert "Authorization" not in sent  # no key configured, and the client's header is not forwarded
    await chat(http, gw, ask("chat"))
    assert len(model.state.last[-1]["headers"]["traceparent"]) == 55  # generated when absent

    assert await metric(http, gw, "stoa_gateway_requests_total", agent="researcher", outcome="ok") == 1
    assert await metric(http, gw, "stoa_gateway_conversation_tokens_total", conversation="conv-1") == 4
    assert abs(await metric(http, gw, "stoa_gateway_cost_usd_total", agent="researcher") - 0.012) < 1e-9
    assert await metric(http, gw, "stoa_gateway_request_duration_seconds_count", target="m") == 2
    async with http.get(f"{gw.url}/healthz") as resp:
        assert resp.status == 200
    async with http.get(f"{gw.url}/readyz") as resp:
        assert resp.status == 200


async def test_api_key_from_env_is_sent_and_never_exposed(
    fake: FakeFactory, gateway: GatewayFactory, http: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STOA_TEST_KEY", "sk-very-secret")
    model = await fake(default=Behaviour(status=500))
    gw = await gateway({"chat": {"targets": [target("m", model, apiKeyEnv="STOA_TEST_KEY")]}})

    status, body, _ = await chat(http, gw, ask("chat"))

    assert status == 502
    assert model.state.last[-1]["headers"]["Authorization"] == "Bearer sk-very-secret"
    async with http.get(f"{gw.url}/metrics") as resp:
        exposed = await resp.text()
    async with http.get(f"{gw.url}/v1/stoa/status") as resp:
        exposed += await resp.text()
    exposed += gateway.audit_path.read_text() + str(body)
    assert "sk-very-secret" not in exposed


async def test_agent_label_cardinality_is_bounded(
    fake: FakeFactory, gateway: GatewayFactory, http: aiohttp.ClientSession
) -> None:
    gw = await gateway({"chat": {"targets": [target("m", await fake())]}})
    gw.gateway.metrics.agents.limit = 2

    for agent in ("a1", "a2", "a3", "a4"):
        await chat(http, gw, ask("chat"), {"X-Stoa-Agent": agent})

    assert await metric(http, gw, "stoa_gateway_requests_total", agent="a2") == 1
    assert await metric(http, gw, "stoa_gateway_requests_total", agent="other") == 2


async def test_client_that_goes_away_cancels_the_upstream_call(
    fake: FakeFactory, gateway: GatewayFactory, http: aiohttp.ClientSession
) -> None:
    """An agent killed mid-turn must not leave a paid upstream call running for nobody."""
    hanging = await fake(default=Behaviour(hang=True))
    gw = await gateway({"chat": {"targets": [target("slow", hanging, timeoutSeconds=60)]}})
    request = asyncio.create_task(chat(http, gw, ask("chat")))
    for _ in range(100):
        if hanging.state.in_flight == 1:
            break
        await asyncio.sleep(0.05)
    assert hanging.state.in_flight == 1
    assert await metric(http, gw, "stoa_gateway_in_flight_requests", target="slow") == 1
    request.cancel()
    for _ in range(100):
        if hanging.state.in_flight == 0:
            break
        await asyncio.sleep(0.05)
    assert hanging.state.in_flight == 0, "the provider still holds the abandoned request"
    assert await metric(http, gw, "stoa_gateway_in_flight_requests", target="slow") == 0
    assert (
        await metric(http, gw, "stoa_gateway_requests_total", outcome="client_disconnected", target="slow")
        == 1
    )


async def test_every_client_that_goes_away_is_counted(
    fake: FakeFactory, gateway: GatewayFactory, http: aiohttp.ClientSession
) -> None:
    """Mid-stream and while queued at a limit too: ``requests_total{outcome="client_disconnected"}``."""
    slow = await fake(replies=["one two three four five six"], default=Behaviour(token_delay=5))
    quick = await fake()
    gw = await gateway(
        {
            "stream": {"targets": [target("slow", slow, timeoutSeconds=60)]},
            "limited": {"targets": [target("m", quick, rpm=2)], "priority": {"queueSeconds": {"normal": 60}}},
        }
    )
    for _ in range(2):  # the bucket is empty now; the next call waits ~30 s for its refill
        assert (await chat(http, gw, ask("limited")))[0] == 200

    async def stream() -> None:
        async with http.post(f"{gw.base_url}/chat/completions", json=ask("stream", stream=True)) as resp:
            await resp.content.readline()  # the first token arrived: the stream is committed
            await asyncio.sleep(30)

    tasks = [asyncio.create_task(stream()), asyncio.create_task(chat(http, gw, ask("limited")))]
    for _ in range(100):
        queued = await metric(http, gw, "stoa_gateway_queued_requests", policy="limited")
        if slow.state.in_flight == 1 and queued == 1:
            break
        await asyncio.sleep(0.05)
    assert slow.state.in_flight == 1
    assert queued == 1
    for task in tasks:
        task.cancel()
    gone = {}
    for _ in range(100):
        gone = {
            policy: await metric(
                http, gw, "stoa_gateway_requests_total", policy=policy, outcome="client_disconnected"
            )
            for policy in ("stream", "limited")
        }
        if gone == {"stream": 1, "limited": 1}:
            break
        await asyncio.sleep(0.05)
    assert gone == {"stream": 1, "limited": 1}
    assert await metric(http, gw, "stoa_gateway_queued_requests", policy="limited") == 0
    assert await metric(http, gw, "stoa_gateway_priority_requests_total", outcome="client_disconnected") == 2
