"""Guardrail actions on a call, counted and audited (input blocking and masking, output masking)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from stoa_gateway.call import Call
from stoa_gateway.errors import error_response
from stoa_gateway.guardrails import compile_rules, find_blocked, mask_messages
from stoa_gateway.policy import PiiKind
from stoa_gateway.tokens import message_texts


def blocked_input(call: Call, messages: list[Any]) -> web.Response | None:
    """The 400 for input that matches a blocked keyword or pattern, or None."""
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
        conversation=call.conversation,
    )
    return error_response(
        400,
        f"request blocked by ModelPolicy {call.policy}: input matched blocked {hit}",
        type_="invalid_request_error",
        code="guardrail_blocked",
    )


def masked_input(call: Call, messages: list[Any]) -> list[Any]:
    rules = compile_rules(call.spec.guardrails.input)
    if not rules.pii:
        return messages
    messages, counts = mask_messages(messages, rules.pii)
    count_masked(call, "input", counts)
    return messages


def output_blocked(call: Call, target: str, hit: str) -> None:
    call.gw.metrics.guardrail.labels(call.policy, "output", "content_filter", hit.split(" ", 1)[0]).inc()
    call.gw.audit.emit(
        "guardrail_blocked",
        policy=call.policy,
        target=target,
        reason=f"output matched {hit}",
        trace_id=call.trace.trace_id,
        agent=call.agent,
        conversation=call.conversation,
    )


def count_masked(call: Call, direction: str, counts: dict[PiiKind, int], target: str | None = None) -> None:
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
        conversation=call.conversation,
    )
