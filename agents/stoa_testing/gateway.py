"""Helpers for tests against a gateway and fake providers (used by Stoa's own tests; fine for others)."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp

from stoa_gateway.server import RunningGateway, start_gateway
from stoa_testing.fake_provider import RunningFake

FakeFactory = Callable[..., Awaitable[RunningFake]]


class GatewayFactory:
    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.running: list[RunningGateway] = []
        self.config_path = tmp_path / "gateway.yaml"
        self.audit_path = tmp_path / "audit.jsonl"

    async def __call__(
        self, policies: dict[str, dict[str, Any]], *, reload_interval: float = 0.0
    ) -> RunningGateway:
        self.write(policies)
        gw = await start_gateway(
            self.config_path, audit_log=str(self.audit_path), reload_interval=reload_interval
        )
        self.running.append(gw)
        return gw

    def write(self, policies: dict[str, dict[str, Any]]) -> None:
        config = {"policies": [{"name": name, "spec": spec} for name, spec in policies.items()]}
        self.config_path.write_text(json.dumps(config))

    def audit(self) -> list[dict[str, Any]]:
        if not self.audit_path.exists():
            return []
        return [json.loads(line) for line in self.audit_path.read_text().splitlines() if line]


def target(name: str, fake: RunningFake | str, **extra: Any) -> dict[str, Any]:
    base = fake if isinstance(fake, str) else fake.base_url
    return {"name": name, "baseURL": base, "model": f"model-{name}", **extra}


def ask(policy: str, content: str = "hello", **extra: Any) -> dict[str, Any]:
    return {"model": policy, "messages": [{"role": "user", "content": content}], **extra}


async def chat(
    http: aiohttp.ClientSession,
    gw: RunningGateway,
    body: dict[str, Any],
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, Any], dict[str, str]]:
    async with http.post(f"{gw.base_url}/chat/completions", json=body, headers=headers or {}) as resp:
        return resp.status, await resp.json(), dict(resp.headers)


async def chat_stream(
    http: aiohttp.ClientSession, gw: RunningGateway, body: dict[str, Any]
) -> tuple[int, list[str]]:
    """Status and the ``data`` of each SSE event (``[DONE]`` included)."""
    async with http.post(f"{gw.base_url}/chat/completions", json={**body, "stream": True}) as resp:
        text = await resp.text()
    events = [line[len("data: ") :] for line in text.splitlines() if line.startswith("data: ")]
    return resp.status, events


def stream_text(events: list[str]) -> str:
    out = []
    for data in events:
        if data == "[DONE]":
            continue
        chunk = json.loads(data)
        for choice in chunk.get("choices") or []:
            out.append((choice.get("delta") or {}).get("content") or "")
    return "".join(out)


async def metric(http: aiohttp.ClientSession, gw: RunningGateway, name: str, /, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``."""
    async with http.get(f"{gw.url}/metrics") as resp:
        text = await resp.text()
    total = 0.0
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        series, _, value = line.rpartition(" ")
        metric_name = series.split("{", 1)[0]
        if metric_name != name:
            continue
        if all(f'{k}="{v}"' in series for k, v in labels.items()):
            total += float(value)
    return total
