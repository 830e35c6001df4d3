"""Streaming: failover before the first token is invisible; a failure after it is reported."""

from __future__ import annotations

import json

import aiohttp

from stoa_testing.fake_provider import Behaviour
from stoa_testing.gateway import FakeFactory, GatewayFactory, ask, chat_stream, metric, stream_text, target


async def test_failover_before_first_token_is_transparent(
    fake: FakeFactory, gateway: GatewayFactory, http: aiohttp.ClientSession
) -> None:
    primary = await fake(replies=["primary"])
    backup = await fake(replies=["backup streams this answer"])
    primary.script(Behaviour(status=503), Behaviour(drop_after_chunks=0), Behaviour(hang=True))
    gw = await gateway(
        {
            "chat": {
                "targets": [target("primary", primary, timeoutSeconds=0.3), target("backup", backup)],
                "retry": {"attempts": 2},
            }
        }
    )

    for _ in range(3):  # 503, connection dropped before any token, no first token within the timeout
        status, events = await chat_stream(http, gw, ask("chat"))
        assert status == 200
        assert stream_text(events) == "backup streams this answer"
        assert events[-1] == "[DONE]"
        assert not any('"error"' in e for e in events)
    assert primary.chat_requests == 3
    assert await metric(http, gw, "stoa_gateway_fallbacks_total", from_target="primary") == 3
    assert await metric(http, gw, "stoa_gateway_time_to_first_token_seconds_count", target="backup") == 3


async def test_mid_stream_failure_ends_with_an_error_event(
    fake: FakeFactory, gateway: GatewayFactory, http: aiohttp.ClientSession
) -> None:
    primary = await fake(replies=["this answer will be cut"])
    backup = await fake()
    primary.script(Behaviour(drop_after_chunks=2), Behaviour(error_event_after_chunks=1))
    gw = await gateway({"chat": {"targets": [target("primary", primary), target("backup", backup)]}})

    status, events = await chat_stream(http, gw, ask("chat"))

    assert status == 200
    assert stream_text(events) == "this ans"  # what was sent stays sent
    assert events[-1] != "[DONE]"
    error = json.loads(events[-1])["error"]
    assert error["code"] == "stream_interrupted"
    assert "primary" in error["message"]
    assert backup.chat_requests == 0

    _, events = await chat_stream(http, gw, ask("chat"))
    assert json.loads(events[-1])["error"]["code"] == "stream_interrupted"
    assert "fake mid-stream error" in json.loads(events[-1])["error"]["message"]
    assert await metric(http, gw, "stoa_gateway_stream_aborts_total", target="primary") == 2
    assert await metric(http, gw, "stoa_gateway_requests_total", outcome="stream_interrupted") == 2
    assert [e["event"] for e in gateway.audit()].count("stream_interrupted") == 2


async def test_stream_usage_only_when_asked(
    fake: FakeFactory, gateway: GatewayFactory, http: aiohttp.ClientSession
) -> None:
    model = await fake(replies=["12345678"])
    gw = await gateway({"chat": {"targets": [target("m", model)]}})

    _, plain = await chat_stream(http, gw, ask("chat"))
    _, with_usage = await chat_stream(http, gw, ask("chat", stream_options={"include_usage": True}))

    assert not any('"usage"' in e for e in plain)
    usage = [json.loads(e)["usage"] for e in with_usage if '"usage"' in e]
    assert usage == [{"prompt_tokens": 2, "completion_tokens": 2, "total_tokens": 4, "cost": 0.0}]
    assert model.state.last[-1]["body"]["stream_options"] == {"include_usage": True}
    assert await metric(http, gw, "stoa_gateway_output_tokens_total", target="m") == 4
