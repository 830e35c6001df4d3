"""W3C trace context for turns (pure apart from the id source passed in)."""

from __future__ import annotations

import re

_TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")


def new_traceparent(trace_id: str, span_id: str) -> str:
    return f"00-{trace_id}-{span_id}-01"


def child_traceparent(parent: str | None, trace_id: str, span_id: str) -> str:
    """Continue ``parent``'s trace with a new span id, or start a new trace when absent/invalid."""
    match = _TRACEPARENT.match(parent or "")
    if match is None or set(match.group(1)) == {"0"}:
        return new_traceparent(trace_id, span_id)
    return f"00-{match.group(1)}-{span_id}-{match.group(3)}"


def trace_id_of(traceparent: str | None) -> str | None:
    match = _TRACEPARENT.match(traceparent or "")
    return match.group(1) if match else None
