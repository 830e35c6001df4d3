"""``POST /v1/chat/completions``: guardrails, planning, the attempt loop and the response relay."""

from __future__ import annotations

import asyncio
import json
import random
import secrets
import time
from dataclasses import dataclass, field
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
from stoa_gateway.sse import SseDecoder, encode_json_event
from stoa_gateway.state import PolicyRuntime, ewma
from stoa_gateway.tokens import completion_text, estimate_input_tokens, message_texts
from stoa_gateway.tracing import TraceContext, child, trace_for_request
from stoa_gateway.upstream import Completion, StreamStart, completions_url, open_stream, post_completion

GATEWAY = web.AppKey("gateway", Gateway)


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
    include_usage: bool
    started: float
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


async def handle_chat_completions(request: web.Request) -> web.StreamResponse:
    gw = request.app[GATEWAY]
    started = time.monotonic()
    try:
        body = json.loads(await request.read())
    except (ValueError, UnicodeDecodeError):
        return _bad_request("request body is not valid JSON", "invalid_json")
    if not isinstance(body, dict):
        return _bad_request("request body must be a JSON object", "invalid_json")
    model = body.get("model")
    messages = body.get("messages")
    if not isinstance(model, str) or not model:
        return _bad_request("'model' is required: the name of a ModelPolicy", "missing_model")
    if not isinstance(messages, list) or not messages:
        return _bad_request("'messages' must be a non-empty list", "invalid_messages")
    policy_name, _, pinned = model.partition("/")
    runtime = gw.runtimes.get(policy_name)
    if runtime is None:
        known = ", ".join(sorted(gw.runtimes)) or "none"
        return error_response(
            404,
            f"unknown model {model!r}: no ModelPolicy named {policy_name!r} (known: {known})",
            type_="invalid_request_error",
            code="model_not_found",
        )
    spec = runtime.spec
    metrics = gw.metrics
    agent = request.headers.get("X-Stoa-Agent") or None
    agent_label = metrics.agent(agent)
    trace = trace_for_request(request.headers.get("traceparent"), secrets.token_hex(16), secrets.token_hex(8))

    in_rules = compile_rules(spec.guardrails.input)
    if in_rules.keywords or in_rules.patterns:
        hit = find_blocked("\n".join(message_texts(messages)), in_rules)
        if hit is not None:
            metrics.guardrail.labels(policy_name, "input", "blocked", hit.split(" ", 1)[0]).inc()
            metrics.requests.labels(policy_name, "none", agent_label, "guardrail_blocked").inc()
            gw.audit.emit(
                "guardrail_blocked",
                policy=policy_name,
                target=None,
                reason=f"input matched {hit}",
                trace_id=trace.trace_id,
                agent=agent,
            )
            return error_response(
                400,
                f"request blocked by ModelPolicy {policy_name}: input matched blocked {hit}",
                type_="invalid_request_error",
                code="guardrail_blocked",
            )
    if in_rules.pii:
        messages, counts = mask_messages(messages, in_rules.pii)
        _count_masked(gw, policy_name, "input", counts, trace.trace_id, agent)

    requested = _int_or_none(body.get("max_completion_tokens")) or _int_or_none(body.get("max_tokens"))
    cap = spec.guardrails.max_output_tokens
    max_out = min(requested, cap) if requested and cap else (requested or cap)
    features = RequestFeatures(
        input_tokens=estimate_input_tokens(messages),
        agent=agent,
        headers={k.lower(): v for k, v in request.headers.items()},
        pinned_target=pinned or None,
        max_output_tokens=max_out,
    )
    now = time.monotonic()
    plan = plan_attempts(spec, features, runtime.observed(now, time.time(), agent, random.random()))
    if plan.rejection is not None:
        return _reject(gw, runtime, plan, agent, agent_label, trace)
    limit = spec.rate_limit.for_agent(agent)
    if limit is not None:
        agent_rt = runtime.agent_runtime(agent)
        if limit.rpm is not None and agent_rt.rpm_bucket is not None:
            agent_rt.rpm_bucket = bucket_charge(agent_rt.rpm_bucket, limit.rpm, 1, now)
        if limit.tpm is not None and agent_rt.tpm_bucket is not None:
            agent_rt.tpm_bucket = bucket_charge(agent_rt.tpm_bucket, limit.tpm, features.input_tokens, now)
    runtime.rr_counter += 1

    upstream_body = dict(body)
    upstream_body["messages"] = messages
    if cap is not None:
        upstream_body["max_completion_tokens" if "max_completion_tokens" in body else "max_tokens"] = max_out
    stream = bool(body.get("stream"))
    include_usage = False
    if stream:
        options = body.get("stream_options")
        include_usage = isinstance(options, dict) and bool(options.get("include_usage"))
        upstream_body["stream_options"] = {
            **(options if isinstance(options, dict) else {}),
            "include_usage": True,
        }
    call = Call(
        gw,
        runtime,
        spec,
        agent,
        agent_label,
        request.headers.get("X-Stoa-Conversation") or None,
        trace,
        features,
        upstream_body,
        stream,
        include_usage,
        started,
    )
    for skip in plan.skipped:
        call.passed.append((skip.target, str(skip.reason), f"{skip.target}: skipped, {skip.reason}"))
    return await _attempts(request, call, plan)


