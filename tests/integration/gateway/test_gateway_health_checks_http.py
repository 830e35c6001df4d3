"""Active health checks: a dead target is found by a real completion before a user request reaches it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import aiohttp

from stoa_testing.fake_provider import Behaviour
from stoa_testing.gateway import FakeFactory, GatewayFactory, ask, chat, metric, target


async def _until(check: Callable[[], Awaitable[bool]], within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"condition not reached within {within}s")


async def test_dead_target_is_skipped_before_users_hit_it_and_returns_when_healthy(
    fake: FakeFactory, gateway: GatewayFactory, http: aiohttp.ClientSession
) -> None:
    primary = await fake(default=Behaviour(status=503), replies=["from primary"])
    backup = await fake(replies=["from backup"])
    gw = await gateway(
        {
            "chat": {
                "targets": [target("primary", primary), target("backup", backup)],
                "healthCheck": {"intervalSeconds": 1, "timeoutSeconds": 2, "unhealthyThreshold": 2},
            }
        }
    )

    async def primary_unhealthy() -> bool:
        return await metric(http, gw, "stoa_gateway_target_healthy", policy="chat", target="primary") == 0

    await _until(primary_unhealthy)
    # The checks were real completions (one token) against the provider, with the target's model.
    checks = [r for r in primary.state.last if r["path"].endswith("/chat/completions")]
    assert len(checks) >= 2
    assert checks[-1]["body"]["max_tokens"] == 1
    assert checks[-1]["body"]["model"] == "model-primary"
    served_before = primary.chat_requests

    status, body, headers = await chat(http, gw, ask("chat"))

    assert status == 200
    assert headers["X-Stoa-Target"] == "backup"
    assert body["choices"][0]["message"]["content"] == "from backup"
    assert primary.chat_requests - served_before <= 1  # at most a concurrent health check, never the user's
    assert (
        await metric(http, gw, "stoa_gateway_fallbacks_total", from_target="primary", reason="unhealthy") == 1
    )
    assert (
        await metric(http, gw, "stoa_gateway_health_checks_total", target="primary", outcome="status_5xx")
        >= 2
    )
    async with http.get(f"{gw.url}/v1/stoa/status") as response:
        health = (await response.json())["policies"]["chat"]["targets"]["primary"]
    assert health["healthy"] is False
    assert "status 503" in health["lastHealthCheckError"]
    assert [e["event"] for e in gateway.audit() if e["target"] == "primary"][:1] == ["target_unhealthy"]

    primary.set_default(Behaviour())

    async def primary_healthy() -> bool:
        return await metric(http, gw, "stoa_gateway_target_healthy", policy="chat", target="primary") == 1

    await _until(primary_healthy)
    status, body, headers = await chat(http, gw, ask("chat"))
    assert headers["X-Stoa-Target"] == "primary"
    assert "target_healthy" in [e["event"] for e in gateway.audit()]


async def test_a_request_the_provider_rejects_still_proves_the_target_is_up(
    fake: FakeFactory, gateway: GatewayFactory, http: aiohttp.ClientSession
) -> None:
    picky = await fake(default=Behaviour(status=400, error_message="max_tokens too small"))
    gw = await gateway(
        {
            "chat": {
                "targets": [target("picky", picky)],
                "healthCheck": {"intervalSeconds": 1, "unhealthyThreshold": 1},
            }
        }
    )

    async def checked() -> bool:
        return await metric(http, gw, "stoa_gateway_health_checks_total", target="picky", outcome="ok") >= 2

    await _until(checked)
    assert await metric(http, gw, "stoa_gateway_target_healthy", policy="chat", target="picky") == 1
