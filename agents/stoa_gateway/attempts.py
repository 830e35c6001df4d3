"""The attempt loop: walk the plan, take each target's limits, try, classify, back off, fail over."""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time

from aiohttp import web
from opentelemetry.trace import Span

from stoa_gateway.call import Call
from stoa_gateway.completion import completion_response
from stoa_gateway.errors import error_payload, error_response
from stoa_gateway.gateway import Gateway
from stoa_gateway.outcomes import Ending, all_failed
from stoa_gateway.policy import Target
from stoa_gateway.retry import Disposition, Failure, classify_failure
from stoa_gateway.routing import AttemptRecord, Plan, RejectCode, Rejection, next_step
from stoa_gateway.state import ewma
from stoa_gateway.streaming import relay_stream
from stoa_gateway.telemetry import end_attempt, record_attempt, traceparent_of
from stoa_gateway.upstream import Completion, StreamStart, completions_url, open_stream, post_completion

log = logging.getLogger("stoa.gateway.proxy")


def flush_fallbacks(call: Call, to_target: str) -> None:
    """Targets passed over before an attempt on another target are fallbacks: count and audit them."""
    moved = [p for p in call.passed if p[0] != to_target]
    if not moved:
        return
    epoch = time.time()
    for target, reason, _detail in moved:
        call.gw.metrics.fallbacks.labels(call.policy, target, reason).inc()
        rt = call.runtime.target_runtime(target)
        rt.last_failover_reason = reason
        rt.last_failover_at = epoch
    call.gw.audit.emit(
        "fallback",
        policy=call.policy,
        target=to_target,
        reason="; ".join(p[2] for p in moved),
        trace_id=call.trace.trace_id,
        agent=call.agent,
        conversation=call.conversation,
        fromTarget=moved[0][0],
    )
    call.passed = [p for p in call.passed if p[0] == to_target]


def _headers(call: Call, target: Target, span: Span) -> dict[str, str]:
    headers = {"Content-Type": "application/json", "traceparent": traceparent_of(span)}
    key = Gateway.api_key(target)
    if key:
        headers["Authorization"] = f"Bearer {key}"
    if call.stream:
        headers["Accept"] = "text/event-stream"
    return headers


async def _skip_at_attempt_time(call: Call, target: Target, now: float) -> tuple[str, float] | None:
    """Why ``target`` cannot be tried right now (breaker, limits) and, for its limits, the seconds to
    wait; None after taking its slot."""
    if not call.gw.admit(call.runtime, target.name, now=now, trace_id=call.trace.trace_id):
        return "circuit_open", 0.0
    wait = await call.reservation.take_target(target, now)
    if wait > 0:
        call.gw.release(call.runtime, target.name)
        call.gw.metrics.rate_limited.labels(call.policy, "target", target.name).inc()
        return "rate_limited", wait
    return None


def _on_failure(call: Call, target: Target, result: Failure) -> tuple[Disposition, web.Response | None]:
    """Record a failed attempt; for a request-caused (fatal) answer, the response to pass through."""
    gw, now = call.gw, time.monotonic()
    disposition = classify_failure(result, call.spec.retry)
    gw.metrics.attempts.labels(call.policy, target.name, result.reason()).inc()
    if disposition is Disposition.FATAL:  # the provider is healthy: it judged the request
        gw.record(call.runtime, target.name, ok=True, now=now, trace_id=call.trace.trace_id, reason="")
        call.count(target.name, "upstream_rejected")
        payload = error_payload(result.message, type_="invalid_request_error", code="upstream_rejected")
        body = result.body or json.dumps(payload).encode()
        return disposition, web.Response(
            status=result.status or 502, body=body, content_type="application/json"
        )
    rt = call.runtime.target_runtime(target.name)
    rt.last_error = result.message
    rt.last_error_at = time.time()
    if result.retry_after is not None and call.spec.retry.honor_retry_after:
        rt.cooldown_until = max(rt.cooldown_until, now + result.retry_after)
    gw.record(
        call.runtime, target.name, ok=False, now=now, trace_id=call.trace.trace_id, reason=result.message
    )
    call.passed.append((target.name, result.reason(), f"{target.name}: {result.message}"))
    call.notes.append(f"{target.name}: {result.message}")
    return disposition, None


