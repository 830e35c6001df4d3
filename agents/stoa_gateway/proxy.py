"""``POST /v1/chat/completions``: guardrails, planning, the attempt loop and the response relay."""

from __future__ import annotations

import asyncio
import json
import logging
import random
import secrets
import time
from dataclasses import dataclass, field, replace
from typing import Any

import aiohttp
from aiohttp import web

from stoa_gateway.costs import request_cost
from stoa_gateway.errors import error_payload, error_response
from stoa_gateway.gateway import Gateway
from stoa_gateway.guardrails import compile_rules, find_blocked, mask_messages, mask_pii
from stoa_gateway.limiter import bucket_charge, bucket_take
from stoa_gateway.policy import ModelPolicySpec, PiiKind, Target
from stoa_gateway.relay import StreamRelay
from stoa_gateway.retry import Disposition, Failure, classify_failure
from stoa_gateway.routing import AttemptRecord, Plan, RequestFeatures, next_step, plan_attempts
from stoa_gateway.sse import encode_json_event
from stoa_gateway.state import PolicyRuntime, ewma
from stoa_gateway.tokens import completion_text, estimate_input_tokens, message_texts
from stoa_gateway.tracing import TraceContext, child, trace_for_request
from stoa_gateway.upstream import Completion, StreamStart, completions_url, open_stream, post_completion

GATEWAY = web.AppKey("gateway", Gateway)

log = logging.getLogger("stoa.gateway.proxy")


@dataclass
class Call:
    """Everything about one client request that the attempt loop and the relay need."""

    gw: Gateway
    runtime: PolicyRuntime
    spec: ModelPolicySpec
    agent: str | None
    agent_label: str
    conversation: str | None
    trace: TraceContext
    features: RequestFeatures
    body: dict[str, Any]
    stream: bool
    started: float
    include_usage: bool = False
    passed: list[tuple[str, str, str]] = field(default_factory=list)  # (target, reason label, detail)
    notes: list[str] = field(default_factory=list)

    @property
    def policy(self) -> str:
        return self.runtime.name

    def count(self, target: str, outcome: str) -> None:
        self.gw.metrics.requests.labels(self.policy, target, self.agent_label, outcome).inc()


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def _bad_request(message: str, code: str) -> web.Response:
    return error_response(400, message, type_="invalid_request_error", code=code)


def _parse_body(raw: bytes) -> dict[str, Any] | web.Response:
    """The request body, or the 400 that says what is wrong with it."""
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return _bad_request("request body is not valid JSON", "invalid_json")
    if not isinstance(body, dict):
        return _bad_request("request body must be a JSON object", "invalid_json")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        return _bad_request("'model' is required: the name of a ModelPolicy", "missing_model")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return _bad_request("'messages' must be a non-empty list", "invalid_messages")
    return body


def _unknown_model(gw: Gateway, model: str, policy_name: str) -> web.Response:
    known = ", ".join(sorted(gw.runtimes)) or "none"
    return error_response(
        404,
        f"unknown model {model!r}: no ModelPolicy named {policy_name!r} (known: {known})",
        type_="invalid_request_error",
        code="model_not_found",
    )


def _blocked_input(call: Call, messages: list[Any]) -> web.Response | None:
    rules = compile_rules(call.spec.guardrails.input)
    if not (rules.keywords or rules.patterns):
        return None
    hit = find_blocked("\n".join(message_texts(messages)), rules)
    if hit is None:
        return None
    call.gw.metrics.guardrail.labels(call.policy, "input", "blocked", hit.split(" ", 1)[0]).inc()
    call.count("none", "guardrail_blocked")
    call.gw.audit.emit(
        "guardrail_blocked",
        policy=call.policy,
        target=None,
        reason=f"input matched {hit}",
        trace_id=call.trace.trace_id,
        agent=call.agent,
    )
    return error_response(
        400,
        f"request blocked by ModelPolicy {call.policy}: input matched blocked {hit}",
        type_="invalid_request_error",
        code="guardrail_blocked",
    )


