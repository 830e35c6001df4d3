"""The spans of one turn in an agent replica (the shell around the OpenTelemetry SDK).

``invoke_agent {agent}`` covers one delivery of a turn message, from delivery to settlement. Its trace id
and span id are derived from the message id and the delivery count (``stoa_telemetry.ids``): every
delivery of a turn is in the turn's one trace, and a redelivery links to the deliveries before it (the
attempts a crash interrupted) and to the previous turn (the ``traceparent`` the message carries). Model
calls (``chat``), the commit and the publish are its children, through the current-span context.
"""

from __future__ import annotations

import contextvars
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Link, Span, SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from stoa_agents.protocol import TurnMessage
from stoa_telemetry import genai, ids
from stoa_telemetry.otel import fixed_ids, tracing

TRACER = "stoa.agents"
_PROPAGATOR = TraceContextTextMapPropagator()
# When the current delivery arrived (monotonic): the turn's latency is measured from here to its commit.
delivered_at: contextvars.ContextVar[float] = contextvars.ContextVar("stoa_delivered_at", default=0.0)


def traceparent_of(span: Span) -> str:
    ctx = span.get_span_context()
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}"


def context_of(traceparent: str | None) -> otel_context.Context:
    """An OpenTelemetry context whose current span is ``traceparent`` (empty when absent or invalid)."""
    return _PROPAGATOR.extract({"traceparent": traceparent} if traceparent else {})


def _links(msg: TurnMessage, delivery: int, trace_id: int) -> list[Link]:
    links = []
    previous = trace.get_current_span(context_of(msg.traceparent)).get_span_context()
    if previous.is_valid:
        links.append(Link(previous, {genai.STOA_LINK_KIND: genai.LINK_PREVIOUS}))
    for earlier in range(delivery):
        ctx = SpanContext(
            trace_id, ids.attempt_span_id(msg.message_id, earlier), is_remote=True, trace_flags=TraceFlags(1)
        )
        links.append(Link(ctx, {genai.STOA_LINK_KIND: genai.LINK_INTERRUPTED}))
    return links


@contextmanager
def turn_span(
    msg: TurnMessage, *, agent: str, namespace: str, pod: str, delivery: int, redelivered: bool
) -> Iterator[Span]:
    """The current span while a delivery is handled; set ``stoa.turn.outcome`` on it before leaving."""
    trace_id = ids.turn_trace_id(msg.message_id)
    attributes: dict[str, Any] = {
        genai.OPERATION_NAME: genai.OP_INVOKE_AGENT,
        genai.AGENT_NAME: agent,
        genai.CONVERSATION_ID: msg.conversation_id,
        genai.STOA_CONVERSATION: msg.conversation,
        genai.STOA_TURN_SEQ: msg.seq,
        genai.STOA_POD: pod,
        genai.STOA_REDELIVERED: redelivered,
        genai.MESSAGING_SYSTEM: "rabbitmq",
        genai.MESSAGING_MESSAGE_ID: msg.message_id,
        genai.MESSAGING_DELIVERY_COUNT: delivery,
    }
    if namespace:
        attributes[genai.STOA_NAMESPACE] = namespace
    with fixed_ids(trace_id, ids.attempt_span_id(msg.message_id, delivery)):
        span = (
            tracing()
            .tracer(TRACER)
            .start_span(
                genai.invoke_agent_span(agent),
                context=otel_context.Context(),  # a root: one trace per turn, earlier turns are links
                kind=SpanKind.CONSUMER,
                attributes=attributes,
                links=_links(msg, delivery, trace_id),
            )
        )
    token = delivered_at.set(time.monotonic())
    try:
        with trace.use_span(span, end_on_exit=True, record_exception=True, set_status_on_exception=True):
            yield span
    finally:
        delivered_at.reset(token)


def turn_outcome(span: Span, outcome: str) -> None:
    span.set_attribute(genai.STOA_TURN_OUTCOME, outcome)
    if outcome in ("model-failed", "dead-lettered"):
        span.set_attribute(genai.ERROR_TYPE, outcome)
        span.set_status(Status(StatusCode.ERROR, outcome))


def current_traceparent() -> str | None:
    span = trace.get_current_span()
    return traceparent_of(span) if span.get_span_context().is_valid else None


@contextmanager
def child(name: str, kind: SpanKind, attributes: dict[str, Any]) -> Iterator[Span]:
    with tracing().tracer(TRACER).start_as_current_span(name, kind=kind, attributes=attributes) as span:
        yield span


def commit_span() -> Any:
    return child(
        genai.commit_span(),
        SpanKind.INTERNAL,
        {genai.DB_SYSTEM: "postgresql", genai.DB_OPERATION: "COMMIT", genai.DB_COLLECTION: "stoa.turns"},
    )


def publish_span(destination: str) -> Any:
    return child(
        genai.publish_span(destination),
        SpanKind.PRODUCER,
        {
            genai.MESSAGING_SYSTEM: "rabbitmq",
            genai.MESSAGING_OPERATION_TYPE: "send",
            genai.MESSAGING_DESTINATION: destination,
        },
    )


def turn_ms() -> int | None:
    """Milliseconds since the current delivery arrived (None outside a delivery)."""
    started = delivered_at.get()
    return int((time.monotonic() - started) * 1000) if started else None


def chat_attempt(model: str, parent_traceparent: str | None, number: int) -> Span:
    """A CLIENT span for one model call attempt, child of ``parent_traceparent`` (the turn span)."""
    return (
        tracing()
        .tracer(TRACER)
        .start_span(
            genai.chat_span(model),
            context=context_of(parent_traceparent),
            kind=SpanKind.CLIENT,
            attributes={
                genai.OPERATION_NAME: genai.OP_CHAT,
                genai.PROVIDER_NAME: genai.PROVIDER_OPENAI,
                genai.REQUEST_MODEL: model,
                genai.STOA_ATTEMPT: number,
            },
        )
    )


def end_chat_attempt(span: Span, answered: Any, error_type: str, error: str) -> None:
    if answered is not None:
        span.set_attribute(genai.RESPONSE_MODEL, answered.model)
        span.set_attribute(genai.USAGE_INPUT_TOKENS, answered.tokens_in)
        span.set_attribute(genai.USAGE_OUTPUT_TOKENS, answered.tokens_out)
        if answered.target:
            span.set_attribute(genai.STOA_TARGET, answered.target)
    else:
        span.set_attribute(genai.ERROR_TYPE, error_type)
        span.set_status(Status(StatusCode.ERROR, error[:300]))
    span.end()


@contextmanager
def start_span(conversation_id: str, name: str) -> Iterator[Span]:
    """``start_conversation {name}``: the trace of a conversation's start (record + turn 1's publish)."""
    with fixed_ids(ids.start_trace_id(conversation_id), None):
        span = (
            tracing()
            .tracer(TRACER)
            .start_span(
                f"start_conversation {name}",
                context=otel_context.Context(),
                kind=SpanKind.INTERNAL,
                attributes={genai.CONVERSATION_ID: conversation_id, genai.STOA_CONVERSATION: name},
            )
        )
    with trace.use_span(span, end_on_exit=True, record_exception=True, set_status_on_exception=True):
        yield span
