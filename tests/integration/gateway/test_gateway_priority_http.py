"""Priority classes under a binding limit: critical calls get through, batch calls are shed first."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import aiohttp

from stoa_testing.gateway import FakeFactory, GatewayFactory, ask, metric, target


async def test_critical_succeeds_while_batch_is_shed(
    fake: FakeFactory, gateway: GatewayFactory, http: aiohttp.ClientSession
) -> None:
    model = await fake(replies=["ok"])
    started = time.monotonic()
    gw = await gateway(
        {
            "chat": {
                "targets": [target("m", model, rpm=120)],  # a burst of 120, then 2 per second
                "priority": {
                    "queueSeconds": {"critical": 5, "normal": 2, "batch": 0.5},
                    "criticalReserve": 0.2,  # 24 of the 120 only critical calls may use
                    "maxQueued": 50,
                },
            }
        }
    )
    batch = {"X-Stoa-Priority": "batch"}

    async def one_batch() -> int:
        async with http.post(f"{gw.base_url}/chat/completions", json=ask("chat"), headers=batch) as resp:
            return resp.status

    drain = await asyncio.gather(*(one_batch() for _ in range(150)))  # batch takes the burst ...
    assert 429 in drain
    assert model.chat_requests <= 96 + 2 * (time.monotonic() - started)  # ... down to the critical reserve
    results: Counter[tuple[str, int]] = Counter()
    retry_after: list[int] = []
    deadline = time.monotonic() + 4.0

    async def caller(priority: str, pause: float) -> None:
        while time.monotonic() < deadline:
            headers = {"X-Stoa-Priority": priority}
            async with http.post(
                f"{gw.base_url}/chat/completions", json=ask("chat"), headers=headers
            ) as resp:
                await resp.read()
                results[(priority, resp.status)] += 1
                if resp.status == 429:
                    retry_after.append(int(resp.headers["Retry-After"]))
            await asyncio.sleep(pause)

    await asyncio.gather(
        *(caller("batch", 0.0) for _ in range(6)),
        *(caller("normal", 0.2) for _ in range(2)),
        *(caller("critical", 0.3) for _ in range(2)),
    )

    critical = results[("critical", 200)] / sum(n for (p, _), n in results.items() if p == "critical")
    print(dict(results))
    assert critical >= 0.99
    assert results[("critical", 200)] >= 8
    assert results[("batch", 429)] > results[("batch", 200)]  # the limit binds, and batch pays for it
    assert model.chat_requests <= 120 + 2 * (time.monotonic() - started)  # the limit held: burst + refill
    assert retry_after
    assert min(retry_after) >= 1
    ok = await metric(http, gw, "stoa_gateway_priority_requests_total", priority="critical", outcome="ok")
    shed = await metric(
        http, gw, "stoa_gateway_priority_requests_total", priority="batch", outcome="rate_limited"
    )
    assert ok == results[("critical", 200)]
    assert shed == results[("batch", 429)] + drain.count(429)
    assert await metric(http, gw, "stoa_gateway_queue_wait_seconds_count", priority="critical") == ok


async def test_critical_waits_at_the_head_of_the_queue(
    fake: FakeFactory, gateway: GatewayFactory, http: aiohttp.ClientSession
) -> None:
    model = await fake(replies=["ok"])
    gw = await gateway(
        {
            "chat": {
                "targets": [target("m", model, rpm=60)],  # 1 per second after the burst
                "priority": {"queueSeconds": {"critical": 5, "normal": 5, "batch": 0}},
            }
        }
    )
    batch = {"X-Stoa-Priority": "batch"}  # batch may not wait: a 429 says the bucket is empty
    for _ in range(200):
        async with http.post(f"{gw.base_url}/chat/completions", json=ask("chat"), headers=batch) as resp:
            if resp.status == 429:
                break
    order: list[str] = []

    async def call(priority: str, name: str, delay: float) -> None:
        await asyncio.sleep(delay)
        headers = {"X-Stoa-Priority": priority}
        async with http.post(f"{gw.base_url}/chat/completions", json=ask("chat"), headers=headers) as resp:
            assert resp.status == 200
            order.append(name)

    await asyncio.gather(
        call("normal", "normal-1", 0.0), call("normal", "normal-2", 0.05), call("critical", "critical", 0.1)
    )

    assert order.index("critical") <= 1  # ahead of the normal call that came before it
    assert order.index("normal-1") < order.index("normal-2")  # oldest first within a priority