def _upstream_body(call: Call, body: dict[str, Any], messages: list[Any]) -> dict[str, Any]:
    """The body sent upstream: masked messages, capped output tokens, usage asked when streaming."""
    upstream = dict(body)
    upstream["messages"] = messages
    if call.spec.guardrails.max_output_tokens is not None:
        key = "max_completion_tokens" if "max_completion_tokens" in body else "max_tokens"
        upstream[key] = call.features.max_output_tokens
    if call.stream:
        options = body.get("stream_options")
        options = options if isinstance(options, dict) else {}
        call.include_usage = bool(options.get("include_usage"))
        upstream["stream_options"] = {**options, "include_usage": True}
    return upstream


def _charge_agent(call: Call, now: float) -> None:
    limit = call.spec.rate_limit.for_agent(call.agent)
    if limit is None:
        return
    agent_rt = call.runtime.agent_runtime(call.agent)
    if limit.rpm is not None and agent_rt.rpm_bucket is not None:
        agent_rt.rpm_bucket = bucket_charge(agent_rt.rpm_bucket, limit.rpm, 1, now)
    if limit.tpm is not None and agent_rt.tpm_bucket is not None:
        agent_rt.tpm_bucket = bucket_charge(agent_rt.tpm_bucket, limit.tpm, call.features.input_tokens, now)


async def handle_chat_completions(request: web.Request) -> web.StreamResponse:
    gw = request.app[GATEWAY]
    started = time.monotonic()
    body = _parse_body(await request.read())
    if isinstance(body, web.Response):
        return body
    model: str = body["model"]
    policy_name, _, pinned = model.partition("/")
    runtime = gw.runtimes.get(policy_name)
    if runtime is None:
        return _unknown_model(gw, model, policy_name)
    spec = runtime.spec
    agent = request.headers.get("X-Stoa-Agent") or None
    requested = _int_or_none(body.get("max_completion_tokens")) or _int_or_none(body.get("max_tokens"))
    cap = spec.guardrails.max_output_tokens
    call = Call(
        gw=gw,
        runtime=runtime,
        spec=spec,
        agent=agent,
        agent_label=gw.metrics.agent(agent),
        conversation=request.headers.get("X-Stoa-Conversation") or None,
        trace=trace_for_request(
            request.headers.get("traceparent"), secrets.token_hex(16), secrets.token_hex(8)
        ),
        features=RequestFeatures(
            input_tokens=0,
            agent=agent,
            headers={k.lower(): v for k, v in request.headers.items()},
            pinned_target=pinned or None,
            max_output_tokens=min(requested, cap) if requested and cap else (requested or cap),
        ),
        body={},
        stream=bool(body.get("stream")),
        started=started,
    )
    messages: list[Any] = body["messages"]
    blocked = _blocked_input(call, messages)
    if blocked is not None:
        return blocked
    in_rules = compile_rules(spec.guardrails.input)
    if in_rules.pii:
        messages, counts = mask_messages(messages, in_rules.pii)
        _count_masked(call, "input", counts)
    call.features = replace(call.features, input_tokens=estimate_input_tokens(messages))
    call.body = _upstream_body(call, body, messages)
    now = time.monotonic()
    rand = random.random()  # noqa: S311 - load balancing, not cryptography
    plan = plan_attempts(spec, call.features, runtime.observed(now, time.time(), agent, rand))
    if plan.rejection is not None:
        return _reject(call, plan)
    _charge_agent(call, now)
    runtime.rr_counter += 1
    for skip in plan.skipped:
        call.passed.append((skip.target, str(skip.reason), f"{skip.target}: skipped, {skip.reason}"))
    return await _attempts(request, call, plan)


def _count_masked(call: Call, direction: str, counts: dict[PiiKind, int], target: str | None = None) -> None:
    if not counts:
        return
    for kind, n in counts.items():
        call.gw.metrics.guardrail.labels(call.policy, direction, "masked", str(kind)).inc(n)
    summary = ", ".join(f"{kind}={n}" for kind, n in sorted(counts.items()))
    call.gw.audit.emit(
        "guardrail_masked",
        policy=call.policy,
        target=target,
        reason=f"masked {direction} PII: {summary}",
        trace_id=call.trace.trace_id,
        agent=call.agent,
    )


