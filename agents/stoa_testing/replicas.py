"""Gateway replicas as real processes (``stoa gateway`` sharing one config file and one Redis), and a
bounded closed-loop load that spreads calls over them with a chosen skew. Loopback only."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class GatewayProcess:
    config: Path
    redis_url: str | None
    replicas: int = 3
    prefix: str = "stoa-test"
    name: str = "gw"
    port: int = field(default_factory=_free_port)
    log: Path | None = None
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> GatewayProcess:
        args = [sys.executable, "-m", "stoa_gateway.cli", "--config", str(self.config), "--host", "127.0.0.1"]
        args += ["--port", str(self.port), "--audit-log", "off", "--replicas", str(self.replicas)]
        args += ["--limits-prefix", self.prefix]
        if self.redis_url:
            args += ["--redis-url", self.redis_url]
        self.log = self.config.parent / f"{self.name}.log"
        out = self.log.open("ab")
        env = dict(os.environ)
        self.process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env)
        out.close()
        return self

    async def ready(self, limit_seconds: float = 90.0) -> None:
        deadline = time.monotonic() + limit_seconds
        async with aiohttp.ClientSession() as http:
            while time.monotonic() < deadline:
                if self.process is not None and self.process.poll() is not None:
                    raise RuntimeError(f"gateway {self.name} exited: {self.tail()}")
                try:
                    async with http.get(f"{self.url}/readyz") as resp:
                        if resp.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.05)
        raise RuntimeError(f"gateway {self.name} not ready after {limit_seconds}s: {self.tail()}")

    async def status(self, http: aiohttp.ClientSession) -> dict[str, Any]:
        async with http.get(f"{self.url}/v1/stoa/status") as resp:
            data: dict[str, Any] = await resp.json()
            return data

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:] if self.log and self.log.exists() else ""


def write_config(path: Path, policies: dict[str, dict[str, Any]]) -> Path:
    path.write_text(json.dumps({"policies": [{"name": n, "spec": s} for n, s in policies.items()]}))
    return path


@dataclass
class Tally:
    statuses: Counter[tuple[str, int]] = field(default_factory=Counter)  # (gateway, status) -> calls

    def ok(self, gateway: str | None = None) -> int:
        return sum(n for (g, s), n in self.statuses.items() if s == 200 and gateway in (None, g))

    def total(self) -> int:
        return sum(self.statuses.values())


async def drive(
    targets: dict[str, tuple[str, int]],
    body: dict[str, Any],
    seconds: float,
    tally: Tally,
    headers: dict[str, str] | None = None,
) -> None:
    """``targets``: name -> (gateway URL, workers); workers post ``body`` back to back for ``seconds``."""
    deadline = time.monotonic() + seconds
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:

        async def worker(name: str, url: str) -> None:
            while time.monotonic() < deadline:
                try:
                    async with http.post(f"{url}/v1/chat/completions", json=body, headers=headers) as resp:
                        await resp.read()
                        tally.statuses[(name, resp.status)] += 1
                except aiohttp.ClientError:
                    tally.statuses[(name, 0)] += 1
                    await asyncio.sleep(0.01)

        await asyncio.gather(
            *(worker(name, url) for name, (url, workers) in targets.items() for _ in range(workers))
        )