async def _attempt(
    request: web.Request, call: Call, target: Target, history: list[AttemptRecord], failures: list[Failure]
) -> web.StreamResponse | None:
    """One upstream attempt: the response to return, or None (recorded in ``history``) to go on."""
    gw, runtime = call.gw, call.runtime
    assert gw.session is not None
    payload = json.dumps({**call.body, "model": target.model}, separators=(",", ":")).encode()
    retry = any(r.attempted and r.target == target.name for r in history)
    span = call.spans.attempt(target, number=sum(r.attempted for r in history) + 1, retry=retry)
    decision, failure = "cancelled", None
    url, headers = completions_url(target.base_url), _headers(call, target, span)
    rt = runtime.target_runtime(target.name)
    rt.in_flight += 1
    in_flight = gw.metrics.child(gw.metrics.in_flight, call.policy, target.name)
    in_flight.inc()
    handed_over = False
    attempt_started = time.monotonic()
    try:
        result: Completion | StreamStart | Failure
        if call.stream:
            result = await open_stream(gw.session, url, payload, headers, target.timeout_seconds)
        else:
            result = await post_completion(gw.session, url, payload, headers, target.timeout_seconds)
        if isinstance(result, Failure):
            disposition, response = _on_failure(call, target, result)
            history.append(AttemptRecord(target.name, disposition, result.retry_after))
            failures.append(result)
            decision, failure = str(disposition), result
            return response
        decision = "ok"
        rt.last_success_at = time.time()
        gw.metrics.child(gw.metrics.attempts, call.policy, target.name, "ok").inc()
        if isinstance(result, Completion):
            rt.ewma_latency = ewma(rt.ewma_latency, time.monotonic() - attempt_started)
            gw.record(
                runtime, target.name, ok=True, now=time.monotonic(), trace_id=call.trace.trace_id, reason=""
            )
            return completion_response(call, target, result)
        handed_over = True
        return await relay_stream(request, call, target, result)
    except asyncio.CancelledError:
        gw.release(runtime, target.name)
        if call.spans.outcome is None:  # a stream's relay may have counted it already
            call.count(target.name, "client_disconnected")
        log.info(
            "Client went away, upstream call cancelled policy=%s target=%s trace=%s",
            call.policy,
            target.name,
            call.trace.trace_id,
        )
        raise
    finally:
        if not handed_over:
            rt.in_flight -= 1
            in_flight.dec()
        record_attempt(call, target, attempt_started, failure)
        end_attempt(span, decision, failure)


async def run_attempts(
    request: web.Request, call: Call, plan: Plan
) -> web.StreamResponse | Ending | Rejection:
    """Walk the plan; a success is handed to its relay, else how the request ends. When no target could
    be tried because its limits were taken meanwhile (shared limits: the plan's view of a Redis bucket is
    an estimate; ``take`` asks Redis), the rejection to queue with, as if the plan had seen it."""
    spec = call.spec
    history: list[AttemptRecord] = []
    failures: list[Failure] = []
    limit_waits: list[float] = []
    passed_before = len(call.passed)
    while (step := next_step(plan.targets, history, spec.retry, random.random())) is not None:  # noqa: S311
        target = spec.target(step.target)
        assert target is not None, "plan names come from this spec"
        if step.delay > 0:
            await asyncio.sleep(step.delay)
        skip = await _skip_at_attempt_time(call, target, time.monotonic())
        if skip is not None:
            reason, wait = skip
            if wait > 0:
                limit_waits.append(wait)
            history.append(AttemptRecord(target.name, Disposition.NEXT_TARGET, attempted=False))
            call.passed.append((target.name, reason, f"{target.name}: {reason.replace('_', ' ')}"))
            call.spans.skipped(target.name, reason)
            continue
        if any(r.attempted and r.target == target.name for r in history):
            call.gw.metrics.retries.labels(call.policy, target.name).inc()
        flush_fallbacks(call, target.name)
        response = await _attempt(request, call, target, history, failures)
        if response is not None:
            return response
    if limit_waits and not any(r.attempted for r in history):
        detail = "; ".join(f"{target}: {reason}" for target, reason, _ in call.passed[passed_before:])
        del call.passed[passed_before:]  # the next plan judges these targets again
        return Rejection(
            RejectCode.TARGETS_RATE_LIMITED, 429, f"all targets are rate limited ({detail})", min(limit_waits)
        )
    details = [*call.notes]
    details += [p[2] for p in call.passed if p[2] not in details]
    return all_failed(call.policy, failures, call.passed, "; ".join(details) or "no target could be tried")


def ending_response(call: Call, ending: Ending) -> web.Response:
    """Count, audit and answer a request that ends without an upstream answer."""
    gw = call.gw
    if ending.event == "all_targets_failed":
        for target, reason, _ in call.passed:
            gw.metrics.fallbacks.labels(call.policy, target, reason).inc()
    if ending.scope is not None:
        name = call.agent_label if ending.scope == "agent" else call.policy
        if ending.scope == "priority":
            name = str(call.priority)
        gw.metrics.rate_limited.labels(call.policy, ending.scope, name).inc()
    gw.audit.emit(
        ending.event,
        policy=call.policy,
        target=None,
        reason=ending.reason,
        trace_id=call.trace.trace_id,
        agent=call.agent,
        conversation=call.conversation,
        scope=ending.scope if ending.event != "all_targets_failed" else None,
    )
    call.count("none", ending.code)
    return error_response(
        ending.status, ending.message, type_=ending.type, code=ending.code, retry_after=ending.retry_after
    )
