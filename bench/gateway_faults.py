"""Failure budget: agents' calls through the gateway while 30% of primary calls fail (500, 429, timeouts,
connection resets) and a healthy fallback is there; success ratio and added latency percentiles, side by
side with the LiteLLM proxy given the equivalent policy, in the same run.

Equivalent policy on both: try the primary, on any failure the backup, once; 1 s timeout; no cooldown
(Stoa: breaker off, Retry-After not honoured; LiteLLM: ``disable_cooldowns``, ``num_retries: 0``), so
every call meets the primary's failures. A call succeeds when the client gets 200 (no client retries).
Writes bench/results/gateway_faults.json.

    .venv/bin/python bench/gateway_faults.py [--calls 2000] [--litellm .bench-venv/bin/litellm]
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
from pathlib import Path
from typing import Any

import aiohttp

from stoa_devenv.procs import free_port
from stoa_testing.loadgen import percentile
from stoa_testing.replicas import GatewayProcess, write_config

RESULTS = Path(__file__).parent / "results"
BODY = {"model": "chat", "messages": [{"role": "user", "content": "What is the capital of France?"}]}
TIMEOUT = 1.0
FAILURES = ({"status": 500}, {"status": 429, "retryAfter": "1"}, {"hang": True}, {"reset": True})
LITELLM_ENV = {
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    "LITELLM_LOCAL_ANTHROPIC_BETA_HEADERS": "True",
    "LITELLM_LOCAL_BLOG_POSTS": "True",
    "LITELLM_LOCAL_AUTOROUTER_PRESETS": "True",
    "LITELLM_LOCAL_POLICY_TEMPLATES": "True",
    "LITELLM_MODE": "PRODUCTION",
    "NO_PROXY": "127.0.0.1,localhost",
}
LITELLM_KEY = "sk-stoa-bench-7f3a"


def spawn(
    args: list[str], env: dict[str, str] | None = None, log: Path | None = None
) -> subprocess.Popen[bytes]:
    out = log.open("ab") if log else subprocess.DEVNULL
    return subprocess.Popen(args, env={**os.environ, **(env or {})}, stdout=out, stderr=subprocess.STDOUT)


async def ready(url: str, seconds: float, headers: dict[str, str] | None = None) -> None:
    deadline = time.monotonic() + seconds
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            try:
                async with http.get(url, headers=headers) as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.2)
    raise RuntimeError(f"{url} not ready after {seconds}s")


def failure_script(calls: int, rate: float, seed: int) -> list[dict[str, Any]]:
    """One behaviour per primary call: ``rate`` of them a failure, the four kinds in equal parts."""
    rand = random.Random(seed)
    return [rand.choice(FAILURES) if rand.random() < rate else {} for _ in range(calls)]


async def script(http: aiohttp.ClientSession, port: int, queue: list[dict[str, Any]]) -> None:
    async with http.post(f"http://127.0.0.1:{port}/_admin/reset") as resp:
        await resp.read()
    async with http.post(f"http://127.0.0.1:{port}/_admin/script", json={"queue": queue}) as resp:
        assert resp.status == 200, await resp.text()


async def calls(
    url: str, body: dict[str, Any], n: int, concurrency: int, headers: dict[str, str]
) -> dict[str, Any]:
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    remaining = n
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:

        async def worker() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                started = time.monotonic()
                try:
                    timeout = aiohttp.ClientTimeout(total=30)
                    async with http.post(url, json=body, headers=headers, timeout=timeout) as resp:
                        await resp.read()
                        key = str(resp.status)
                except (aiohttp.ClientError, TimeoutError) as exc:
                    key = type(exc).__name__
                statuses[key] = statuses.get(key, 0) + 1
                if key == "200":
                    latencies.append((time.monotonic() - started) * 1000)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    ok = statuses.get("200", 0)
    return {
        "calls": n,
        "ok": ok,
        "success_ratio": round(ok / n, 5),
        "statuses": statuses,
        "p50_ms": round(percentile(latencies, 0.5), 2),
        "p95_ms": round(percentile(latencies, 0.95), 2),
        "p99_ms": round(percentile(latencies, 0.99), 2),
    }


async def main(args: argparse.Namespace) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="stoa-faults-"))
    names = ["stoa-primary", "stoa-backup", "litellm-primary", "litellm-backup"]
    ports = {name: free_port() for name in names}
    procs = [
        spawn(
            [sys.executable, "-m", "stoa_testing.fake_provider", "--port", str(ports[n]), "--reply", "Paris."]
        )
        for n in names
    ]
    base = {n: f"http://127.0.0.1:{p}/v1" for n, p in ports.items()}
    config = write_config(
        tmp / "gateway.json",
        {
            "chat": {
                "targets": [
                    {
                        "name": "primary",
                        "baseURL": base["stoa-primary"],
                        "model": "fake",
                        "timeoutSeconds": TIMEOUT,
                    },
                    {
                        "name": "backup",
                        "baseURL": base["stoa-backup"],
                        "model": "fake",
                        "timeoutSeconds": TIMEOUT,
                    },
                ],
                "retry": {"attempts": 2, "honorRetryAfter": False},
                "circuitBreaker": {"enabled": False},
            }
        },
    )
    gw = GatewayProcess(config, None, replicas=1, name="stoa").start()
    results: dict[str, dict[str, Any]] = {}
    lite_url = None
    try:
        for n in names:
            await ready(f"http://127.0.0.1:{ports[n]}/healthz", 20)
        await gw.ready()
        setups = {"stoa": (f"{gw.url}/v1/chat/completions", BODY, {"X-Stoa-Agent": "bench"}, "stoa-primary")}
        if args.litellm_found:
            port = free_port()
            litellm_cfg = {
                "model_list": [
                    {
                        "model_name": name,
                        "litellm_params": {
                            "model": "openai/fake",
                            "api_base": base[f"litellm-{name}"],
                            "api_key": "unused",
                            "timeout": TIMEOUT,
                            "stream_timeout": TIMEOUT,
                        },
                        "model_info": {"input_cost_per_token": 0, "output_cost_per_token": 0},
                    }
                    for name in ("primary", "backup")
                ],
                "router_settings": {
                    "fallbacks": [{"primary": ["backup"]}],
                    "num_retries": 0,
                    "disable_cooldowns": True,
                },
                "general_settings": {"master_key": LITELLM_KEY},
            }
            (tmp / "litellm.yaml").write_text(json.dumps(litellm_cfg))
            cmd = [
                args.litellm,
                "--config",
                str(tmp / "litellm.yaml"),
                "--port",
                str(port),
                "--host",
                "127.0.0.1",
            ]
            procs.append(spawn(cmd, LITELLM_ENV, tmp / "litellm.log"))
            auth = {"Authorization": f"Bearer {LITELLM_KEY}"}
            await ready(f"http://127.0.0.1:{port}/health/liveliness", 120)
            lite_url = f"http://127.0.0.1:{port}/v1/chat/completions"
            setups["litellm"] = (lite_url, {**BODY, "model": "primary"}, auth, "litellm-primary")
        else:
            print(
                "LiteLLM not found; pass --litellm PATH (make bench installs it into .bench-venv)", flush=True
            )
        async with aiohttp.ClientSession() as http:
            for name, (url, body, headers, primary) in setups.items():
                await calls(url, body, 50, 4, headers)  # warm-up (LiteLLM's first call takes ~1 s)
                for cell, rate in (("healthy", 0.0), ("faults", args.failure_rate)):
                    await script(http, ports[primary], failure_script(args.calls * 2, rate, seed=11))
                    result = await calls(url, body, args.calls, args.concurrency, headers)
                    async with http.get(f"http://127.0.0.1:{ports[primary]}/_admin/stats") as resp:
                        result["primary_statuses"] = (await resp.json())["statuses"]
                    results[f"{name}/{cell}"] = result
                    print(f"{name:<8} {cell:<8} {json.dumps(result)}", flush=True)
    finally:
        gw.stop()
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(15)
    summary = {}
    for name in ("stoa", "litellm"):
        healthy, faults = results.get(f"{name}/healthy"), results.get(f"{name}/faults")
        if healthy and faults:
            summary[name] = {
                "success_ratio": faults["success_ratio"],
                "goal_999": faults["success_ratio"] >= 0.999,
                **{
                    f"added_{q}_ms": round(faults[f"{q}_ms"] - healthy[f"{q}_ms"], 2)
                    for q in ("p50", "p95", "p99")
                },
            }
    out = {
        "calls_per_cell": args.calls,
        "concurrency": args.concurrency,
        "primary_failure_rate": args.failure_rate,
        "failure_kinds": [
            "status 500",
            "status 429 (Retry-After 1)",
            f"timeout ({TIMEOUT:g}s)",
            "connection reset",
        ],
        "policy": "primary then backup once, 1 s timeout, no cooldown/breaker, no client retries",
        "cells": results,
        "summary": summary,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "gateway_faults.json").write_text(json.dumps(out, indent=2))
    print(json.dumps(summary, indent=2))
    print(f"wrote {RESULTS / 'gateway_faults.json'}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--failure-rate", type=float, default=0.3)
    parser.add_argument("--litellm", default=".bench-venv/bin/litellm")
    parsed = parser.parse_args()
    parsed.litellm_found = bool(parsed.litellm) and Path(parsed.litellm).exists()
    asyncio.run(main(parsed))
