"""Added latency when the primary fails, with the circuit breaker closed (primary tried every time)
vs open (primary skipped). In-process gateway and fakes, sequential requests.

    .venv/bin/python bench/gateway_failover.py [--requests 200]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from stoa_gateway.server import start_gateway
from stoa_testing.fake_provider import Behaviour, RunningFake, start_fake_provider
from stoa_testing.loadgen import percentile

RESULTS = Path(__file__).parent / "results"
BODY = {"model": "chat", "messages": [{"role": "user", "content": "ping"}]}
TIMEOUT = 0.25


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}/v1"


async def cell(primary_url: str, backup: RunningFake, *, breaker: bool, requests: int) -> dict[str, Any]:
    spec = {
        "targets": [
            {"name": "primary", "baseURL": primary_url, "model": "m", "timeoutSeconds": TIMEOUT},
            {"name": "backup", "baseURL": backup.base_url, "model": "m"},
        ],
        "retry": {"attempts": 2},
        "circuitBreaker": {"enabled": breaker, "minRequests": 3, "openSeconds": 600},
    }
    path = Path(tempfile.mkdtemp()) / "gw.json"
    path.write_text(json.dumps({"policies": [{"name": "chat", "spec": spec}]}))
    gw = await start_gateway(path, reload_interval=0)
    latencies: list[float] = []
    try:
        async with aiohttp.ClientSession() as session:
            for i in range(requests + 5):
                started = time.monotonic()
                async with session.post(f"{gw.base_url}/chat/completions", json=BODY) as resp:
                    await resp.read()
                    assert resp.status == 200, resp.status
                if i >= 5:  # the first requests open the breaker
                    latencies.append((time.monotonic() - started) * 1000)
    finally:
        await gw.close()
    return {"p50_ms": round(percentile(latencies, 0.5), 3), "p99_ms": round(percentile(latencies, 0.99), 3)}


async def main(args: argparse.Namespace) -> None:
    backup = await start_fake_provider()
    healthy = await start_fake_provider()
    failing = await start_fake_provider(default=Behaviour(status=500))
    hanging = await start_fake_provider(default=Behaviour(hang=True))
    rows = []
    try:
        base = await cell(healthy.base_url, backup, breaker=True, requests=args.requests)
        rows.append({"failure": "none (healthy primary)", "breaker": "closed", **base, "added_p50_ms": 0.0})
        print(f"{'healthy primary':<22} breaker=closed p50={base['p50_ms']:.2f}ms p99={base['p99_ms']:.2f}ms")
        modes = {
            "connection refused": closed_port_url(),
            "status 500": failing.base_url,
            f"timeout ({TIMEOUT}s)": hanging.base_url,
        }
        for failure, url in modes.items():
            for breaker in (False, True):
                requests = 20 if (failure.startswith("timeout") and not breaker) else args.requests
                result = await cell(url, backup, breaker=breaker, requests=requests)
                added = round(result["p50_ms"] - base["p50_ms"], 3)
                state = "open" if breaker else "closed (disabled)"
                rows.append({"failure": failure, "breaker": state, **result, "added_p50_ms": added})
                print(
                    f"{failure:<22} breaker={state:<17} p50={result['p50_ms']:.2f}ms "
                    f"p99={result['p99_ms']:.2f}ms added_p50={added:.2f}ms"
                )
    finally:
        for fake in (backup, healthy, failing, hanging):
            await fake.close()
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "gateway_failover.json").write_text(
        json.dumps({"requests_per_cell": args.requests, "rows": rows}, indent=2)
    )
    print(f"wrote {RESULTS / 'gateway_failover.json'}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=200)
    asyncio.run(main(parser.parse_args()))
