"""A small closed-loop HTTP load generator for the gateway benchmarks (aiohttp, one event loop)."""

from __future__ import annotations

import asyncio
import statistics
import time
from dataclasses import asdict, dataclass
from typing import Any

import aiohttp


@dataclass
class LoadResult:
    concurrency: int
    seconds: float
    requests: int
    errors: int
    rps: float
    p50_ms: float
    p99_ms: float
    mean_ms: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


async def run_load(
    url: str,
    body: dict[str, Any],
    *,
    concurrency: int,
    seconds: float,
    headers: dict[str, str] | None = None,
    stream: bool = False,
) -> LoadResult:
    """``concurrency`` workers post ``body`` back to back for ``seconds``; latency to the last byte."""
    latencies: list[float] = []
    errors = 0
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        deadline = time.monotonic() + seconds

        async def worker() -> None:
            nonlocal errors
            while time.monotonic() < deadline:
                started = time.monotonic()
                try:
                    async with session.post(url, json={**body, "stream": stream}, headers=headers) as resp:
                        await resp.read()
                        ok = resp.status == 200
                except aiohttp.ClientError:
                    ok = False
                if ok:
                    latencies.append(time.monotonic() - started)
                else:
                    errors += 1

        began = time.monotonic()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.monotonic() - began
    ms = [x * 1000 for x in latencies]
    return LoadResult(
        concurrency=concurrency,
        seconds=round(elapsed, 2),
        requests=len(latencies),
        errors=errors,
        rps=round(len(latencies) / elapsed, 1),
        p50_ms=round(percentile(ms, 0.5), 3),
        p99_ms=round(percentile(ms, 0.99), 3),
        mean_ms=round(statistics.fmean(ms), 3) if ms else float("nan"),
    )
