"""W3C trace context (pure): parse ``traceparent``, make the child header sent upstream."""

from __future__ import annotations

import re
from dataclasses import dataclass

_TRACEPARENT = re.compile(r"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")


@dataclass(frozen=True, slots=True)
class TraceContext:
    trace_id: str
    parent_id: str
    flags: str = "01"

    def header(self) -> str:
        return f"00-{self.trace_id}-{self.parent_id}-{self.flags}"


def parse_traceparent(value: str | None) -> TraceContext | None:
    if not value:
        return None
    m = _TRACEPARENT.match(value.strip().lower())
    if m is None or m.group(1) == "ff" or set(m.group(2)) == {"0"} or set(m.group(3)) == {"0"}:
        return None
    return TraceContext(m.group(2), m.group(3), m.group(4))


def trace_for_request(incoming: str | None, random_trace_id: str, random_span_id: str) -> TraceContext:
    """Continue the caller's trace, or start one with the given random ids (32 and 16 hex)."""
    parent = parse_traceparent(incoming)
    if parent is None:
        return TraceContext(random_trace_id, random_span_id)
    return TraceContext(parent.trace_id, random_span_id, parent.flags)


def child(ctx: TraceContext, random_span_id: str) -> TraceContext:
    """The context for one upstream attempt: same trace, a new span id."""
    return TraceContext(ctx.trace_id, random_span_id, ctx.flags)
