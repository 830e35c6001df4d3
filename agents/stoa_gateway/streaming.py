"""The shell of a committed stream: copy upstream events to the client through a ``StreamRelay``.

A failure after the first token ends the stream with one ``stream_interrupted`` error event and no
``[DONE]``; a client that goes away frees the target at once.
"""

from __future__ import annotations

import asyncio
import time
from functools import partial

import aiohttp
from aiohttp import web

from stoa_gateway.accounting import account, usage_of
from stoa_gateway.call import Call
from stoa_gateway.errors import error_payload
from stoa_gateway.guardrail_events import count_masked, output_blocked
from stoa_gateway.guardrails import compile_rules
from stoa_gateway.policy import Target
from stoa_gateway.relay import StreamRelay
from stoa_gateway.sse import encode_json_event
from stoa_gateway.state import ewma
from stoa_gateway.telemetry import record_served, record_stream
from stoa_gateway.upstream import StreamStart

SSE_HEADERS = {"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache"}


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


async def relay_stream(
    request: web.Request, call: Call, target: Target, start: StreamStart
) -> web.StreamResponse:
    """Send a committed stream to the client; a later upstream failure ends it with an error event."""
    rt = call.runtime.target_runtime(target.name)
    ttft = time.monotonic() - call.started
    rt.ewma_latency = ewma(rt.ewma_latency, ttft)
    call.gw.metrics.ttft.labels(call.policy, target.name).observe(ttft)
    relay = StreamRelay(
        compile_rules(call.spec.guardrails.output), call.include_usage, partial(usage_of, call, target)
    )
    response = web.StreamResponse(status=200, headers={**SSE_HEADERS, **call.response_headers(target)})
    error: str | None = None
    client_gone = False
    try:
        await response.prepare(request)
        await response.write(b"".join(chunk for data in start.events for chunk in relay.process(data)))
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
    _finish(call, target, relay, error, ttft, client_gone=client_gone)
    return response


def _finish(
    call: Call, target: Target, relay: StreamRelay, error: str | None, ttft: float, *, client_gone: bool
) -> None:
    gw, m, now = call.gw, call.gw.metrics, time.monotonic()
    if client_gone:
        gw.release(call.runtime, target.name)
        call.count(target.name, "client_disconnected")
    elif error is not None:
        rt = call.runtime.target_runtime(target.name)
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
            conversation=call.conversation,
            chunksSent=relay.content_events,
        )
        call.count(target.name, "stream_interrupted")
    else:
        gw.record(call.runtime, target.name, ok=True, now=now, trace_id=call.trace.trace_id, reason="")
        call.count(target.name, "ok")
        m.latency.labels(call.policy, target.name).observe(now - call.started)
    if relay.blocked is not None:
        output_blocked(call, target.name, relay.blocked)
    count_masked(call, "output", relay.masked, target.name)
    usage = usage_of(call, target, relay.usage, relay.text_chars)
    account(call, target, usage)
    per_token = None
    if usage.output_tokens > 1:
        per_token = max(0.0, now - call.started - ttft) / (usage.output_tokens - 1)
        m.tpot.labels(call.policy, target.name).observe(per_token)
    record_served(call, target, usage, target.model, None)
    if error is None and not client_gone:
        record_stream(call, target, target.model, ttft, per_token)
