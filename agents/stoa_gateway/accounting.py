"""A served call's tokens and cost: metrics, spend and the tpm correction of its reservation."""

from __future__ import annotations

import time
from typing import Any

from stoa_gateway.call import Call
from stoa_gateway.costs import Usage, measure_usage
from stoa_gateway.policy import Target


def usage_of(call: Call, target: Target, usage: Any, output_chars: int) -> Usage:
    return measure_usage(target, usage, call.features.input_tokens, output_chars)


def account(call: Call, target: Target, usage: Usage) -> None:
    m, policy, agent = call.gw.metrics, call.policy, call.agent_label
    m.child(m.input_tokens, policy, target.name, agent).inc(usage.input_tokens)
    m.child(m.output_tokens, policy, target.name, agent).inc(usage.output_tokens)
    m.child(m.cost, policy, target.name, agent).inc(usage.cost_usd)
    if call.conversation:
        conversation = m.conversation(call.conversation)
        m.conversation_tokens.labels(policy, conversation).inc(usage.total_tokens)
        m.conversation_cost.labels(policy, conversation).inc(usage.cost_usd)
    call.reservation.settle(target, usage.total_tokens, usage.cost_usd, time.monotonic(), time.time())