def _reject(call: Call, plan: Plan) -> web.Response:
    rejection = plan.rejection
    assert rejection is not None
    code = str(rejection.code)
    scope = {"agent_rate_limited": "agent", "budget_exceeded": "budget", "rate_limited": "policy"}.get(code)
    if scope is not None:
        name = call.agent_label if scope == "agent" else call.policy
        call.gw.metrics.rate_limited.labels(call.policy, scope, name).inc()
    event = {"budget": "budget_exceeded", None: "no_target"}.get(scope, "rate_limited")
    call.gw.audit.emit(
        event,
        policy=call.policy,
        target=None,
        reason=rejection.message,
        trace_id=call.trace.trace_id,
        agent=call.agent,
        scope=scope,
    )
    call.count("none", code)
    type_ = {429: "rate_limit_error", 404: "invalid_request_error"}.get(rejection.status, "api_error")
    return error_response(
        rejection.status,
        f"ModelPolicy {call.policy}: {rejection.message}",
        type_=type_,
        code=code,
        retry_after=rejection.retry_after,
    )


def _flush_fallbacks(call: Call, to_target: str) -> None:
    """Targets passed over before an attempt on another target are fallbacks: count and audit them."""
    if not call.passed:
        return
    epoch = time.time()
    moved = [p for p in call.passed if p[0] != to_target]
    if not moved:
        return
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
        fromTarget=moved[0][0],
    )
    call.passed = [p for p in call.passed if p[0] == to_target]


def _headers(call: Call, target: Target) -> dict[str, str]:
    headers = {
        "Content-Type": "application/json",
        "traceparent": child(call.trace, secrets.token_hex(8)).header(),
    }
    key = Gateway.api_key(target)
    if key:
        headers["Authorization"] = f"Bearer {key}"
    if call.stream:
        headers["Accept"] = "text/event-stream"
    return headers


def _skip_at_attempt_time(call: Call, target: Target, now: float) -> str | None:
    """Why ``target`` cannot be tried right now (breaker, limits), or None after taking its slot."""
    if not call.gw.admit(call.runtime, target.name, now=now, trace_id=call.trace.trace_id):
        return "circuit_open"
    limited = _take_target_limits(call, target, now)
    if limited is not None:
        call.gw.release(call.runtime, target.name)
        return limited
    return None


def _on_failure(call: Call, target: Target, result: Failure) -> tuple[Disposition, web.Response | None]:
    """Record a failed attempt; for a request-caused (fatal) answer, the response to pass through."""
    gw, now = call.gw, time.monotonic()
    disposition = classify_failure(result, call.spec.retry)
    gw.metrics.attempts.labels(call.policy, target.name, result.reason()).inc()
    if disposition is Disposition.FATAL:
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
    url, headers = completions_url(target.base_url), _headers(call, target)
    rt = runtime.target_runtime(target.name)
    rt.in_flight += 1
    gw.metrics.in_flight.labels(call.policy, target.name).inc()
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
            return response
        rt.last_success_at = time.time()
        gw.metrics.attempts.labels(call.policy, target.name, "ok").inc()
        if isinstance(result, Completion):
            rt.ewma_latency = ewma(rt.ewma_latency, time.monotonic() - attempt_started)
            gw.record(
                runtime, target.name, ok=True, now=time.monotonic(), trace_id=call.trace.trace_id, reason=""
            )
            return _completion_response(call, target, result)
        handed_over = True
        return await _relay_stream(request, call, target, result)
    except asyncio.CancelledError:
        gw.release(runtime, target.name)
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
            gw.metrics.in_flight.labels(call.policy, target.name).dec()


