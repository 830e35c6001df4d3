"""The gateway HTTP server: app factory, config hot reload, ``run_gateway`` and an in-process starter."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from stoa_gateway.audit import AuditLog
from stoa_gateway.config import ConfigError, content_hash, parse_gateway_config
from stoa_gateway.gateway import Gateway
from stoa_gateway.health_check import health_loop
from stoa_gateway.limits import Limits, LocalLimits
from stoa_gateway.metrics import GatewayMetrics
from stoa_gateway.proxy import GATEWAY, handle_chat_completions
from stoa_gateway.running import RunningServer, serve
from stoa_telemetry.otel import setup_tracing, shutdown_tracing

log = logging.getLogger("stoa.gateway")
RELOAD_TASK = web.AppKey("reload_task", asyncio.Task[None])


async def _models(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY]
    data = [{"id": name, "object": "model", "created": 0, "owned_by": "stoa"} for name in gw.runtimes]
    return web.json_response({"object": "list", "data": data})


async def _healthz(_request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def _readyz(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY]
    if gw.session is None or gw.session.closed:
        return web.json_response({"status": "not ready"}, status=503)
    return web.json_response({"status": "ready", "policies": len(gw.runtimes)})


async def _metrics(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY]
    gw.metrics.limits_shared.set(1 if gw.limits.shared else 0)
    return web.Response(
        body=generate_latest(gw.metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
    )


async def _status(request: web.Request) -> web.Response:
    return web.json_response(request.app[GATEWAY].status())


async def _audit(request: web.Request) -> web.Response:
    """``GET /v1/stoa/audit?after=SEQ&limit=N``: the audit records this replica still holds."""
    try:
        after = int(request.query.get("after", "0"))
        limit = int(request.query.get("limit", "500"))
    except ValueError:
        return web.json_response({"error": "after and limit must be integers"}, status=400)
    if after < 0 or not 1 <= limit <= 1000:
        return web.json_response({"error": "after must be >= 0 and limit 1..1000"}, status=400)
    return web.json_response(request.app[GATEWAY].audit.recent(after, limit))


def reload_once(gw: Gateway, path: Path) -> bool:
    """Apply the file if its content changed and validates; returns True when a new config is active.

    A file that does not validate leaves the active config in place (logged, counted and shown in
    status once per distinct content).
    """
    try:
        content = path.read_bytes()
    except OSError as exc:
        message = f"cannot read {path}: {exc}"
        if gw.last_reload_error != message:
            log.error("Config reload failed config=%s error=%s", path, message)
            gw.metrics.config_reloads.labels("error").inc()
            gw.last_reload_error = message
        return False
    digest = content_hash(content)
    if digest in (gw.config_hash, gw.rejected_hash):
        return False
    try:
        config = parse_gateway_config(content, str(path))
    except ConfigError as exc:
        gw.rejected_hash = digest
        gw.last_reload_error = str(exc)
        gw.metrics.config_reloads.labels("error").inc()
        log.error("Config reload rejected, keeping the active config config=%s error=%s", path, exc)
        gw.audit.emit("config_rejected", policy="*", target=None, reason=str(exc)[:500], trace_id=None)
        return False
    gw.apply_config(config, digest)
    gw.metrics.config_reloads.labels("ok").inc()
    log.info("Config reloaded config=%s policies=%d hash=%s", path, len(config.policies), digest[:12])
    gw.audit.emit("config_reloaded", policy="*", target=None, reason=f"hash {digest[:12]}", trace_id=None)
    return True


async def _watch(gw: Gateway, path: Path, interval: float) -> None:
    while True:
        await asyncio.sleep(interval)
        try:
            reload_once(gw, path)
        except Exception:  # a watcher that dies silently would freeze the config
            log.exception("Config watcher error config=%s", path)


def create_app(
    config_path: str | Path,
    *,
    audit_log: str | None = None,
    reload_interval: float = 1.0,
    connector_limit: int = 1000,
    limits: Limits | None = None,
) -> web.Application:
    """The gateway aiohttp app; the config file is read now (``ConfigError`` when invalid).

    ``limits``: where buckets and spend live (default: this process alone, ``LocalLimits()``).
    """
    path = Path(config_path)
    try:
        content = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from exc
    config = parse_gateway_config(content, str(path))
    gw = Gateway(
        config, content_hash(content), AuditLog(audit_log), GatewayMetrics(), limits or LocalLimits()
    )
    app = web.Application(client_max_size=32 * 1024 * 1024)
    app[GATEWAY] = gw

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        gw.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=connector_limit, ttl_dns_cache=60),
            timeout=aiohttp.ClientTimeout(total=None),
            auto_decompress=True,
        )
        task = asyncio.create_task(_watch(gw, path, reload_interval)) if reload_interval > 0 else None
        health = asyncio.create_task(health_loop(gw))
        await gw.limits.start()
        gw.metrics.limits_shared.set(1 if gw.limits.shared else 0)
        log.info(
            "Gateway started config=%s policies=%d limits=%s", path, len(config.policies), gw.limits.status()
        )
        yield
        health.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await health
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await gw.limits.close()
        await gw.session.close()
        gw.audit.close()

    app.cleanup_ctx.append(lifecycle)
    app.router.add_post("/v1/chat/completions", handle_chat_completions)
    app.router.add_post("/chat/completions", handle_chat_completions)
    app.router.add_get("/v1/models", _models)
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/readyz", _readyz)
    app.router.add_get("/metrics", _metrics)
    app.router.add_get("/v1/stoa/status", _status)
    app.router.add_get("/v1/stoa/audit", _audit)
    return app


def run_gateway(
    config_path: str, host: str, port: int, audit_log: str | None, limits: Limits | None = None
) -> None:
    """Serve until SIGINT/SIGTERM; in-flight requests get up to 30 s to finish."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    setup_tracing("stoa-gateway")  # OTEL_* from the environment; off without an endpoint
    app = create_app(config_path, audit_log=audit_log, limits=limits)
    # handler_cancellation: a client that goes away (an agent killed mid-turn) cancels its upstream call,
    # so nobody pays for an answer that no one will read and least-busy routing sees the slot free up.
    web.run_app(
        app,
        host=host,
        port=port,
        shutdown_timeout=30,
        access_log=None,
        print=None,
        handler_cancellation=True,
    )
    shutdown_tracing()


class RunningGateway(RunningServer):
    @property
    def gateway(self) -> Gateway:
        return self.runner.app[GATEWAY]


async def start_gateway(
    config_path: str | Path,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    audit_log: str | None = "off",
    reload_interval: float = 1.0,
    limits: Limits | None = None,
) -> RunningGateway:
    """Start the gateway inside the running loop (tests, benchmarks); ``port=0`` picks a free port."""
    app = create_app(config_path, audit_log=audit_log, reload_interval=reload_interval, limits=limits)
    runner, bound = await serve(
        app, host, port, access_log=None, shutdown_timeout=5, handler_cancellation=True
    )
    return RunningGateway(runner, host, bound)
