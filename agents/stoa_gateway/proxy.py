"""``POST /v1/chat/completions``: read and check the request, apply input guardrails, admit it at the
policy's limits (queueing by priority), then hand it to the attempt loop (``attempts.run_attempts``)."""

from __future__ import annotations

import asyncio
import json
import random
import time
from dataclasses import replace
from typing import Any

from aiohttp import web

from stoa_gateway.attempts import ending_response, run_attempts
from stoa_gateway.call import Call
from stoa_gateway.errors import error_response
from stoa_gateway.gateway import Gateway
from stoa_gateway.guardrail_events import blocked_input, masked_input
from stoa_gateway.outcomes import LIMITED_RETRY_AFTER, QUEUEABLE, Ending, rejected, shed
from stoa_gateway.policy import PRIORITY_HEADER
from stoa_gateway.priority import PriorityQueue, Waiter, parse_priority
from stoa_gateway.reservation import Reservation
from stoa_gateway.routing import Plan, RejectCode, Rejection, RequestFeatures, plan_attempts
from stoa_gateway.telemetry import RequestSpans
from stoa_gateway.tokens import estimate_input_tokens
from stoa_gateway.validation import validate_request

GATEWAY = web.AppKey("gateway", Gateway)


def _positive_int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def _bad_request(message: str, code: str | None, param: str | None = None) -> web.Response:
    return error_response(400, message, type_="invalid_request_error", code=code, param=param)


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
        return _bad_request("'model' is required: the name of a ModelPolicy", "missing_model", "model")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return _bad_request("'messages' must be a non-empty list", "invalid_messages", "messages")
    invalid = validate_request(body)
    if invalid is not None:
        return _bad_request(invalid.message, invalid.code, invalid.param)
    return body


