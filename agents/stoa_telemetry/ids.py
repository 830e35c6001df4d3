"""Trace and span ids that every replica derives alike (pure), so all attempts at one turn share a trace.

A turn is identified by its message id (``<conversation uuid>:<seq>``). Its trace id is a hash of that id,
so the attempt that a kill -9 interrupted and the redelivery that completes the turn land in one trace.
The turn span of delivery *k* (RabbitMQ's ``x-delivery-count``, 0 for the first delivery) has a span id
hashed from (message id, k): the replica that receives delivery *k* links to deliveries ``0..k-1`` without
reading anything the dead replica wrote.
"""

from __future__ import annotations

import hashlib

_TRACE_BITS = 128
_SPAN_BITS = 64


def _hash(text: str, bits: int) -> int:
    value = int.from_bytes(hashlib.sha256(text.encode()).digest()[: bits // 8], "big")
    return value or 1  # all-zero ids are invalid in W3C trace context


def turn_trace_id(message_id: str) -> int:
    """The trace of one turn (every delivery of its message)."""
    return _hash(f"stoa-turn:{message_id}", _TRACE_BITS)


def attempt_span_id(message_id: str, delivery: int) -> int:
    """The ``invoke_agent`` span of delivery ``delivery`` (0-based) of a turn message."""
    return _hash(f"stoa-attempt:{message_id}:{delivery}", _SPAN_BITS)


def start_trace_id(conversation_id: str) -> int:
    """The trace of a conversation's start (its record and the publish of turn 1)."""
    return _hash(f"stoa-start:{conversation_id}", _TRACE_BITS)


def hex_trace(trace_id: int) -> str:
    return f"{trace_id:032x}"


def hex_span(span_id: int) -> str:
    return f"{span_id:016x}"
