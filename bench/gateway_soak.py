"""Soak: >= 1M requests through one gateway process (non-stream, stream, failovers, client disconnects),
its RSS and open file descriptors sampled as it goes. Goal: RSS at the end within 10% of RSS after the
first 100k requests. Writes bench/results/gateway_soak.json.

    .venv/bin/python bench/gateway_soak.py [--requests 1000000] [--concurrency 32]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp

from stoa_devenv.procs import free_port
from stoa_testing.replicas import GatewayProcess, write_config

RESULTS = Path(__file__).parent / "results"
PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * PAGE / 2**20


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def fake(port: int, *extra: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "stoa_testing.fake_provider", "--port", str(port), *extra],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def ready(url: str) -> None:
    async with aiohttp.ClientSession() as http:
        for _ in range(400):
            try:
                async with http.get(url) as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)
    raise RuntimeError(f"{url} not ready")


def kind_of(rand: random.Random) -> str:
    roll = rand.random()
    if roll < 0.55:
        return "plain"
    if roll < 0.85:
        return "stream"
    if roll < 0.97:
        return "failover"
    return "disconnect"


async def soak(gw_url: str, pid: int, args: argparse.Namespace) -> dict[str, Any]:
    rand = random.Random(7)
    done = 0
    outcomes: Counter[str] = Counter()
    samples: list[dict[str, float]] = []
    started = time.monotonic()
    url = f"{gw_url}/v1/chat/completions"
    next_sample = 0

    def sample() -> None:
        samples.append(
            {
                "requests": done,
                "seconds": round(time.monotonic() - started, 1),
                "rss_mib": round(rss_mib(pid), 2),
                "fds": open_fds(pid),
            }
        )

    sample()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:

        async def one(i: int) -> None:
            kind = kind_of(rand)
            body: dict[str, Any] = {
                "model": "flaky" if kind == "failover" else ("slow" if kind == "disconnect" else "chat"),
                "messages": [{"role": "user", "content": f"question {i % 997}"}],
                "stream": kind == "stream",
            }
            headers = {"X-Stoa-Agent": f"agent-{i % 300}", "X-Stoa-Conversation": f"conv-{i}"}
            try:
                timeout = aiohttp.ClientTimeout(total=0.02 if kind == "disconnect" else 30)
                async with http.post(url, json=body, headers=headers, timeout=timeout) as resp:
                    await resp.read()
                    outcomes[f"{kind}:{resp.status}"] += 1
            except TimeoutError:
                outcomes[f"{kind}:client_gone"] += 1
            except aiohttp.ClientError as exc:
                outcomes[f"{kind}:{type(exc).__name__}"] += 1

        async def worker(offset: int) -> None:
            nonlocal done, next_sample
            i = offset
            while done < args.requests:
                done += 1
                await one(i)
                i += args.concurrency
                if done >= next_sample:
                    next_sample += args.sample_every
                    sample()

        await asyncio.gather(*(worker(n) for n in range(args.concurrency)))
    sample()
    return {"outcomes": dict(outcomes), "samples": samples, "seconds": round(time.monotonic() - started, 1)}


def summarize(samples: list[dict[str, float]]) -> dict[str, Any]:
    at_100k = next((s for s in samples if s["requests"] >= 100_000), samples[0])
    end = samples[-1]
    peak = max(s["rss_mib"] for s in samples)
    return {
        "rss_mib_start": samples[0]["rss_mib"],
        "rss_mib_at_100k": at_100k["rss_mib"],
        "rss_mib_end": end["rss_mib"],
        "rss_mib_peak": peak,
        "rss_end_over_100k": round(end["rss_mib"] / at_100k["rss_mib"], 3),
        "fds_at_100k": at_100k["fds"],
        "fds_end": end["fds"],
        "fds_max": max(s["fds"] for s in samples),
        "goal_rss_within_10pct": end["rss_mib"] <= 1.10 * at_100k["rss_mib"],
    }


async def main(args: argparse.Namespace) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="stoa-soak-"))
    ports = {"good": free_port(), "bad": free_port(), "slow": free_port()}
    fakes = [
        fake(ports["good"], "--reply", "Paris is the capital of France."),
        fake(ports["bad"], "--status", "500"),
        fake(ports["slow"], "--latency", "0.2"),
    ]
    base = {name: f"http://127.0.0.1:{port}/v1" for name, port in ports.items()}
    config = write_config(
        tmp / "gateway.json",
        {
            "chat": {"targets": [{"name": "m", "baseURL": base["good"], "model": "fake"}]},
            "flaky": {  # every call fails over: primary 500 (breaker off, so it is tried each time)
                "targets": [
                    {"name": "primary", "baseURL": base["bad"], "model": "fake"},
                    {"name": "backup", "baseURL": base["good"], "model": "fake"},
                ],
                "circuitBreaker": {"enabled": False},
                "retry": {"attempts": 2},
            },
            "slow": {"targets": [{"name": "m", "baseURL": base["slow"], "model": "fake"}]},
        },
    )
    gw = GatewayProcess(config, None, replicas=1, name="soak").start()
    try:
        for port in ports.values():
            await ready(f"http://127.0.0.1:{port}/healthz")
        await gw.ready()
        assert gw.process is not None
        result = await soak(gw.url, gw.process.pid, args)
    finally:
        gw.stop()
        for proc in fakes:
            proc.terminate()
            proc.wait(10)
    summary = summarize(result["samples"])
    out = {"requests": args.requests, "concurrency": args.concurrency, **result, "summary": summary}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "gateway_soak.json").write_text(json.dumps(out, indent=2))
    print(json.dumps({"outcomes": result["outcomes"], "seconds": result["seconds"], **summary}, indent=2))
    print(f"wrote {RESULTS / 'gateway_soak.json'}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=1_000_000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--sample-every", type=int, default=20_000)
    asyncio.run(main(parser.parse_args()))
