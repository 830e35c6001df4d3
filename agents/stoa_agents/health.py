"""``/healthz``, ``/readyz`` (broker + database connected) and ``/metrics`` on the metrics port."""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from stoa_agents.metrics import AgentMetrics


async def start_health_server(
    host: str, port: int, metrics: AgentMetrics, ready: Callable[[], tuple[bool, str]]
) -> web.AppRunner:
    async def healthz(_request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def readyz(_request: web.Request) -> web.Response:
        ok, detail = ready()
        return web.Response(status=200 if ok else 503, text=f"{detail}\n")

    async def metrics_handler(_request: web.Request) -> web.Response:
        body = generate_latest(metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
