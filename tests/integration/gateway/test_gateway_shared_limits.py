"""Limits shared across three real gateway processes through a real Redis: skewed load, a replica added
and removed, Redis killed and restarted. The bound: calls admitted in T seconds <= 1.05 x (rpm + rpm*T/60)
(the bucket's burst plus its refill), however the load is spread."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import pytest
import redis.asyncio as aioredis

from stoa_devenv.redis import RedisServer
from stoa_testing.fake_provider import RunningFake, start_fake_provider
from stoa_testing.gateway import ask, target
from stoa_testing.replicas import GatewayProcess, Tally, drive, write_config

RPM = 120
BOUND = 1.05
QUEUED_RPM = 60
RESTART_BOUND = 1.10  # across a restart that lost Redis's data the hand-back is approximate (docs)


def allowed(seconds: float) -> float:
    return RPM + RPM * seconds / 60


@pytest.fixture
async def model() -> AsyncIterator[RunningFake]:
    fake = await start_fake_provider(replies=["ok"])
    yield fake
    await fake.close()


@pytest.fixture
async def replicas(tmp_path: Path, model: RunningFake) -> AsyncIterator[Callable[..., GatewayProcess]]:
    config = write_config(
        tmp_path / "gateway.json",
        {
            "chat": {
                "targets": [target("m", model, rpm=RPM)],
                "priority": {"queueSeconds": {"normal": 0}},  # answer 429 at once: count admissions only
            },
            "queued": {  # waits at the limit: critical calls may queue 10 s
                "targets": [target("q", model, rpm=QUEUED_RPM)],
                "priority": {"queueSeconds": {"critical": 10}},
            },
            "spend": {
                "targets": [target("m", model, inputCostPer1k=1000.0)],
                "budget": {"dailyLimitUSD": 5},
            },
        },
    )
    prefix = f"test-{secrets.token_hex(4)}"
    started: list[GatewayProcess] = []

    def factory(name: str, redis_url: str | None, replicas: int = 3) -> GatewayProcess:
        gw = GatewayProcess(config, redis_url, replicas=replicas, prefix=prefix, name=name).start()
        started.append(gw)
        return gw

    yield factory
    for gw in started:
        gw.stop()


async def limits_of(http: aiohttp.ClientSession, gws: list[GatewayProcess]) -> list[dict[str, object]]:
    return [(await gw.status(http))["limits"] for gw in gws]


async def until(check: Callable[[], object], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not await check():  # type: ignore[misc]
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.1)


async def test_skewed_load_is_admitted_within_the_shared_limit(
    redis_server: RedisServer, replicas: Callable[..., GatewayProcess], model: RunningFake
) -> None:
    gws = [replicas(name, redis_server.url) for name in ("hot", "warm", "cold")]
    for gw in gws:
        await gw.ready()
    tally = Tally()

    started = time.monotonic()
    # The cold replica gets no calls: a per-replica split would leave its third unused (ratio <= 0.67).
    await drive({"hot": (gws[0].url, 6), "warm": (gws[1].url, 2)}, ask("chat"), 3.0, tally)
    elapsed = time.monotonic() - started

    admitted = model.chat_requests
    ratio = admitted / allowed(elapsed)
    print(
        f"skewed: admitted={admitted} allowed={allowed(elapsed):.0f} ratio={ratio:.3f} {dict(tally.statuses)}"
    )
    assert admitted == tally.ok()
    assert ratio <= BOUND
    assert ratio >= 0.8  # the limit is used, not split into thirds with one idle
    assert {s for (_, s) in tally.statuses} == {200, 429}
    async with aiohttp.ClientSession() as http:
        assert [(s["shared"], s["replicas"]) for s in await limits_of(http, gws)] == [(True, 3)] * 3


async def test_budget_spent_through_one_replica_stops_the_others(
    redis_server: RedisServer, replicas: Callable[..., GatewayProcess]
) -> None:
    gws = [replicas(name, redis_server.url) for name in ("a", "b")]
    for gw in gws:
        await gw.ready()
    body = ask("spend", "x" * 400)  # 100 input tokens at 1000 USD per 1k: 100 USD a call, budget 5
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{gws[0].url}/v1/chat/completions", json=body) as resp:
            assert resp.status == 200

        async def b_rejects() -> bool:
            async with http.post(f"{gws[1].url}/v1/chat/completions", json=body) as resp:
                data = await resp.json()
                assert resp.status in (200, 429)
                return resp.status == 429 and data["error"]["code"] == "budget_exceeded"

        await until(b_rejects, 2.0)
        status = await gws[1].status(http)
        assert status["policies"]["spend"]["spentTodayUSD"] >= 100


async def test_replica_added_and_removed(
    redis_server: RedisServer, replicas: Callable[..., GatewayProcess], model: RunningFake
) -> None:
    a, b = replicas("a", redis_server.url), replicas("b", redis_server.url)
    await a.ready()
    await b.ready()
    tally = Tally()
    started = time.monotonic()
    load = asyncio.create_task(drive({"a": (a.url, 4), "b": (b.url, 2)}, ask("chat"), 5.0, tally))
    async with aiohttp.ClientSession() as http:
        await until(lambda: _replicas_seen(http, a, 2), 6.0)
        c = replicas("c", redis_server.url)
        await c.ready()
        extra = asyncio.create_task(drive({"c": (c.url, 2)}, ask("chat"), 2.0, tally))
        await until(lambda: _replicas_seen(http, a, 3), 6.0)
        await extra
        b.stop()  # SIGTERM: returns its leases and leaves the member set
        await until(lambda: _replicas_seen(http, a, 2), 6.0)
        await load
    elapsed = time.monotonic() - started
    ratio = model.chat_requests / allowed(elapsed)
    print(f"add/remove: admitted={model.chat_requests} allowed={allowed(elapsed):.0f} ratio={ratio:.3f}")
    assert ratio <= BOUND
    assert tally.ok("c") > 0


async def _bucket_level(redis: RedisServer, prefix: str) -> float:
    client = aioredis.Redis.from_url(redis.url, decode_responses=True)
    try:
        level = await client.hget(f"{{{prefix}}}:bucket:chat/target/m/rpm", "l")
    finally:
        await client.aclose()
    return float(level) if level is not None else float(RPM)


async def _replicas_seen(http: aiohttp.ClientSession, gw: GatewayProcess, count: int) -> bool:
    limits = (await gw.status(http))["limits"]
    return bool(limits["shared"]) and limits["replicas"] == count


async def test_redis_killed_then_restarted(
    replicas: Callable[..., GatewayProcess], model: RunningFake
) -> None:
    redis = RedisServer().start()
    try:
        gws = [replicas(name, redis.url) for name in ("hot", "warm", "cold")]
        for gw in gws:
            await gw.ready()
        tally = Tally()
        started = time.monotonic()
        split = {"hot": (gws[0].url, 6), "warm": (gws[1].url, 2), "cold": (gws[2].url, 1)}
        load = asyncio.create_task(drive(split, ask("chat"), 6.0, tally))
        async with aiohttp.ClientSession() as http:

            async def binding() -> bool:  # the burst is spent: from here on only the refill is left
                return any(status == 429 for (_, status) in tally.statuses)

            async def all_see_three() -> bool:  # each replica has seen the others' heartbeats in Redis
                return all(s["shared"] and s["replicas"] == 3 for s in await limits_of(http, gws))

            await until(binding, 10.0)
            # Else a replica that had not yet seen the third before Redis died falls back to limit / 2.
            await until(all_see_three, 10.0)
            await asyncio.sleep(0.5)
            left = await _bucket_level(redis, gws[0].prefix)  # what the replicas may share out
            redis.kill()
            killed = time.monotonic()

            async def all_fell_back() -> bool:
                return not any(s["shared"] for s in await limits_of(http, gws))

            await until(all_fell_back, 3.0)
            fallback = await limits_of(http, gws)
            assert all("cannot reach" in str(s["reason"]) and s["replicas"] == 3 for s in fallback), fallback
            async with http.get(f"{gws[0].url}/metrics") as resp:
                assert "stoa_gateway_limits_shared 0.0" in await resp.text()
            during = model.chat_requests
            await asyncio.sleep(1.0)
            outage_admitted = model.chat_requests - during
            redis.start()  # same port, empty: every replica hands back what it used

            async def all_shared() -> bool:
                return all(s["shared"] for s in await limits_of(http, gws))

            await until(all_shared, 5.0)
            restored = time.monotonic() - killed
        await load
    finally:
        redis.destroy()
    elapsed = time.monotonic() - started
    ratio = model.chat_requests / allowed(elapsed)
    print(
        f"redis kill/restart: admitted={model.chat_requests} allowed={allowed(elapsed):.0f} "
        f"ratio={ratio:.3f} outage_1s={outage_admitted} restored_after={restored:.1f}s"
    )
    # Each replica's share of what was left, plus the shares' refill: never unlimited.
    assert outage_admitted <= BOUND * (max(0.0, left) + RPM / 60 * (restored + 1.0) + 3)
    assert ratio <= RESTART_BOUND
    assert tally.ok("cold") > 0


async def test_calls_over_a_shared_limit_wait_in_the_queue(
    redis_server: RedisServer, replicas: Callable[..., GatewayProcess], model: RunningFake
) -> None:
    """A burst over the shared bucket queues for its refill as on one replica: a call whose plan saw the
    bucket free but whose take Redis refused (the others took it meanwhile) waits, it is not refused."""
    gws = [replicas(name, redis_server.url, replicas=2) for name in ("a", "b")]
    for gw in gws:
        await gw.ready()
    calls = QUEUED_RPM + 3  # the burst and 3 s of refill, well inside the 10 s a critical call may wait
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:

        async def one(i: int) -> int:
            url = f"{gws[i % 2].url}/v1/chat/completions"
            async with http.post(url, json=ask("queued"), headers={"X-Stoa-Priority": "critical"}) as resp:
                await resp.read()
                return resp.status

        started = time.monotonic()
        statuses = await asyncio.gather(*(one(i) for i in range(calls)))
        elapsed = time.monotonic() - started
    print(f"queued at the shared limit: {calls} calls in {elapsed:.1f}s, statuses {sorted(set(statuses))}")
    assert statuses == [200] * calls
    assert model.chat_requests <= QUEUED_RPM + QUEUED_RPM * elapsed / 60
