"""The answer to a non-streaming call: output guardrails, ``usage.cost`` and the served ``model``."""

from __future__ import annotations

import json
import time

from aiohttp import web

from stoa_gateway.accounting import account, usage_of
from stoa_gateway.call import Call
from stoa_gateway.guardrail_events import count_masked, output_blocked
from stoa_gateway.guardrails import compile_rules, find_blocked, mask_pii
from stoa_gateway.policy import PiiKind, Target
from stoa_gateway.telemetry import record_served
from stoa_gateway.tokens import completion_text
from stoa_gateway.upstream import Completion


def _filter_output(call: Call, target: Target, body: dict[str, object]) -> None:
    rules = compile_rules(call.spec.guardrails.output)
    choices = body.get("choices")
    choices = choices if isinstance(choices, list) else []
    if rules.keywords or rules.patterns:
        hit = find_blocked(completion_text(body), rules)
        if hit is not None:
            for choice in choices:
                if isinstance(choice, dict):
                    choice["message"] = {"role": "assistant", "content": ""}
                    choice["finish_reason"] = "content_filter"
            output_blocked(call, target.name, hit)
            return
    if not rules.pii:
        return
    totals: dict[PiiKind, int] = {}
    for choice in choices:
        message = choice.get("message") if isinstance(choice, dict) else None
        if isinstance(message, dict) and isinstance(message.get("content"), str):
            message["content"], counts = mask_pii(message["content"], rules.pii)
            for kind, n in counts.items():
                totals[kind] = totals.get(kind, 0) + n
    count_masked(call, "output", totals, target.name)


def completion_response(call: Call, target: Target, result: Completion) -> web.Response:
    body = result.body
    _filter_output(call, target, body)
    usage = usage_of(call, target, body.get("usage"), len(completion_text(body)))
    upstream_usage = body.get("usage")
    body["usage"] = usage.body(upstream_usage if isinstance(upstream_usage, dict) else None)
    if not isinstance(body.get("model"), str) or not body["model"]:
        body["model"] = target.model
    account(call, target, usage)
    record_served(call, target, usage, str(body["model"]), completion_text(body))
    m = call.gw.metrics
    m.child(m.latency, call.policy, target.name).observe(time.monotonic() - call.started)
    call.count(target.name, "ok")
    return web.Response(
        body=json.dumps(body, separators=(",", ":")).encode(),
        content_type="application/json",
        headers=call.response_headers(target, usage),
    )