def _count_masked(
    gw: Gateway, policy: str, direction: str, counts: dict[PiiKind, int], trace_id: str, agent: str | None
) -> None:
    if not counts:
        return
    for kind, n in counts.items():
        gw.metrics.guardrail.labels(policy, direction, "masked", str(kind)).inc(n)
    summary = ", ".join(f"{kind}={n}" for kind, n in sorted(counts.items()))
    gw.audit.emit(
        "guardrail_masked",
        policy=policy,
        target=None,
        reason=f"masked {direction} PII: {summary}",
        trace_id=trace_id,
        agent=agent,
    )


def _reject(
    gw: Gateway, runtime: PolicyRuntime, plan: Plan, agent: str | None, agent_label: str, trace: TraceContext
) -> web.Response:
    rejection = plan.rejection
    assert rejection is not None
    code = str(rejection.code)
    scope = {"agent_rate_limited": "agent", "budget_exceeded": "budget", "rate_limited": "policy"}.get(code)
    if scope is not None:
        gw.metrics.rate_limited.labels(
            runtime.name, scope, agent_label if scope == "agent" else runtime.name
        ).inc()
        gw.audit.emit(
            "budget_exceeded" if scope == "budget" else "rate_limited",
            policy=runtime.name,
            target=None,
            reason=rejection.message,
            trace_id=trace.trace_id,
            agent=agent,
            scope=scope,
        )
    else:
        gw.audit.emit(
            "no_target",
            policy=runtime.name,
            target=None,
            reason=rejection.message,
            trace_id=trace.trace_id,
            agent=agent,
        )
    gw.metrics.requests.labels(runtime.name, "none", agent_label, code).inc()
    type_ = {429: "rate_limit_error", 404: "invalid_request_error"}.get(rejection.status, "api_error")
    return error_response(
        rejection.status,
        f"ModelPolicy {runtime.name}: {rejection.message}",
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


async def _attempts(request: web.Request, call: Call, plan: Plan) -> web.StreamResponse:
    gw, spec, runtime = call.gw, call.spec, call.runtime
    assert gw.session is not None
    history: list[AttemptRecord] = []
    failures: list[Failure] = []
    attempted_any = False
    while (step := next_step(plan.targets, history, spec.retry, random.random())) is not None:
        target = spec.target(step.target)
        if target is None:  # cannot happen: plan names come from this spec
            break
        if step.delay > 0:
            await asyncio.sleep(step.delay)
        now = time.monotonic()
        rt = runtime.target_runtime(target.name)
        retrying = any(r.attempted and r.target == target.name for r in history)
        if not gw.admit(runtime, target.name, now, call.trace.trace_id):
            history.append(AttemptRecord(target.name, Disposition.NEXT_TARGET, attempted=False))
            call.passed.append((target.name, "circuit_open", f"{target.name}: circuit open"))
            continue
        limited = _take_target_limits(call, target, now)
        if limited is not None:
            gw.release(runtime, target.name)
            history.append(AttemptRecord(target.name, Disposition.NEXT_TARGET, attempted=False))
            call.passed.append((target.name, "rate_limited", f"{target.name}: {limited}"))
            continue
        if retrying:
            gw.metrics.retries.labels(call.policy, target.name).inc()
        _flush_fallbacks(call, target.name)
        attempted_any = True
        payload = json.dumps({**call.body, "model": target.model}, separators=(",", ":")).encode()
        url = completions_url(target.base_url)
        headers = _headers(call, target)
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
                now = time.monotonic()
                disposition = classify_failure(result, spec.retry)
                gw.metrics.attempts.labels(call.policy, target.name, result.reason()).inc()
                if disposition is Disposition.FATAL:
                    gw.record(runtime, target.name, True, now, call.trace.trace_id, "")
                    call.count(target.name, "upstream_rejected")
                    return web.Response(
                        status=result.status or 502,
                        body=result.body
                        or json.dumps(
                            error_payload(
                                result.message, type_="invalid_request_error", code="upstream_rejected"
                            )
                        ).encode(),
                        content_type="application/json",
                    )
                rt.last_error = f"{result.message}"
                rt.last_error_at = time.time()
                if result.retry_after is not None and spec.retry.honor_retry_after:
                    rt.cooldown_until = max(rt.cooldown_until, now + result.retry_after)
                gw.record(runtime, target.name, False, now, call.trace.trace_id, result.message)
                history.append(AttemptRecord(target.name, disposition, result.retry_after))
                failures.append(result)
                call.passed.append((target.name, result.reason(), f"{target.name}: {result.message}"))
                call.notes.append(f"{target.name}: {result.message}")
                continue
            rt.last_success_at = time.time()
            gw.metrics.attempts.labels(call.policy, target.name, "ok").inc()
            if isinstance(result, Completion):
                elapsed = time.monotonic() - attempt_started
                rt.ewma_latency = ewma(rt.ewma_latency, elapsed)
                gw.record(runtime, target.name, True, time.monotonic(), call.trace.trace_id, "")
                return _completion_response(call, target, result)
            handed_over = True
            return await _relay_stream(request, call, target, result)
        except asyncio.CancelledError:
            gw.release(runtime, target.name)
            raise
        finally:
            if not handed_over:
                rt.in_flight -= 1
                gw.metrics.in_flight.labels(call.policy, target.name).dec()
    return _all_failed(call, failures, attempted_any)


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


def _all_failed(call: Call, failures: list[Failure], attempted_any: bool) -> web.Response:
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
            _count_masked(call.gw, call.policy, "output", totals, call.trace.trace_id, call.agent)
    if changed:
        raw = json.dumps(body, separators=(",", ":")).encode()
    _account(call, target, body.get("usage"), len(completion_text(body)))
    call.gw.metrics.latency.labels(call.policy, target.name).observe(time.monotonic() - call.started)
    call.count(target.name, "ok")
    return web.Response(body=raw, content_type="application/json", headers=_response_headers(call, target))


async def _relay_stream(
    request: web.Request, call: Call, target: Target, start: StreamStart
) -> web.StreamResponse:
    gw, m = call.gw, call.gw.metrics
    rt = call.runtime.target_runtime(target.name)
    upstream = start.response
    ttft = time.monotonic() - call.started
    rt.ewma_latency = ewma(rt.ewma_latency, ttft)
    m.ttft.labels(call.policy, target.name).observe(ttft)
    relay = StreamRelay(compile_rules(call.spec.guardrails.output), call.include_usage)
    response = web.StreamResponse(
        status=200,
        headers={
            "Content-Type": "text/event-stream; charset=utf-8",
            "Cache-Control": "no-cache",
            **_response_headers(call, target),
        },
    )
    error: str | None = None
    client_gone = False
    try:
        await response.prepare(request)
        for data in start.events:
            for out in relay.process(data):
                await response.write(out)
        decoder = SseDecoder()
        while not relay.finished and relay.upstream_error is None:
            try:
                async with asyncio.timeout(target.timeout_seconds):
                    line = await upstream.content.readline()
            except TimeoutError:
                error = f"no data from target {target.name} for {target.timeout_seconds:g}s"
                break
            except (aiohttp.ClientError, OSError) as exc:
                error = f"target {target.name} connection failed mid-stream: {type(exc).__name__}: {exc}"
                break
            event = decoder.feed(line) if line else decoder.flush()
            if event is not None:
                for out in relay.process(event):
                    await response.write(out)
            elif not line:
                break
        if relay.upstream_error is not None:
            error = f"target {target.name}: {relay.upstream_error}"
        if not relay.finished and error is None:
            if relay.finish_reason is not None:
                for out in relay.process("[DONE]"):
                    await response.write(out)
            else:
                error = f"target {target.name} closed the stream before it finished"
        if error is not None:
            await response.write(
                encode_json_event(
                    error_payload(
                        f"ModelPolicy {call.policy}: stream interrupted after {relay.content_events} chunks: {error}",
                        type_="api_error",
                        code="stream_interrupted",
                    )
                )
            )
        await response.write_eof()
    except (ConnectionResetError, aiohttp.ClientConnectionResetError):
        client_gone = True
    finally:
        upstream.close()
        rt.in_flight -= 1
        m.in_flight.labels(call.policy, target.name).dec()
    now = time.monotonic()
    if client_gone:
        gw.release(call.runtime, target.name)
        call.count(target.name, "client_disconnected")
    elif error is not None:
        rt.last_error = error
        rt.last_error_at = time.time()
        gw.record(call.runtime, target.name, False, now, call.trace.trace_id, error)
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
        gw.record(call.runtime, target.name, True, now, call.trace.trace_id, "")
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
    _count_masked(gw, call.policy, "output", relay.masked, call.trace.trace_id, call.agent)
    _in_tok, out_tok = _account(call, target, relay.usage, relay.text_chars)
    if out_tok > 1:
        m.tpot.labels(call.policy, target.name).observe(max(0.0, now - call.started - ttft) / (out_tok - 1))
    return response
