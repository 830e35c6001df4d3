"""Cost of a synthetic workload (80% short / 20% long questions) with the routing rule that sends
short prompts to the small model vs everything on the large model.

Prices per 1k tokens (USD): small 0.00015 in / 0.0006 out, large 0.0025 in / 0.01 out.

    .venv/bin/python bench/gateway_cost.py [--requests 500]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import tempfile
from pathlib import Path
from typing import Any

import aiohttp

from stoa_gateway.server import start_gateway
from stoa_testing.fake_provider import start_fake_provider

RESULTS = Path(__file__).parent / "results"
REPLY = "A reasonably detailed answer. " * 10  # 300 characters, ~75 tokens
SMALL = {"inputCostPer1k": 0.00015, "outputCostPer1k": 0.0006}
LARGE = {"inputCostPer1k": 0.0025, "outputCostPer1k": 0.01}


def workload(n: int, seed: int = 7) -> list[str]:
    rng = random.Random(seed)
    prompts = []
    for _ in range(n):
        if rng.random() < 0.8:
            prompts.append("Quick question: " + "what time is it " * rng.randint(2, 10))  # ~10-45 tokens
        else:
            prompts.append(
                "Please review this document carefully. "
                + "Lorem ipsum dolor sit amet. " * rng.randint(80, 160)
            )
    return prompts


async def main(args: argparse.Namespace) -> None:
    small = await start_fake_provider(replies=[REPLY])
    large = await start_fake_provider(replies=[REPLY])
    targets = [
        {"name": "large", "baseURL": large.base_url, "model": "large", **LARGE},
        {"name": "small", "baseURL": small.base_url, "model": "small", **SMALL},
    ]
    policies = [
        {
            "name": "routed",
            "spec": {
                "targets": targets,
                "routes": [
                    {
                        "name": "short",
                        "match": {"maxInputTokens": 200},
                        "targets": ["small"],
                        "fallbackTargets": ["large"],
                    }
                ],
            },
        },
        {"name": "large-only", "spec": {"targets": [targets[0]]}},
    ]
    path = Path(tempfile.mkdtemp()) / "gw.json"
    path.write_text(json.dumps({"policies": policies}))
    gw = await start_gateway(path, reload_interval=0)
    prompts = workload(args.requests)
    costs: dict[str, float] = {}
    served: dict[str, dict[str, int]] = {}
    try:
        async with aiohttp.ClientSession() as session:
            for policy in ("routed", "large-only"):
                served[policy] = {}
                for prompt in prompts:
                    body = {"model": policy, "messages": [{"role": "user", "content": prompt}]}
                    async with session.post(f"{gw.base_url}/chat/completions", json=body) as resp:
                        await resp.read()
                        target = resp.headers["X-Stoa-Target"]
                    served[policy][target] = served[policy].get(target, 0) + 1
            async with session.get(f"{gw.url}/metrics") as resp:
                text = await resp.text()
    finally:
        await gw.close()
        await small.close()
        await large.close()
    for line in text.splitlines():
        if line.startswith("stoa_gateway_cost_usd_total{"):
            series, _, value = line.rpartition(" ")
            policy = series.split('policy="', 1)[1].split('"', 1)[0]
            costs[policy] = costs.get(policy, 0.0) + float(value)
    saving = 1 - costs["routed"] / costs["large-only"]
    result: dict[str, Any] = {
        "requests": args.requests,
        "short_share": 0.8,
        "cost_usd": {k: round(v, 6) for k, v in costs.items()},
        "served": served,
        "saving": round(saving, 4),
    }
    print(f"{'policy':<12} {'cost USD':>10}  served")
    for policy in ("routed", "large-only"):
        print(f"{policy:<12} {costs[policy]:>10.4f}  {served[policy]}")
    print(f"saving with the routing rule: {saving:.1%}")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "gateway_cost.json").write_text(json.dumps(result, indent=2))
    print(f"wrote {RESULTS / 'gateway_cost.json'}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=500)
    asyncio.run(main(parser.parse_args()))
