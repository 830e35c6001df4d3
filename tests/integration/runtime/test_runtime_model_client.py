"""The model client against the fake provider: headers, retries with Retry-After, fallback models."""

from __future__ import annotations

import asyncio

import pytest

from stoa_agents.model_client import ModelClient, ModelConfig, ModelError
from stoa_devenv.procs import free_port
from stoa_testing.fake_provider import Behaviour, start_fake_provider

TP = "00-" + "a" * 32 + "-" + "b" * 16 + "-01"
MESSAGES = [{"role": "user", "content": "hi"}]


async def test_retries_then_falls_back_to_the_next_model() -> None:
    fake = await start_fake_provider(replies=["fine"])
    fake.script(
        Behaviour(status=429, retry_after="0", error_message="slow down"),
        Behaviour(status=503, error_message="overloaded"),
    )
    client = ModelClient(
        ModelConfig(
            base_url=fake.base_url,
            model="primary",
            retries=1,
            backoff_seconds=0.01,
            fallback_models=("backup",),
        )
    )
    try:
        completion = await client.complete(
            MESSAGES, agent="team-a", conversation="c1", traceparent=TP, priority="critical"
        )
    finally:
        await client.close()
        await fake.close()
    assert completion.content == "fine"
    assert completion.tokens_out > 0
    requests = fake.state.stats()["lastRequests"]
    assert [r["body"]["model"] for r in requests] == ["primary", "primary", "backup"]
    headers = requests[-1]["headers"]
    assert headers["X-Stoa-Agent"] == "team-a"
    assert headers["X-Stoa-Conversation"] == "c1"
    assert headers["X-Stoa-Priority"] == "critical"
    assert headers["traceparent"].startswith("00-" + "a" * 32 + "-")
    assert headers["traceparent"] != TP  # a new span per attempt


async def test_non_retryable_error_is_not_retried() -> None:
    fake = await start_fake_provider(default=Behaviour(status=401, error_message="bad key"))
    client = ModelClient(ModelConfig(base_url=fake.base_url, model="m", retries=3, backoff_seconds=0.01))
    try:
        with pytest.raises(ModelError, match=r"HTTP 401.*bad key"):
            await client.complete(MESSAGES, agent="a", conversation="c", traceparent=None)
    finally:
        await client.close()
        await fake.close()
    assert fake.chat_requests == 1


async def test_unreachable_endpoint_is_waited_for_until_it_comes_up() -> None:
    """A gateway that is still starting (connection refused) delays the turn instead of failing it."""
    port = free_port()
    client = ModelClient(
        ModelConfig(
            base_url=f"http://127.0.0.1:{port}/v1",
            model="m",
            retries=0,
            backoff_max_seconds=0.2,
            unreachable_grace_seconds=60,
        )
    )
    call = asyncio.create_task(client.complete(MESSAGES, agent="a", conversation="c", traceparent=None))
    await asyncio.sleep(1.0)
    assert not call.done(), "the call must keep waiting while nothing listens"
    fake = await start_fake_provider(port=port, replies=["late but fine"])
    try:
        completion = await asyncio.wait_for(call, timeout=30)
    finally:
        await client.close()
        await fake.close()
    assert completion.content == "late but fine"
    assert completion.attempts == 1
    assert fake.chat_requests == 1


async def test_unreachable_endpoint_fails_after_the_grace_period() -> None:
    port = free_port()
    client = ModelClient(
        ModelConfig(
            base_url=f"http://127.0.0.1:{port}/v1",
            model="m",
            retries=1,
            backoff_seconds=0.01,
            backoff_max_seconds=0.05,
            unreachable_grace_seconds=0.3,
        )
    )
    try:
        with pytest.raises(ModelError, match=r"failed after 2 attempts: cannot connect"):
            await client.complete(MESSAGES, agent="a", conversation="c", traceparent=None)
    finally:
        await client.close()
