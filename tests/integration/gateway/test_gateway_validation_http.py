"""OpenAI request validation over real HTTP: OpenAI's 400 shape, and nothing reaches the provider."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from stoa_testing.gateway import FakeFactory, GatewayFactory, ask, chat, target

USER = [{"role": "user", "content": "hi"}]


@pytest.mark.parametrize(
    "case",
    [
        ({"max_tokens": 0}, "max_tokens", "integer_below_min_value", "Expected a value >= 1, but got 0"),
        ({"max_tokens": "10"}, "max_tokens", "invalid_type", "expected an integer, but got a string"),
        ({"max_completion_tokens": 2.5}, "max_completion_tokens", "invalid_type", "expected an integer"),
        (
            {"temperature": 2.5},
            "temperature",
            "decimal_above_max_value",
            "Expected a value <= 2, but got 2.5",
        ),
        ({"temperature": -1}, "temperature", "decimal_below_min_value", "Expected a value >= 0"),
        ({"temperature": "hot"}, "temperature", "invalid_type", "expected a decimal, but got a string"),
        ({"top_p": 1.5}, "top_p", "decimal_above_max_value", "Expected a value <= 1"),
        ({"n": 0}, "n", "integer_below_min_value", "Expected a value >= 1"),
        ({"n": 500}, "n", "integer_above_max_value", "Expected a value <= 128"),
        ({"stream": "yes"}, "stream", "invalid_type", "expected a boolean, but got a string"),
        ({"stream_options": []}, "stream_options", "invalid_type", "expected an object"),
        (
            {"stream_options": {"include_usage": 1}},
            "stream_options.include_usage",
            "invalid_type",
            "expected a boolean",
        ),
        ({"messages": [{"role": "robot", "content": "x"}]}, "messages[0].role", "invalid_value", "'user'"),
        ({"messages": [{"content": "x"}]}, "messages[0].role", "missing_required_parameter", "role"),
        ({"messages": ["hello"]}, "messages[0]", "invalid_type", "expected an object, but got a string"),
        ({"messages": [{"role": "user"}]}, "messages[0].content", "missing_required_parameter", "content"),
        (
            {"messages": [{"role": "user", "content": 42}]},
            "messages[0].content",
            "invalid_type",
            "a string or an array of content parts",
        ),
        (
            {"messages": [*USER, {"role": "user", "content": [{"type": "video", "url": "x"}]}]},
            "messages[1].content[0].type",
            "invalid_value",
            "'image_url'",
        ),
        (
            {"messages": [{"role": "system", "content": [{"type": "image_url", "image_url": {"url": "u"}}]}]},
            "messages[0].content[0].type",
            "invalid_value",
            "'text'",
        ),
        (
            {"messages": [{"role": "user", "content": [{"type": "text", "text": 7}]}]},
            "messages[0].content[0].text",
            "invalid_type",
            "expected a string",
        ),
        (
            {"messages": [{"role": "user", "content": [{"type": "image_url"}]}]},
            "messages[0].content[0].image_url.url",
            "missing_required_parameter",
            "image_url.url",
        ),
        (
            {"messages": [*USER, {"role": "tool", "content": "42"}]},
            "messages[1].tool_call_id",
            "missing_required_parameter",
            "tool_call_id",
        ),
    ],
)
async def test_invalid_fields_get_openais_400(
    fake: FakeFactory, gateway: GatewayFactory, http: aiohttp.ClientSession, case: tuple[Any, str, str, str]
) -> None:
    extra, param, code, words = case
    model = await fake()
    gw = await gateway({"chat": {"targets": [target("m", model)]}})

    status, body, _ = await chat(http, gw, {**ask("chat"), **extra})

    assert status == 400
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["type"] == "invalid_request_error"
    assert (body["error"]["param"], body["error"]["code"]) == (param, code)
    assert words in body["error"]["message"]
    assert model.chat_requests == 0  # nothing invalid reaches the provider


async def test_valid_requests_of_every_shape_pass(
    fake: FakeFactory, gateway: GatewayFactory, http: aiohttp.ClientSession
) -> None:
    model = await fake(replies=["ok"])
    gw = await gateway({"chat": {"targets": [target("m", model)]}})
    messages = [
        {"role": "developer", "content": "be brief"},
        {
            "role": "user",
            "content": [{"type": "text", "text": "look"}, {"type": "image_url", "image_url": {"url": "u"}}],
        },
        {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "type": "function"}]},
        {"role": "tool", "tool_call_id": "c1", "content": "42"},
    ]
    body = {
        **ask("chat"),
        "messages": messages,
        "max_tokens": None,
        "temperature": 0,
        "top_p": 1,
        "n": 1,
        "stream": False,
        "seed": 7,  # a field the gateway does not read passes through for the provider to judge
    }

    status, answer, _ = await chat(http, gw, body)

    assert status == 200, answer
    assert model.state.last[-1]["body"]["seed"] == 7
    assert model.state.last[-1]["body"]["messages"] == messages


async def test_unknown_priority_is_a_400(
    fake: FakeFactory, gateway: GatewayFactory, http: aiohttp.ClientSession
) -> None:
    model = await fake()
    gw = await gateway({"chat": {"targets": [target("m", model)]}})

    status, body, _ = await chat(http, gw, ask("chat"), {"X-Stoa-Priority": "urgent"})

    assert status == 400
    assert (body["error"]["param"], body["error"]["code"]) == ("X-Stoa-Priority", "invalid_priority")
    assert model.chat_requests == 0
