"""Failover, retries with Retry-After, timeouts and the circuit breaker against fake providers."""

from __future__ import annotations

import asyncio
import socket
import time

import aiohttp

from stoa_testing.fake_provider import Behaviour
from stoa_testing.gateway import FakeFactory, GatewayFactory, ask, chat, metric, target


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


async def test_primary_down_backup_answers(
    fake: FakeFactory, gateway: GatewayFactory, http: aiohttp.ClientSession
) -> None:
    primary = await fake(default=Behaviour(status=500), replies=["from primary"])
    backup = await fake(replies=["from backup"])
    gw = await gateway({"chat": {"targets": [target("primary", primary), target("backup", backup)]}})

    status, body, headers = await chat(http, gw, ask("chat"))

    assert status == 200
    assert body["choices"][0]["message"]["content"] == "from backup"
    assert headers["X-Stoa-Target"] == "backup"
    assert primary.chat_requests == 1
    assert backup.state.last[-1]["body"]["model"] == "model-backup"
    assert (
        await metric(http, gw, "stoa_gateway_fallbacks_total", from_target="primary", reason="status_5xx")
        == 1
    )
    fallbacks = [e for e in gateway.audit() if e["event"] == "fallback"]
    assert fallbacks[0]["target"] == "backup"
    assert fallbacks[0]["fromTarget"] == "primary"
    assert "status 500" in fallbacks[0]["reason"]
    assert len(fallbacks[0]["traceId"]) == 32


async def test_connection_refused_and_timeout_fail_over(
    fake: FakeFactory, gateway: GatewayFactory, http: aiohttp.ClientSession
) -> None:
    hanging = await fake(default=Behaviour(hang=True))
    backup = await fake(replies=["ok"])
    gw = await gateway(
        {
            "chat": {
                "targets": [
                    target("refused", closed_port_url()),
                    target("slow", hanging, timeoutSeconds=0.3),
                    target("backup", backup),
                ],
                "retry": {"attempts": 3},
            }
        }
    )

    status, body, _ = await chat(http, gw, ask("chat"))

    assert status == 200
    assert body["choices"][0]["message"]["content"] == "ok"
    assert hanging.chat_requests == 1
    reasons = {e["reason"] for e in gateway.audit() if e["event"] == "fallback"}
    assert any("refused" in r and "connection" in r.lower() for r in reasons)
    assert any("slow: timed out after 0.3s" in r for r in reasons)


async def test_all_targets_failed_names_each_attempt(
    fake: FakeFactory, gateway: GatewayFactory, http: aiohttp.ClientSession
) -> None:
    a = await fake(default=Behaviour(status=503, error_message="overloaded"))
    b = await fake(default=Behaviour(status=401, error_message="account suspended"))
    gw = await gateway(
        {
            "chat": {
                "targets": [target("a", a), target("b", b)],
                "retry": {"attempts": 4, "baseBackoffSeconds": 0},
            }
        }
    )

    status, body, _ = await chat(http, gw, ask("chat"))

    assert status == 502
    message = body["error"]["message"]
    assert "a: status 503: overloaded" in message
    assert "b: status 401: account suspended" in message
    assert body["error"]["code"] == "upstream_error"
    # 401 is not retried on the same target; the 503 target gets the remaining attempts
    assert b.chat_requests == 1
    assert a.chat_requests == 3


async def test_upstream_400_is_returned_as_is_without_failover(
    fake: FakeFactory, gateway: GatewayFactory, http: aiohttp.ClientSession
) -> None:
    a = await fake(default=Behaviour(status=400, error_message="bad parameter"))
    b = await fake()
    gw = await gateway({"chat": {"targets": [target("a", a), target("b", b)]}})

    status, body, _ = await chat(http, gw, ask("chat"))

    assert status == 400
    assert body["error"]["message"] == "bad parameter"
    assert b.chat_requests == 0


async def test_429_retry_after_is_honoured(
    fake: FakeFactory, gateway: GatewayFactory, http: aiohttp.ClientSession
) -> None:
    only = await fake(replies=["finally"])
    only.script(Behaviour(status=429, retry_after="1"))
    gw = await gateway({"chat": {"targets": [target("only", only)], "retry": {"baseBackoffSeconds": 0}}})

    started = time.monotonic()
    status, body, _ = await chat(http, gw, ask("chat"))
    elapsed = time.monotonic() - started

    assert status == 200
    assert body["choices"][0]["message"]["content"] == "finally"
    assert only.chat_requests == 2
    assert elapsed >= 0.95  # waited for Retry-After, not the 0 s backoff
    assert await metric(http, gw, "stoa_gateway_retries_total", target="only") == 1


async def test_429_storm_cools_the_target_down_for_retry_after(
    fake: FakeFactory, gateway: GatewayFactory, http: aiohttp.ClientSession
) -> None:
    primary = await fake(default=Behaviour(status=429, retry_after="30"))
    backup = await fake(replies=["backup"])
    gw = await gateway({"chat": {"targets": [target("primary", primary), target("backup", backup)]}})

    for _ in range(5):
        status, body, _ = await chat(http, gw, ask("chat"))
        assert status == 200
        assert body["choices"][0]["message"]["content"] == "backup"

    assert primary.chat_requests == 1  # later requests skip it until Retry-After has passed
    assert (
        await metric(http, gw, "stoa_gateway_fallbacks_total", from_target="primary", reason="cooling_down")
        == 4
    )