def _unknown_model(gw: Gateway, model: str, policy_name: str) -> web.Response:
    known = ", ".join(sorted(gw.runtimes)) or "none"
    return error_response(
        404,
        f"unknown model {model!r}: no ModelPolicy named {policy_name!r} (known: {known})",
        type_="invalid_request_error",
        code="model_not_found",
        param="model",
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


def _new_call(request: web.Request, gw: Gateway, body: dict[str, Any]) -> Call | web.Response:
    policy_name, _, pinned = str(body["model"]).partition("/")
    runtime = gw.runtimes.get(policy_name)
    if runtime is None:
        return _unknown_model(gw, body["model"], policy_name)
    priority = parse_priority(request.headers.get(PRIORITY_HEADER))
    if priority is None:
        return _bad_request(
            f"{PRIORITY_HEADER} must be one of critical, normal, batch", "invalid_priority", PRIORITY_HEADER
        )
    spec = runtime.spec
    agent = request.headers.get("X-Stoa-Agent") or None
    requested = _positive_int(body.get("max_completion_tokens")) or _positive_int(body.get("max_tokens"))
    cap = spec.guardrails.max_output_tokens
    return Call(
        gw=gw,
        runtime=runtime,
        spec=spec,
        agent=agent,
        agent_label=gw.metrics.agent(agent),
        conversation=request.headers.get("X-Stoa-Conversation") or None,
        priority=priority,
        spans=RequestSpans(
            request.headers,
            policy=policy_name,
            stream=bool(body.get("stream")),
            agent=agent,
            conversation=request.headers.get("X-Stoa-Conversation") or None,
            messages=body.get("messages"),
        ),
        features=RequestFeatures(
            input_tokens=0,
            agent=agent,
            headers={k.lower(): v for k, v in request.headers.items()},
            pinned_target=pinned or None,
            max_output_tokens=min(requested, cap) if requested and cap else (requested or cap),
        ),
        reservation=Reservation(gw.limits, policy_name, spec, agent, 0, priority),
        body={},
        stream=bool(body.get("stream")),
        started=time.monotonic(),
    )


async def handle_chat_completions(request: web.Request) -> web.StreamResponse:
    gw = request.app[GATEWAY]
    body = _parse_body(await request.read())
    if isinstance(body, web.Response):
        return body
    call = _new_call(request, gw, body)
    if isinstance(call, web.Response):
        return call
    status: int | None = None
    try:
        response = await _serve(request, call, body)
        status = response.status
        return response
    except asyncio.CancelledError:  # the client went away (handler cancellation)
        if call.spans.outcome is None:  # still waiting at the limits: no attempt counted it
            call.count("none", "client_disconnected")
        call.spans.end(None, cancelled=True)
        raise
    finally:
        if status is not None:
            call.spans.end(status)


async def _serve(request: web.Request, call: Call, body: dict[str, Any]) -> web.StreamResponse:
    messages: list[Any] = body["messages"]
    blocked = blocked_input(call, messages)
    if blocked is not None:
        return blocked
    messages = masked_input(call, messages)
    tokens = estimate_input_tokens(messages)
    call.features = replace(call.features, input_tokens=tokens)
    call.reservation.input_tokens = tokens
    call.body = _upstream_body(call, body, messages)
    admitted = await admit(call)
    while not isinstance(admitted, Ending):
        result = await run_attempts(request, call, admitted)
        if not isinstance(result, Rejection):
            return ending_response(call, result) if isinstance(result, Ending) else result
        admitted = await admit(call, result)  # the limits were taken meanwhile: queue as the plan would
    return ending_response(call, admitted)


def _plan(call: Call) -> tuple[Plan, Rejection | None]:
    now = time.monotonic()
    rand = random.random()  # noqa: S311 - load balancing, not cryptography
    plan = plan_attempts(
        call.spec, call.features, call.runtime.observed(now, time.time(), call.reservation, rand)
    )
    return plan, plan.rejection


async def admit(call: Call, at_limit: Rejection | None = None) -> Plan | Ending:
    """The plan once the call's agent limits took it, waiting at the limits (best priority first) for at
    most the priority's queue time; else how the call ends. ``at_limit``: the call comes back because its
    targets' limits were taken between its plan and its attempts; it waits as that rejection says."""
    queue = call.gw.queue(call.policy)
    settings = call.spec.priority
    deadline = call.started + settings.queue_seconds.of(call.priority)
    waiter: Waiter | None = None
    rejection = at_limit
    try:
        while True:
            if rejection is None:
                if waiter is None and queue.must_wait(call.priority):
                    waiter = _enqueue(call, queue)
                    if waiter is None:
                        return shed(call.policy, str(call.priority), "the queue is full", LIMITED_RETRY_AFTER)
                if waiter is not None and not await queue.wait_turn(waiter, deadline - time.monotonic()):
                    why = (
                        "pushed out of the full queue" if waiter.shed else "no capacity within its queue time"
                    )
                    return shed(call.policy, str(call.priority), why, LIMITED_RETRY_AFTER)
                plan, rejection = _plan(call)
            if rejection is None and (rejection := await _take_agent(call)) is None:
                _admitted(call, plan)
                return plan
            if rejection.code not in QUEUEABLE:
                return rejected(call.policy, rejection)
            retry_after = rejection.retry_after or LIMITED_RETRY_AFTER
            if time.monotonic() + retry_after > deadline:
                return rejected(call.policy, rejection)
            if waiter is None:
                waiter = _enqueue(call, queue)
                if waiter is None:
                    return shed(call.policy, str(call.priority), "the queue is full", retry_after)
            await asyncio.sleep(retry_after)
            rejection = None
    finally:
        if waiter is not None:
            queue.leave(waiter)
            call.gw.metrics.queued.labels(call.policy, str(call.priority)).set(queue.depth(call.priority))


async def _take_agent(call: Call) -> Rejection | None:
    """None once the agent's limits took this call (once, however often it comes back to the queue)."""
    wait = 0.0 if call.agent_admitted else await call.reservation.take_agent(time.monotonic())
    if wait > 0:
        message = f"agent {call.agent or '(none)'} is over its rate limit"
        return Rejection(RejectCode.AGENT_RATE_LIMITED, 429, message, wait)
    call.agent_admitted = True
    return None


def _enqueue(call: Call, queue: PriorityQueue) -> Waiter | None:
    waiter, evicted = queue.enqueue(call.priority, call.spec.priority.max_queued)
    for priority in {call.priority, *([evicted.priority] if evicted else [])}:
        call.gw.metrics.queued.labels(call.policy, str(priority)).set(queue.depth(priority))
    return waiter


def _admitted(call: Call, plan: Plan) -> None:
    call.gw.metrics.queue_wait.labels(call.policy, str(call.priority)).observe(
        time.monotonic() - call.started
    )
    call.runtime.rr_counter += 1
    for skip in plan.skipped:
        call.passed.append((skip.target, str(skip.reason), f"{skip.target}: skipped, {skip.reason}"))
        call.spans.skipped(skip.target, str(skip.reason))
