"""Overhead of the gateway vs calling the fake provider directly vs the LiteLLM proxy.

Each server runs in its own process; the load generator (Python asyncio + aiohttp, closed loop)
runs here. Writes bench/results/gateway_overhead.json.

    .venv/bin/python bench/gateway_overhead.py [--seconds 6] [--litellm /tmp/litellm-venv/bin/litellm]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from stoa_testing.loadgen import run_load

RESULTS = Path(__file__).parent / "results"
BODY = {"model": "chat", "messages": [{"role": "user", "content": "What is the capital of France?"}]}
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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def wait_ready(url: str, limit_seconds: float, headers: dict[str, str] | None = None) -> None:
    deadline = time.monotonic() + limit_seconds
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            try:
                async with session.get(url, headers=headers) as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.2)
    raise RuntimeError(f"{url} not ready after {limit_seconds}s")


def spawn(args: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        args, env={**os.environ, **(env or {})}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


async def measure(
    name: str, url: str, body: dict[str, Any], args: argparse.Namespace, headers: dict[str, str] | None = None
) -> list[dict[str, Any]]:
    rows = []
    for stream in (False, True):
        for concurrency in args.concurrency:
            await run_load(
                url, body, concurrency=concurrency, seconds=1.0, headers=headers, stream=stream
            )  # warm-up
            result = await run_load(
                url, body, concurrency=concurrency, seconds=args.seconds, headers=headers, stream=stream
            )
            row = {"setup": name, "stream": stream, **result.as_dict()}
            rows.append(row)
            print(
                f"{name:<10} stream={stream!s:<5} c={concurrency:<3} rps={result.rps:>8} "
                f"p50={result.p50_ms:>8.2f}ms p99={result.p99_ms:>8.2f}ms errors={result.errors}",
                flush=True,
            )
    return rows


async def main(args: argparse.Namespace) -> None:
    procs: list[subprocess.Popen[bytes]] = []
    tmp = Path(tempfile.mkdtemp(prefix="stoa-bench-"))
    try:
        ports = {
            "primary": free_port(),
            "backup": free_port(),
            "gateway": free_port(),
            "litellm": free_port(),
        }
        for name in ("primary", "backup"):
            procs.append(
                spawn(
                    [
                        sys.executable,
                        "-m",
                        "stoa_testing.fake_provider",
                        "--port",
                        str(ports[name]),
                        "--reply",
                        "Paris is the capital of France.",
                    ]
                )
            )
        for name in ("primary", "backup"):
            await wait_ready(f"http://127.0.0.1:{ports[name]}/healthz", 20)
        base = {n: f"http://127.0.0.1:{ports[n]}/v1" for n in ("primary", "backup")}
        config = {
            "policies": [
                {
                    "name": "chat",
                    "spec": {
                        "targets": [
                            {"name": "primary", "baseURL": base["primary"], "model": "fake"},
                            {"name": "backup", "baseURL": base["backup"], "model": "fake"},
                        ],
                        "retry": {"attempts": 2},
                    },
                }
            ]
        }
        (tmp / "gateway.yaml").write_text(json.dumps(config))
        procs.append(
            spawn(
                [
                    sys.executable,
                    "-m",
                    "stoa_gateway.cli",
                    "--config",
                    str(tmp / "gateway.yaml"),
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(ports["gateway"]),
                    "--audit-log",
                    "off",
                ]
            )
        )
        await wait_ready(f"http://127.0.0.1:{ports['gateway']}/readyz", 20)

        rows = await measure("direct", f"{base['primary']}/chat/completions", BODY, args)
        rows += await measure("stoa", f"http://127.0.0.1:{ports['gateway']}/v1/chat/completions", BODY, args)

        if args.litellm_found:
            litellm_cfg = {
                "model_list": [
                    {
                        "model_name": name,
                        "litellm_params": {
                            "model": "openai/fake",
                            "api_base": base[name],
                            "api_key": "unused",
                        },
                        "model_info": {"input_cost_per_token": 0, "output_cost_per_token": 0},
                    }
                    for name in ("primary", "backup")
                ],
                "router_settings": {
                    "fallbacks": [{"primary": ["backup"]}],
                    "num_retries": 0,
                    "allowed_fails": 0,
                    "cooldown_time": 30,
                },
                "general_settings": {"master_key": LITELLM_KEY},
            }
            (tmp / "litellm.yaml").write_text(json.dumps(litellm_cfg))
            procs.append(
                spawn(
                    [
                        args.litellm,
                        "--config",
                        str(tmp / "litellm.yaml"),
                        "--port",
                        str(ports["litellm"]),
                        "--host",
                        "127.0.0.1",
                    ],
                    env=LITELLM_ENV,
                )
            )
            auth = {"Authorization": f"Bearer {LITELLM_KEY}"}
            await wait_ready(f"http://127.0.0.1:{ports['litellm']}/health/liveliness", 90)
            body = {**BODY, "model": "primary"}
            rows += await measure(
                "litellm",
                f"http://127.0.0.1:{ports['litellm']}/v1/chat/completions",
                body,
                args,
                headers=auth,
            )
        else:
            print("LiteLLM not found; pass --litellm PATH to include it", flush=True)
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(10)

    def find(setup: str, stream: bool, c: int) -> dict[str, Any] | None:
        return next(
            (r for r in rows if (r["setup"], r["stream"], r["concurrency"]) == (setup, stream, c)), None
        )

    summary = []
    for stream in (False, True):
        for c in args.concurrency:
            direct, stoa, lite = (
                find("direct", stream, c),
                find("stoa", stream, c),
                find("litellm", stream, c),
            )
            if not direct or not stoa:
                continue
            item: dict[str, Any] = {
                "stream": stream,
                "concurrency": c,
                "stoa_added_p50_ms": round(stoa["p50_ms"] - direct["p50_ms"], 3),
                "stoa_added_p99_ms": round(stoa["p99_ms"] - direct["p99_ms"], 3),
                "stoa_rps": stoa["rps"],
                "direct_rps": direct["rps"],
            }
            if lite:
                item.update(
                    {
                        "litellm_added_p50_ms": round(lite["p50_ms"] - direct["p50_ms"], 3),
                        "litellm_added_p99_ms": round(lite["p99_ms"] - direct["p99_ms"], 3),
                        "litellm_rps": lite["rps"],
                        "rps_ratio_stoa_over_litellm": round(stoa["rps"] / lite["rps"], 1)
                        if lite["rps"]
                        else None,
                        "added_p50_ratio_litellm_over_stoa": round(
                            (lite["p50_ms"] - direct["p50_ms"])
                            / max(1e-3, stoa["p50_ms"] - direct["p50_ms"]),
                            1,
                        ),
                    }
                )
            summary.append(item)
    print("\nsummary (added latency = setup p50/p99 minus direct p50/p99)")
    for item in summary:
        print(json.dumps(item))
    RESULTS.mkdir(exist_ok=True)
    out = {
        "load_generator": "python asyncio + aiohttp closed loop",
        "seconds_per_cell": args.seconds,
        "rows": rows,
        "summary": summary,
    }
    (RESULTS / "gateway_overhead.json").write_text(json.dumps(out, indent=2))
    print(f"wrote {RESULTS / 'gateway_overhead.json'}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--litellm", default="/tmp/litellm-venv/bin/litellm")
    parsed = parser.parse_args()
    parsed.litellm_found = bool(parsed.litellm) and Path(parsed.litellm).exists()
    asyncio.run(main(parsed))
