"""Active health checks of ModelPolicy targets: a real one-token completion per target on a schedule.

A target that fails ``unhealthyThreshold`` checks in a row is skipped by routing (``unhealthy``) until
``healthyThreshold`` checks in a row pass, so a dead target is known before a user request reaches it.
A check the provider rejects as a bad request (a 4xx the retry policy calls fatal) or rate-limits (429)
proves the target is up, so it passes; timeouts, connection errors, 5xx and 401/403/404 fail.
Checks are not billed to any agent and do not count against the budget (one output token each).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time

from stoa_gateway.gateway import Gateway
from stoa_gateway.health_state import after_check, check_passed
from stoa_gateway.policy import Target
from stoa_gateway.retry import Failure, classify_failure
from stoa_gateway.state import PolicyRuntime
from stoa_gateway.upstream import completions_url, post_completion
from stoa_telemetry.spec import HealthCheck

log = logging.getLogger("stoa.gateway.health")
TICK_SECONDS = 0.5


async def check_target(
    gw: Gateway, runtime: PolicyRuntime, target: Target, cfg: HealthCheck
) -> Failure | None:
    """One real completion against ``target``; the failure, or None when it answered."""
    assert gw.session is not None
    payload = json.dumps(
        {"model": target.model, "messages": [{"role": "user", "content": cfg.prompt}], "max_tokens": 1}
    ).encode()
    headers = {"Content-Type": "application/json", "X-Stoa-Health-Check": "1"}
    key = Gateway.api_key(target)
    if key:
        headers["Authorization"] = f"Bearer {key}"
    result = await post_completion(
        gw.session,
        completions_url(target.base_url),
        payload,
        headers,
        min(cfg.timeout_seconds, target.timeout_seconds),
    )
    return result if isinstance(result, Failure) else None


def record_check(
    gw: Gateway, runtime: PolicyRuntime, target: Target, cfg: HealthCheck, failure: Failure | None
) -> None:
    rt = runtime.target_runtime(target.name)
    disposition = classify_failure(failure, runtime.spec.retry) if failure is not None else None
    ok = check_passed(failure, disposition)
    before = rt.health
    rt.health = after_check(before, ok, cfg)
    rt.last_health_check_at = time.time()
    rt.last_health_error = None if ok else (failure.message if failure else None)
    outcome = "ok" if ok else (failure.reason() if failure else "error")
    gw.metrics.health_checks.labels(runtime.name, target.name, outcome).inc()
    gw.metrics.target_healthy.labels(runtime.name, target.name).set(1 if rt.health.healthy else 0)
    if before.healthy != rt.health.healthy:
        event = "target_healthy" if rt.health.healthy else "target_unhealthy"
        reason = (
            "health checks pass again"
            if rt.health.healthy
            else f"health check failed: {rt.last_health_error}"
        )
        log.warning("Target %s policy=%s target=%s reason=%s", event, runtime.name, target.name, reason)
        gw.audit.emit(event, policy=runtime.name, target=target.name, reason=reason, trace_id=None)


async def health_loop(gw: Gateway) -> None:
    """Run each enabled policy's checks at its interval (one check per target at a time)."""
    due: dict[tuple[str, str], float] = {}
    running: dict[tuple[str, str], asyncio.Task[None]] = {}

    async def one(runtime: PolicyRuntime, target: Target, cfg: HealthCheck) -> None:
        try:
            failure = await check_target(gw, runtime, target, cfg)
        except Exception as exc:  # a check that crashes must not stop the loop
            log.warning("Health check crashed policy=%s target=%s error=%r", runtime.name, target.name, exc)
            return
        record_check(gw, runtime, target, cfg, failure)

    try:
        while True:
            now = time.monotonic()
            for runtime in list(gw.runtimes.values()):
                cfg = runtime.spec.health_check
                if cfg is None or not cfg.enabled:
                    continue
                for target in runtime.spec.targets:
                    key = (runtime.name, target.name)
                    if key in running and not running[key].done():
                        continue
                    if now >= due.get(key, 0.0):
                        if key not in due:  # first sight of the target: export its (healthy) state
                            healthy = runtime.target_runtime(target.name).health.healthy
                            gw.metrics.target_healthy.labels(*key).set(1 if healthy else 0)
                        due[key] = now + cfg.interval_seconds
                        running[key] = asyncio.create_task(one(runtime, target, cfg))
            await asyncio.sleep(TICK_SECONDS)
    finally:
        for task in running.values():
            task.cancel()
        for task in running.values():
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
