"""An aiohttp application served inside the running event loop (tests, benchmarks, local mode)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aiohttp import web


async def serve(
    app: web.Application, host: str, port: int, **runner_options: Any
) -> tuple[web.AppRunner, int]:
    """Start ``app`` on host:port (``port=0`` picks a free port); returns the runner and the bound port."""
    runner = web.AppRunner(app, **runner_options)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    return runner, int(runner.addresses[0][1])


@dataclass
class RunningServer:
    runner: web.AppRunner
    host: str
    port: int

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        """The OpenAI-compatible base URL (``.../v1``)."""
        return f"{self.url}/v1"

    async def close(self) -> None:
        await self.runner.cleanup()