async def _attempts(request: web.Request, call: Call, plan: Plan) -> web.StreamResponse:
    """Walk the plan: skip, try, classify, back off, fail over; hand a success to its relay."""
    gw, spec = call.gw, call.spec
    assert gw.session is not None
    history: list[AttemptRecord] = []
    failures: list[Failure] = []
    rand = random.random
    while (step := next_step(plan.targets, history, spec.retry, rand())) is not None:
        target = spec.target(step.target)
        if target is None:  # cannot happen: plan names come from this spec
            break
        if step.delay > 0:
            await asyncio.sleep(step.delay)
        skip = _skip_at_attempt_time(call, target, time.monotonic())
        if skip is not None:
            history.append(AttemptRecord(target.name, Disposition.NEXT_TARGET, attempted=False))
            call.passed.append(
                (
                    target.name,
                    "circuit_open" if skip == "circuit_open" else "rate_limited",
                    f"{target.name}: {skip.replace('_', ' ')}",
                )
            )
            continue
        if any(r.attempted and r.target == target.name for r in history):
            gw.metrics.retries.labels(call.policy, target.name).inc()
        _flush_fallbacks(call, target.name)
        response = await _attempt(request, call, target, history, failures)
        if response is not None:
            return response
    return _all_failed(call, failures, attempted_any=any(r.attempted for r in history))


def _take_target_limits(call: Call, target: Target, now: float) -> str | None:
    rt = call.runtime.target_runtime(target.name)
    if target.rpm is not None and rt.rpm_bucket is not None:
        ok, bucket, _ = bucket_take(rt.rpm_bucket, target.rpm, 1, now)
        rt.rpm_bucket = bucket
        if not ok:
            call.gw.metrics.rate_limited.labels(call.policy, "target", target.name).inc()
            return f"over its rpm limit ({target.rpm})"
    if target.tpm is not None and rt.tpm_bucket is not None:
        ok, bucket, _ = bucket_take(rt.tpm_bucket, target.tpm, call.features.input_tokens, now)
        rt.tpm_bucket = bucket
        if not ok:
            if target.rpm is not None and rt.rpm_bucket is not None:  # give the request back
                rt.rpm_bucket = bucket_charge(rt.rpm_bucket, target.rpm, -1, now)
            call.gw.metrics.rate_limited.labels(call.policy, "target", target.name).inc()
            return f"over its tpm limit ({target.tpm})"
    return None


def _all_failed(call: Call, failures: list[Failure], *, attempted_any: bool) -> web.Response:
    details = [*call.notes]
    details += [p[2] for p in call.passed if not any(p[2] == n for n in details)]
    detail = "; ".join(details) or "no target could be tried"
    gw = call.gw
    for target, reason, _ in call.passed:
        gw.metrics.fallbacks.labels(call.policy, target, reason).inc()
    gw.audit.emit(
        "all_targets_failed",
        policy=call.policy,
        target=None,
        reason=detail,
        trace_id=call.trace.trace_id,
        agent=call.agent,
    )
    if failures and all(f.status == 429 for f in failures):
        waits = [f.retry_after for f in failures if f.retry_after is not None]
        call.count("none", "upstream_rate_limited")
        return error_response(
            429,
            f"ModelPolicy {call.policy}: every target is rate limited upstream: {detail}",
            type_="rate_limit_error",
            code="upstream_rate_limited",
            retry_after=min(waits) if waits else 1.0,
        )
    if not attempted_any:
        limited = any(p[1] == "rate_limited" for p in call.passed)
        call.count("none", "rate_limited" if limited else "no_target_available")
        if limited:
            return error_response(
                429,
                f"ModelPolicy {call.policy}: all targets are rate limited: {detail}",
                type_="rate_limit_error",
                code="rate_limited",
                retry_after=1.0,
            )
        return error_response(
            503,
            f"ModelPolicy {call.policy}: no target available: {detail}",
            type_="api_error",
            code="no_target_available",
        )
    call.count("none", "upstream_error")
    return error_response(
        502,
        f"ModelPolicy {call.policy}: all attempts failed: {detail}",
        type_="api_error",
        code="upstream_error",
    )


def _response_headers(call: Call, target: Target) -> dict[str, str]:
    return {
        "X-Stoa-Policy": call.policy,
        "X-Stoa-Target": target.name,
        "X-Stoa-Trace-Id": call.trace.trace_id,
    }


