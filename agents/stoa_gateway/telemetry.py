"""OpenTelemetry spans and GenAI metrics of one gateway request (the shell around the SDK).

Per request a SERVER span ``chat {policy}`` continues the caller's W3C ``traceparent``; per upstream
attempt a CLIENT span ``chat {target model}`` is its child, and its context is the ``traceparent`` sent to
the provider. The attempt span says what the loop decided (``stoa.attempt.decision``: ok, retry,
next_target, fatal); targets passed over (breaker open, rate limited, cooling down) are events on the
request span. Attributes follow the GenAI conventions (``stoa_telemetry.genai``); message content is
recorded only when ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true``.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from stoa_gateway.tracing import TraceContext
from stoa_telemetry import genai
from stoa_telemetry.otel import tracing

if TYPE_CHECKING:
    from stoa_gateway.call import Call
    from stoa_gateway.costs import Usage
    from stoa_gateway.policy import Target
    from stoa_gateway.retry import Failure

_PROPAGATOR = TraceContextTextMapPropagator()
TRACER = "stoa.gateway"


def _context_of(span: Span) -> TraceContext:
    ctx = span.get_span_context()
    return TraceContext(f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}", f"{int(ctx.trace_flags):02x}")


class RequestSpans:
    """The spans of one client request."""

    def __init__(
        self,
        headers: Mapping[str, str],
        *,
        policy: str,
        stream: bool,
        agent: str | None,
        conversation: str | None,
        messages: Any,
    ) -> None:
        parent = _PROPAGATOR.extract({k.lower(): v for k, v in headers.items()})
        attributes: dict[str, Any] = {
            genai.OPERATION_NAME: genai.OP_CHAT,
            genai.PROVIDER_NAME: genai.PROVIDER_OPENAI,
            genai.REQUEST_MODEL: policy,
            genai.REQUEST_STREAM: stream,
            genai.STOA_POLICY: policy,
        }
        if agent:
            attributes[genai.AGENT_NAME] = agent
        if conversation:
            attributes[genai.STOA_CONVERSATION] = conversation
        self.capture = genai.capture_content(os.environ)
        if self.capture:
            attributes[genai.INPUT_MESSAGES] = json.dumps(messages)[:65536]
        self.span = (
            tracing()
            .tracer(TRACER)
            .start_span(genai.chat_span(policy), context=parent, kind=SpanKind.SERVER, attributes=attributes)
        )
        self.trace = _context_of(self.span)
        self.outcome: str | None = None
        self.target: str | None = None

    def attempt(self, target: Target, *, number: int, retry: bool) -> Span:
        """A child span for one upstream attempt; ``traceparent_of(span)`` goes upstream."""
        return (
            tracing()
            .tracer(TRACER)
            .start_span(
                genai.chat_span(target.model),
                context=trace.set_span_in_context(self.span),
                kind=SpanKind.CLIENT,
                attributes={
                    genai.OPERATION_NAME: genai.OP_CHAT,
                    genai.PROVIDER_NAME: genai.PROVIDER_OPENAI,
                    genai.REQUEST_MODEL: target.model,
                    genai.STOA_TARGET: target.name,
                    genai.STOA_ATTEMPT: number,
                    genai.STOA_DECISION: "pending",
                    "stoa.attempt.retry": retry,
                },
            )
        )

    def skipped(self, target: str, reason: str) -> None:
        self.span.add_event("target skipped", {genai.STOA_TARGET: target, genai.STOA_FAILOVER_REASON: reason})

    def counted(self, target: str, outcome: str) -> None:
        self.target, self.outcome = target, outcome

    def served(self, usage: Usage, response_model: str, content: str | None) -> None:
        self.span.set_attribute(genai.RESPONSE_MODEL, response_model)
        self.span.set_attribute(genai.USAGE_INPUT_TOKENS, usage.input_tokens)
        self.span.set_attribute(genai.USAGE_OUTPUT_TOKENS, usage.output_tokens)
        self.span.set_attribute(genai.STOA_COST_USD, usage.cost_usd)
        if self.capture and content is not None:
            self.span.set_attribute(genai.OUTPUT_MESSAGES, content[:65536])

    def end(self, status: int | None, *, cancelled: bool = False) -> None:
        outcome = "client_disconnected" if cancelled else (self.outcome or "unknown")
        self.span.set_attribute("stoa.outcome", outcome)
        if self.target and self.target != "none":
            self.span.set_attribute(genai.STOA_TARGET, self.target)
        if status is not None:
            self.span.set_attribute("http.response.status_code", status)
        if outcome != "ok":
            self.span.set_attribute(genai.ERROR_TYPE, outcome)
            self.span.set_status(Status(StatusCode.ERROR, outcome))
        self.span.end()


def traceparent_of(span: Span) -> str:
    return _context_of(span).header()


def end_attempt(span: Span, decision: str, failure: Failure | None = None) -> None:
    span.set_attribute(genai.STOA_DECISION, decision)
    if failure is not None:
        span.set_attribute(genai.ERROR_TYPE, failure.reason())
        span.set_status(Status(StatusCode.ERROR, failure.message[:300]))
    span.end()


def record_attempt(call: Call, target: Target, started: float, failure: Failure | None) -> None:
    """``gen_ai.client.operation.duration`` of one upstream call (the gateway is the provider's client)."""
    call.gw.metrics.genai_client.operation_duration.labels(
        genai.OP_CHAT,
        genai.PROVIDER_OPENAI,
        target.model,
        "" if failure else target.model,
        failure.reason() if failure else "",
    ).observe(time.monotonic() - started)


def record_served(call: Call, target: Target, usage: Usage, response_model: str, content: str | None) -> None:
    """Tokens of a served call: ``gen_ai.client.token.usage`` and the request span's usage attributes."""
    m = call.gw.metrics.genai_client.token_usage
    base = (genai.OP_CHAT, genai.PROVIDER_OPENAI, target.model, response_model)
    m.labels(*base, genai.TOKEN_INPUT).observe(usage.input_tokens)
    m.labels(*base, genai.TOKEN_OUTPUT).observe(usage.output_tokens)
    call.spans.served(usage, response_model, content)


def record_stream(
    call: Call, target: Target, response_model: str, ttft: float, per_token: float | None
) -> None:
    """``gen_ai.server.*`` of a stream the gateway served (request model: the policy the client named)."""
    call.gw.metrics.genai_server.record_stream(
        request_model=call.policy,
        response_model=response_model,
        ttft_seconds=ttft,
        per_token_seconds=per_token,
    )
