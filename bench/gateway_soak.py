"""Soak: >= 1M requests through one gateway process (non-stream, stream, failovers, client disconnects),
its RSS and open file descriptors sampled as it goes. Goal: RSS at the end within 10% of RSS after the
first 100k requests. Writes bench/results/gateway_soak.json.

The bulk of the load comes from ``wrk`` (Debian; installed when missing and root) with a Lua script that
mixes 55% non-stream, 30% stream and 15% failover calls (a primary answering 500, breaker off, so every
such call fails over), each with its own ``X-Stoa-Conversation`` and one of 300 agents; a Python loop
beside it makes calls to a slow target and walks away after 20 ms (client disconnects). Requests are
counted by the gateway itself (``stoa_gateway_requests_total``).

    .venv/bin/python bench/gateway_soak.py [--requests 1000000] [--connections 32]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp

from stoa_devenv.procs import apt_install, free_port
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


WRK_SCRIPT = """
local bodies = {
  '{"model":"chat","messages":[{"role":"user","content":"What is the capital of France?"}]}',
  '{"model":"chat","stream":true,"messages":[{"role":"user","content":"What is the capital of France?"}]}',
  '{"model":"flaky","messages":[{"role":"user","content":"What is the capital of France?"}]}',
}
local cycle = {}
for i = 1, 20 do
  local kind = 1
  if i > 11 then kind = 2 end
  if i > 17 then kind = 3 end
  cycle[i] = kind
end
local counter = 0
local offset = 0
local threads = 0
function setup(thread)
  thread:set("offset", threads * 100000000)
  threads = threads + 1
end
function init(args)
  offset = offset or 0
end
function request()
  counter = counter + 1
  local n = offset + counter
  local headers = {}
  headers["Content-Type"] = "application/json"
  headers["X-Stoa-Agent"] = "agent-" .. (n % 300)
  headers["X-Stoa-Conversation"] = "conv-" .. n
  return wrk.format("POST", "/v1/chat/completions", headers, bodies[cycle[(n % 20) + 1]])
end
"""


async def requests_served(http: aiohttp.ClientSession, gw_url: str) -> dict[str, float]:
    """``stoa_gateway_requests_total`` by outcome, as the gateway counted them."""
    async with http.get(f"{gw_url}/metrics") as resp:
        text = await resp.text()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("stoa_gateway_requests_total{"):
            series, _, value = line.rpartition(" ")
            outcome = series.split('outcome="', 1)[1].split('"', 1)[0]
            out[outcome] = out.get(outcome, 0.0) + float(value)
    return out


async def disconnects(gw_url: str, stop: asyncio.Event, counts: Counter[str]) -> None:
    """Calls to a target that answers after 0.2 s, abandoned after 20 ms: clients that go away."""
    body = {"model": "slow", "messages": [{"role": "user", "content": "hello"}]}
    async with aiohttp.ClientSession() as http:
        while not stop.is_set():
            try:
                timeout = aiohttp.ClientTimeout(total=0.02)
                async with http.post(f"{gw_url}/v1/chat/completions", json=body, timeout=timeout) as resp:
                    await resp.read()
                    counts[f"slow:{resp.status}"] += 1
            except TimeoutError:
                counts["slow:client_gone"] += 1
            except aiohttp.ClientError as exc:
                counts[f"slow:{type(exc).__name__}"] += 1
            await asyncio.sleep(0.03)


async def soak(gw_url: str, pid: int, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    script = tmp / "mix.lua"
    script.write_text(WRK_SCRIPT)
    wrk = shutil.which("wrk")
    if wrk is None:
        apt_install(["wrk"], "the soak's load generator")
        wrk = shutil.which("wrk") or "wrk"
    samples: list[dict[str, float]] = []
    started = time.monotonic()
    stop = asyncio.Event()
    side: Counter[str] = Counter()
    side_task = asyncio.create_task(disconnects(gw_url, stop, side))
    wrk_runs = 0
    async with aiohttp.ClientSession() as http:

        async def sample() -> float:
            served = sum((await requests_served(http, gw_url)).values())
            samples.append(
                {
                    "requests": int(served),
                    "seconds": round(time.monotonic() - started, 1),
                    "rss_mib": round(rss_mib(pid), 2),
                    "fds": open_fds(pid),
                }
            )
            return served

        served = await sample()
        while served < args.requests and time.monotonic() - started < args.max_seconds:
            cmd = [wrk, "-t2", f"-c{args.connections}", f"-d{args.chunk_seconds}s", "-s", str(script), gw_url]
            proc = await asyncio.create_subprocess_exec(
                *cmd, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
            )
            await proc.wait()
            wrk_runs += 1
            served = await sample()
            print(json.dumps(samples[-1]), flush=True)
        stop.set()
        await side_task
        outcomes = await requests_served(http, gw_url)
    return {
        "outcomes": {k: int(v) for k, v in outcomes.items()},
        "client_side_disconnect_loop": dict(side),
        "wrk_runs": wrk_runs,
        "samples": samples,
        "seconds": round(time.monotonic() - started, 1),
    }


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
        result = await soak(gw.url, gw.process.pid, args, tmp)
    finally:
        gw.stop()
        for proc in fakes:
            proc.terminate()
            proc.wait(10)
    summary = summarize(result["samples"])
    summary["requests_reached"] = result["samples"][-1]["requests"]
    summary["goal_1m_requests"] = summary["requests_reached"] >= 1_000_000
    out = {"requests": args.requests, "connections": args.connections, **result, "summary": summary}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "gateway_soak.json").write_text(json.dumps(out, indent=2))
    print(json.dumps({"outcomes": result["outcomes"], "seconds": result["seconds"], **summary}, indent=2))
    print(f"wrote {RESULTS / 'gateway_soak.json'}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=1_000_000)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--chunk-seconds", type=int, default=15, help="wrk run length between samples")
    parser.add_argument("--max-seconds", type=float, default=7200, help="stop even if short of --requests")
    asyncio.run(main(parser.parse_args()))