async def test_every_target_rate_limited_upstream_returns_429(
    fake: FakeFactory, gateway: GatewayFactory, http: aiohttp.ClientSession
) -> None:
    only = await fake(default=Behaviour(status=429, retry_after="120"))
    gw = await gateway({"chat": {"targets": [target("only", only)]}})

    async with http.post(f"{gw.base_url}/chat/completions", json=ask("chat")) as resp:
        body = await resp.json()
        assert resp.status == 429
        assert int(resp.headers["Retry-After"]) == 120
    assert body["error"]["type"] == "rate_limit_error"
    assert only.chat_requests == 1  # Retry-After longer than maxRetryAfterSeconds: no waiting


async def test_breaker_opens_skips_target_then_probes_and_closes(
    fake: FakeFactory, gateway: GatewayFactory, http: aiohttp.ClientSession
) -> None:
    flaky = await fake(default=Behaviour(status=500), replies=["flaky"])
    backup = await fake(replies=["backup"])
    gw = await gateway(
        {
            "chat": {
                "targets": [target("flaky", flaky), target("backup", backup)],
                "circuitBreaker": {"minRequests": 3, "errorRateThreshold": 0.5, "openSeconds": 0.5},
            }
        }
    )

    for _ in range(3):
        assert (await chat(http, gw, ask("chat")))[0] == 200
    assert flaky.chat_requests == 3
    async with http.get(f"{gw.url}/v1/stoa/status") as resp:
        health = (await resp.json())["policies"]["chat"]["targets"]["flaky"]
    assert health["circuit"] == "open"
    assert "status 500" in health["lastError"]
    assert await metric(http, gw, "stoa_gateway_circuit_state", target="flaky") == 2

    for _ in range(5):
        assert (await chat(http, gw, ask("chat")))[0] == 200
    assert flaky.chat_requests == 3  # nothing sent while open

    flaky.set_default(Behaviour())
    await asyncio.sleep(0.6)
    status, body, _ = await chat(http, gw, ask("chat"))
    assert status == 200
    assert body["choices"][0]["message"]["content"] == "flaky"  # the half-open probe
    assert flaky.chat_requests == 4
    assert await metric(http, gw, "stoa_gateway_circuit_state", target="flaky") == 0
    events = [
        e["event"] for e in gateway.audit() if e["target"] == "flaky" and e["event"].startswith("breaker")
    ]
    assert events == ["breaker_opened", "breaker_half_open", "breaker_closed"]


async def test_failed_probe_reopens_the_breaker(
    fake: FakeFactory, gateway: GatewayFactory, http: aiohttp.ClientSession
) -> None:
    dead = await fake(default=Behaviour(status=502))
    backup = await fake()
    gw = await gateway(
        {
            "chat": {
                "targets": [target("dead", dead), target("backup", backup)],
                "circuitBreaker": {"minRequests": 2, "openSeconds": 0.3},
            }
        }
    )
    for _ in range(2):
        await chat(http, gw, ask("chat"))
    await asyncio.sleep(0.4)
    assert (await chat(http, gw, ask("chat")))[0] == 200  # probe fails, backup answers
    assert (await chat(http, gw, ask("chat")))[0] == 200  # open again: not sent to dead
    assert dead.chat_requests == 3
    events = [e["event"] for e in gateway.audit() if e["event"].startswith("breaker")]
    assert events == ["breaker_opened", "breaker_half_open", "breaker_opened"]


async def test_recent_audit_records_name_the_conversation_and_page_by_seq(
    fake: FakeFactory, gateway: GatewayFactory, http: aiohttp.ClientSession
) -> None:
    """``GET /v1/stoa/audit``: what ``stoa api`` reads for a conversation's failovers."""
    primary = await fake(default=Behaviour(status=503))
    backup = await fake()
    gw = await gateway(
        {
            "chat": {
                "targets": [target("primary", primary), target("backup", backup)],
                "circuitBreaker": {"minRequests": 2},
            }
        }
    )
    headers = {"X-Stoa-Agent": "team-a", "X-Stoa-Conversation": "debate/ai-jobs"}
    for _ in range(2):
        assert (await chat(http, gw, ask("chat"), headers=headers))[0] == 200

    async with http.get(f"{gw.url}/v1/stoa/audit") as resp:
        assert resp.status == 200
        page = await resp.json()
    records = page["records"]
    assert [r["seq"] for r in records] == list(range(1, len(records) + 1))
    assert page["last"] == records[-1]["seq"]
    assert page["oldest"] == 1
    fallbacks = [r for r in records if r["event"] == "fallback"]
    assert len(fallbacks) == 2
    assert {r["conversation"] for r in fallbacks} == {"debate/ai-jobs"}
    assert {r["agent"] for r in fallbacks} == {"team-a"}
    opened = [r for r in records if r["event"] == "breaker_opened"]
    assert [r["target"] for r in opened] == ["primary"]
    # The same records went to the audit file, with the same numbers.
    assert [r["seq"] for r in gateway.audit()] == [r["seq"] for r in records]

    async with http.get(f"{gw.url}/v1/stoa/audit", params={"after": str(records[-2]["seq"])}) as resp:
        later = await resp.json()
    assert later["records"] == records[-1:]
    assert later["instance"] == page["instance"]
    async with http.get(f"{gw.url}/v1/stoa/audit", params={"after": "-1"}) as resp:
        assert resp.status == 400