def _account(call: Call, target: Target, usage: Any, output_chars: int) -> tuple[int, int]:
    """Record tokens, cost and spend; correct the tpm buckets with the real usage."""
    usage = usage if isinstance(usage, dict) else {}
    in_tok = _int_or_none(usage.get("prompt_tokens")) or call.features.input_tokens
    out_tok = usage.get("completion_tokens")
    out_tok = out_tok if isinstance(out_tok, int) and out_tok >= 0 else -(-output_chars // 4)
    m, policy, agent = call.gw.metrics, call.policy, call.agent_label
    cost = request_cost(target, in_tok, out_tok)
    m.input_tokens.labels(policy, target.name, agent).inc(in_tok)
    m.output_tokens.labels(policy, target.name, agent).inc(out_tok)
    m.cost.labels(policy, target.name, agent).inc(cost)
    if call.conversation:
        conversation = m.conversation(call.conversation)
        m.conversation_tokens.labels(policy, conversation).inc(in_tok + out_tok)
        m.conversation_cost.labels(policy, conversation).inc(cost)
    call.runtime.add_spend(time.time(), cost)
    extra = in_tok + out_tok - call.features.input_tokens
    now = time.monotonic()
    rt = call.runtime.target_runtime(target.name)
    if target.tpm is not None and rt.tpm_bucket is not None:
        rt.tpm_bucket = bucket_charge(rt.tpm_bucket, target.tpm, extra, now)
    limit = call.spec.rate_limit.for_agent(call.agent)
    if limit is not None and limit.tpm is not None:
        agent_rt = call.runtime.agent_runtime(call.agent)
        if agent_rt.tpm_bucket is not None:
            agent_rt.tpm_bucket = bucket_charge(agent_rt.tpm_bucket, limit.tpm, extra, now)
    return in_tok, out_tok


def _completion_response(call: Call, target: Target, result: Completion) -> web.Response:
    body = result.body
    raw = result.raw
    rules = compile_rules(call.spec.guardrails.output)
    changed = False
    if rules.keywords or rules.patterns:
        hit = find_blocked(completion_text(body), rules)
        if hit is not None:
            for choice in body.get("choices") or []:
                if isinstance(choice, dict):
                    choice["message"] = {"role": "assistant", "content": ""}
                    choice["finish_reason"] = "content_filter"
            changed = True
            call.gw.metrics.guardrail.labels(
                call.policy, "output", "content_filter", hit.split(" ", 1)[0]
            ).inc()
            call.gw.audit.emit(
                "guardrail_blocked",
                policy=call.policy,
                target=target.name,
                reason=f"output matched {hit}",
                trace_id=call.trace.trace_id,
                agent=call.agent,
            )
    if rules.pii and not changed:
        totals: dict[PiiKind, int] = {}
        for choice in body.get("choices") or []:
            message = choice.get("message") if isinstance(choice, dict) else None
            if isinstance(message, dict) and isinstance(message.get("content"), str):
                message["content"], counts = mask_pii(message["content"], rules.pii)
                for kind, n in counts.items():
                    totals[kind] = totals.get(kind, 0) + n
        if totals:
            changed = True
            _count_masked(call, "output", totals, target.name)
    if changed:
        raw = json.dumps(body, separators=(",", ":")).encode()
    _account(call, target, body.get("usage"), len(completion_text(body)))
    call.gw.metrics.latency.labels(call.policy, target.name).observe(time.monotonic() - call.started)
    call.count(target.name, "ok")
    return web.Response(body=raw, content_type="application/json", headers=_response_headers(call, target))


async def _pump(
    response: web.StreamResponse, start: StreamStart, relay: StreamRelay, target: Target
) -> str | None:
    """Copy upstream events to the client through ``relay``; returns the upstream failure, if any."""
    upstream, decoder = start.response, start.decoder
    while not relay.finished and relay.upstream_error is None:
        try:
            async with asyncio.timeout(target.timeout_seconds):
                data = await upstream.content.readany()
        except TimeoutError:
            return f"no data from target {target.name} for {target.timeout_seconds:g}s"
        except (aiohttp.ClientError, OSError) as exc:
            return f"target {target.name} connection failed mid-stream: {type(exc).__name__}: {exc}"
        events = decoder.push(data) if data else [e for e in [decoder.flush()] if e is not None]
        out = [chunk for event in events for chunk in relay.process(event)]
        if out:  # one write per network read: fewer syscalls than one per event
            await response.write(b"".join(out))
        if not data:
            break
    if relay.upstream_error is not None:
        return f"target {target.name}: {relay.upstream_error}"
    if not relay.finished:
        if relay.finish_reason is None:
            return f"target {target.name} closed the stream before it finished"
        await response.write(b"".join(relay.process("[DONE]")))  # finished without [DONE]: end it properly
    return None


async def _relay_stream(
    request: web.Request, call: Call, target: Target, start: StreamStart
) -> web.StreamResponse:
    """Send a committed stream to the client; a later upstream failure ends it with an error event."""
    rt = call.runtime.target_runtime(target.name)
    ttft = time.monotonic() - call.started
    rt.ewma_latency = ewma(rt.ewma_latency, ttft)
    call.gw.metrics.ttft.labels(call.policy, target.name).observe(ttft)
    relay = StreamRelay(compile_rules(call.spec.guardrails.output), call.include_usage)
    headers = {"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache"}
    response = web.StreamResponse(status=200, headers={**headers, **_response_headers(call, target)})
    error: str | None = None
    client_gone = False
    try:
        await response.prepare(request)
        first = [chunk for data in start.events for chunk in relay.process(data)]
        await response.write(b"".join(first))
        error = await _pump(response, start, relay, target)
        if error is not None:
            message = (
                f"ModelPolicy {call.policy}: stream interrupted after {relay.content_events} chunks: {error}"
            )
            await response.write(
                encode_json_event(error_payload(message, type_="api_error", code="stream_interrupted"))
            )
        await response.write_eof()
    except (ConnectionResetError, aiohttp.ClientConnectionResetError):
        client_gone = True
    finally:
        start.response.close()
        rt.in_flight -= 1
        call.gw.metrics.in_flight.labels(call.policy, target.name).dec()
    _finish_stream(call, target, relay, error, ttft, client_gone=client_gone)
    return response


def _finish_stream(
    call: Call, target: Target, relay: StreamRelay, error: str | None, ttft: float, *, client_gone: bool
) -> None:
    gw, m, now = call.gw, call.gw.metrics, time.monotonic()
    rt = call.runtime.target_runtime(target.name)
    if client_gone:
        gw.release(call.runtime, target.name)
        call.count(target.name, "client_disconnected")
    elif error is not None:
        rt.last_error = error
        rt.last_error_at = time.time()
        gw.record(call.runtime, target.name, ok=False, now=now, trace_id=call.trace.trace_id, reason=error)
        m.stream_aborts.labels(call.policy, target.name).inc()
        gw.audit.emit(
            "stream_interrupted",
            policy=call.policy,
            target=target.name,
            reason=error,
            trace_id=call.trace.trace_id,
            agent=call.agent,
            chunksSent=relay.content_events,
        )
        call.count(target.name, "stream_interrupted")
    else:
        gw.record(call.runtime, target.name, ok=True, now=now, trace_id=call.trace.trace_id, reason="")
        call.count(target.name, "ok")
        m.latency.labels(call.policy, target.name).observe(now - call.started)
    if relay.blocked is not None:
        m.guardrail.labels(call.policy, "output", "content_filter", relay.blocked.split(" ", 1)[0]).inc()
        gw.audit.emit(
            "guardrail_blocked",
            policy=call.policy,
            target=target.name,
            reason=f"output matched {relay.blocked}",
            trace_id=call.trace.trace_id,
            agent=call.agent,
        )
    _count_masked(call, "output", relay.masked, target.name)
    _, out_tok = _account(call, target, relay.usage, relay.text_chars)
    if out_tok > 1:
        m.tpot.labels(call.policy, target.name).observe(max(0.0, now - call.started - ttft) / (out_tok - 1))
