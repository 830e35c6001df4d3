"""Shared rate limits across gateway replicas: the latency the shared limiter adds under the limit, and
admitted / allowed with 3 replicas under skewed load, side by side with per-replica limits.

Every server is its own process on loopback: a fake provider, Redis (Debian redis-server) and gateways.
Writes bench/results/gateway_shared_limits.json.

    .venv/bin/python bench/gateway_shared_limits.py [--seconds 5] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from stoa_devenv.procs import free_port
from stoa_devenv.redis import RedisServer
from stoa_gateway.limits import Demand, Limits, LocalLimits
from stoa_gateway.shared_limits import SharedLimits
from stoa_testing.loadgen import run_load
from stoa_testing.replicas import GatewayProcess, Tally, drive, write_config

RESULTS = Path(__file__).parent / "results"
BODY = {"model": "chat", "messages": [{"role": "user", "content": "What is the capital of France?"}]}


async def wait_http(url: str) -> None:
    async with aiohttp.ClientSession() as http:
        for _ in range(200):
            try:
                async with http.get(url) as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)
    raise RuntimeError(f"{url} not ready")


def policy(base: str, rpm: int) -> dict[str, Any]:
    return {
        "targets": [{"name": "m", "baseURL": base, "model": "fake", "rpm": rpm, "tpm": rpm * 1000}],
        "rateLimit": {"perAgent": {"rpm": rpm}},
        "priority": {"queueSeconds": {"normal": 0}},
    }


async def added_latency(tmp: Path, base: str, redis: RedisServer, args: argparse.Namespace) -> dict[str, Any]:
    """p50/p99 of one gateway with in-process limits vs one leasing from Redis, far under the limit."""
    config = write_config(tmp / "under.json", {"chat": policy(base, 10_000_000)})
    local = GatewayProcess(config, None, replicas=1, name="local").start()
    shared = GatewayProcess(
        config, redis.url, replicas=1, prefix=f"b-{secrets.token_hex(3)}", name="shared"
    ).start()
    rows: list[dict[str, Any]] = []
    try:
        for gw in (local, shared):
            await gw.ready()
        url = "/v1/chat/completions"
        for concurrency in args.concurrency:
            for gw in (local, shared):  # warm-up
                await run_load(gw.url + url, BODY, concurrency=concurrency, seconds=1.0)
            for round_ in range(args.rounds):  # alternate, so drifts of the machine hit both alike
                for setup, gw in (("local", local), ("shared", shared)):
                    result = await run_load(gw.url + url, BODY, concurrency=concurrency, seconds=args.seconds)
                    rows.append({"setup": setup, "round": round_, **result.as_dict()})
                    print(
                        f"{setup:<7} c={concurrency:<3} rps={result.rps:>8} p50={result.p50_ms:.3f}ms "
                        f"p99={result.p99_ms:.3f}ms errors={result.errors}",
                        flush=True,
                    )
    finally:
        local.stop()
        shared.stop()
    summary = []
    for concurrency in args.concurrency:
        pairs = [
            ({r["setup"]: r for r in rows if r["concurrency"] == concurrency and r["round"] == n})
            for n in range(args.rounds)
        ]
        summary.append(
            {
                "concurrency": concurrency,
                "local_p50_ms": statistics.median(p["local"]["p50_ms"] for p in pairs),
                "shared_p50_ms": statistics.median(p["shared"]["p50_ms"] for p in pairs),
                # per round (back-to-back cells), then the median: the machine's drift cancels out
                "added_p50_ms": round(
                    statistics.median(p["shared"]["p50_ms"] - p["local"]["p50_ms"] for p in pairs), 3
                ),
                "added_p99_ms": round(
                    statistics.median(p["shared"]["p99_ms"] - p["local"]["p99_ms"] for p in pairs), 3
                ),
                "rps_ratio_shared_over_local": round(
                    statistics.median(p["shared"]["rps"] / p["local"]["rps"] for p in pairs), 3
                ),
            }
        )
    return {"rows": rows, "summary": summary}


async def take_cost(redis: RedisServer, args: argparse.Namespace) -> dict[str, Any]:
    """The request path alone, in this process: one ``take`` of a call's three buckets (target rpm and
    tpm, agent rpm), paced at ~1000 calls/s, in-memory limits vs leases from Redis (with its sync task)."""
    demands = [
        Demand("chat/target/m/rpm", 10_000_000, 1),
        Demand("chat/target/m/tpm", 10_000_000_000, 8),
        Demand("chat/agent/bench/rpm", 10_000_000, 1),
    ]
    shared = SharedLimits(redis.url, prefix=f"cost-{secrets.token_hex(3)}", replicas=1)
    await shared.start()
    limiters: dict[str, Limits] = {"local": LocalLimits(), "shared": shared}
    samples: dict[str, list[float]] = {"local": [], "shared": []}
    try:
        for _ in range(args.rounds):
            for name, limits in limiters.items():
                for _ in range(args.takes):
                    started = time.perf_counter()
                    wait = await limits.take(demands, time.monotonic())
                    samples[name].append((time.perf_counter() - started) * 1e6)
                    assert wait == 0
                    await asyncio.sleep(0.001)
    finally:
        await shared.close()
    out: dict[str, Any] = {"takes_per_round": args.takes, "rounds": args.rounds}
    for name, values in samples.items():
        values.sort()
        out[f"{name}_p50_us"] = round(values[len(values) // 2], 2)
        out[f"{name}_p99_us"] = round(values[int(len(values) * 0.99)], 2)
    out["added_p50_us"] = round(out["shared_p50_us"] - out["local_p50_us"], 2)
    out["added_p99_us"] = round(out["shared_p99_us"] - out["local_p99_us"], 2)
    print(json.dumps(out), flush=True)
    return out


async def skewed(  # noqa: PLR0917 - one bench cell
    tmp: Path,
    base: str,
    fake_stats: str,
    redis: RedisServer | None,
    rpm: int,
    seconds: float,
    replicas_hint: int,
    label: str,
    workers: tuple[int, int, int] = (6, 2, 1),
) -> dict[str, Any]:
    """3 replicas, load split 6:2:1 (and a fourth run with one replica idle): admitted vs allowed."""
    config = write_config(tmp / f"{label}.json", {"chat": policy(base, rpm)})
    prefix = f"s-{secrets.token_hex(3)}"
    gws = [
        GatewayProcess(
            config, redis.url if redis else None, replicas=replicas_hint, prefix=prefix, name=f"{label}{i}"
        ).start()
        for i in range(3)
    ]
    try:
        for gw in gws:
            await gw.ready()
        async with aiohttp.ClientSession() as http:
            async with http.post(fake_stats.replace("stats", "reset")) as resp:
                await resp.read()
            tally = Tally()
            started = time.monotonic()
            names = ("hot", "warm", "cold")
            split = {n: (gw.url, w) for n, gw, w in zip(names, gws, workers, strict=True) if w}
            await drive(split, BODY, seconds, tally)
            elapsed = time.monotonic() - started
            async with http.get(fake_stats) as resp:
                admitted = int((await resp.json())["chatRequests"])
    finally:
        for gw in gws:
            gw.stop()
    allowed = rpm + rpm * elapsed / 60
    return {
        "setup": label,
        "rpm": rpm,
        "seconds": round(elapsed, 2),
        "admitted": admitted,
        "allowed": round(allowed, 1),
        "admitted_over_allowed": round(admitted / allowed, 3),
        "workers_per_replica": list(workers),
        "per_replica_ok": {name: tally.ok(name) for name in split},
        "offered": tally.total(),
    }


async def main(args: argparse.Namespace) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="stoa-bench-limits-"))
    port = free_port()
    fake = subprocess.Popen(  # noqa: ASYNC220 - started once, before any load
        [sys.executable, "-m", "stoa_testing.fake_provider", "--port", str(port), "--reply", "Paris."],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    redis = RedisServer().start()
    base = f"http://127.0.0.1:{port}/v1"
    stats = f"http://127.0.0.1:{port}/_admin/stats"
    try:
        await wait_http(f"http://127.0.0.1:{port}/healthz")
        cost = await take_cost(redis, args)
        latency = {} if args.ratios_only else await added_latency(tmp, base, redis, args)
        ratios = []
        for label, backend, hint, workers in (
            ("shared (Redis)", redis, 3, (6, 2, 1)),
            ("shared (Redis), one replica idle", redis, 3, (6, 2, 0)),
            ("split (limit / 3 per replica, no Redis)", None, 3, (6, 2, 1)),
            ("split (limit / 3 per replica, no Redis), one replica idle", None, 3, (6, 2, 0)),
            ("per replica (before: each replica the whole limit)", None, 1, (6, 2, 1)),
        ):
            name = f"{label.split(' ')[0]}{sum(workers)}"
            row = await skewed(tmp, base, stats, backend, args.rpm, args.skew_seconds, hint, name, workers)
            row["setup"] = label
            ratios.append(row)
            print(json.dumps(row), flush=True)
    finally:
        fake.terminate()
        fake.wait(10)
        redis.destroy()
    out = {
        "load_generator": "python asyncio + aiohttp closed loop; every server its own process on loopback",
        "seconds_per_cell": args.seconds,
        "take_cost_in_process": cost,
        "latency_under_the_limit": latency,
        "skewed_3_replicas": ratios,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "gateway_shared_limits.json").write_text(json.dumps(out, indent=2))
    if args.ratios_only:  # keep the latency part of an earlier run
        previous = RESULTS / "gateway_shared_limits.json"
        if previous.exists():
            out["latency_under_the_limit"] = json.loads(previous.read_text()).get(
                "latency_under_the_limit", {}
            )
    print(json.dumps(out["latency_under_the_limit"].get("summary"), indent=2))
    print(f"wrote {RESULTS / 'gateway_shared_limits.json'}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--rpm", type=int, default=300)
    parser.add_argument("--skew-seconds", type=float, default=10.0)
    parser.add_argument("--ratios-only", action="store_true", help="skip the HTTP latency cells")
    parser.add_argument("--takes", type=int, default=5000, help="takes per limiter and round (in process)")
    asyncio.run(main(parser.parse_args()))
