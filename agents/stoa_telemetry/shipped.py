"""The alert rules the Helm chart ships (pure): written to ``charts/stoa/files/prometheus-rules.yaml``.

Every expression names only metrics Stoa exports (checked against a live scrape in the tests) and the
``namespace`` label that Prometheus' Kubernetes discovery (or the chart's PodMonitor) adds.
"""

from __future__ import annotations

from typing import Any

from stoa_telemetry import slo
from stoa_telemetry.rules import BUDGET_REMAINING

DOCS = "docs/observability.md#alerts"


# A table of alerts: positional (name, expr, for, severity, summary, description) reads best here.
def _alert(  # noqa: PLR0917
    name: str, expr: str, for_: str, severity: str, summary: str, description: str
) -> dict[str, Any]:
    rule: dict[str, Any] = {"alert": name, "expr": expr}
    if for_ != "0s":
        rule["for"] = for_
    rule["labels"] = {"severity": severity, "stoa_alert": name}
    rule["annotations"] = {
        "summary": summary,
        "description": description,
        "docs": DOCS,
    }
    return rule


def _outcomes(values: tuple[str, ...]) -> str:
    return "|".join(values)


def shipped_rules() -> dict[str, Any]:
    bad_requests = _outcomes(slo.BAD_REQUEST_OUTCOMES)
    all_requests = _outcomes(slo.GOOD_REQUEST_OUTCOMES + slo.BAD_REQUEST_OUTCOMES)
    failed_turns = _outcomes(slo.BAD_TURN_OUTCOMES)
    gateway = [
        _alert(
            "StoaGatewayErrorRateHigh",
            f'sum by (namespace, policy) (rate(stoa_gateway_requests_total{{outcome=~"{bad_requests}"}}[5m]))'
            " / (sum by (namespace, policy)"
            f' (rate(stoa_gateway_requests_total{{outcome=~"{all_requests}"}}[5m])) > 0) > 0.05',
            "5m",
            "warning",
            "ModelPolicy {{ $labels.namespace }}/{{ $labels.policy }}: more than 5% of requests fail",
            "{{ $value | humanizePercentage }} of the gateway's requests for this policy ended in an upstream"
            " error, an interrupted stream or no available target over 5 minutes.",
        ),
        _alert(
            "StoaGatewayCircuitOpen",
            "max by (namespace, policy, target) (stoa_gateway_circuit_state) == 2",
            "1m",
            "warning",
            "ModelPolicy {{ $labels.namespace }}/{{ $labels.policy }}: circuit of target {{ $labels.target }}"
            " is open",
            "A gateway replica stopped sending requests to this target after too many failures; requests"
            " fail over to the next target. `kubectl get modelpolicy` shows the last error.",
        ),
        _alert(
            "StoaGatewayFailoversHigh",
            "sum by (namespace, policy) (rate(stoa_gateway_fallbacks_total[5m])) * 60 > 10",
            "10m",
            "warning",
            "ModelPolicy {{ $labels.namespace }}/{{ $labels.policy }}: {{ $value | humanize }} failovers per"
            " minute",
            "Requests keep moving off their first target (by reason in stoa_gateway_fallbacks_total).",
        ),
        _alert(
            "StoaSpendBudgetNearExhaustion",
            "max by (namespace, policy) (stoa_gateway_budget_spent_today_usd"
            " / (stoa_gateway_budget_limit_usd > 0)) > 0.9",
            "5m",
            "warning",
            "ModelPolicy {{ $labels.namespace }}/{{ $labels.policy }}: {{ $value | humanizePercentage }} of"
            " today's budget spent",
            "At 100% the gateway answers 429 budget_exceeded until 00:00 UTC (budget.dailyLimitUSD is per"
            " replica).",
        ),
        _alert(
            "StoaGatewayTargetUnhealthy",
            "max by (namespace, policy, target) (1 - stoa_gateway_target_healthy) == 1",
            "2m",
            "warning",
            "ModelPolicy {{ $labels.namespace }}/{{ $labels.policy }}: target {{ $labels.target }} fails its"
            " health check",
            "The gateway's active health check (a real one-token completion) fails for this target; it is"
            " skipped until a check passes.",
        ),
    ]
    agents = [
        _alert(
            "StoaDeadLetteredMessages",
            "sum by (namespace, agent, reason) (increase(stoa_agent_dead_lettered_total[10m])) > 0",
            "0s",
            "warning",
            "Agent {{ $labels.namespace }}/{{ $labels.agent }}: messages dead-lettered"
            " ({{ $labels.reason }})",
            "Turn messages were dead-lettered in the last 10 minutes; their conversations failed with the"
            " reason in stoa.dead_letters (`kubectl describe conversation`).",
        ),
        _alert(
            "StoaConversationsFailing",
            f'sum by (namespace, agent) (increase(stoa_agent_turns_total{{outcome=~"{failed_turns}"}}[10m]))'
            " > 0",
            "0s",
            "warning",
            "Agent {{ $labels.namespace }}/{{ $labels.agent }}: conversations failing",
            "{{ $value | humanize }} turns failed in the last 10 minutes (model errors after retries, or"
            " dead-lettered turns); each failed its conversation.",
        ),
        _alert(
            "StoaAgentTakeoversFrequent",
            "sum by (namespace, agent) (increase(stoa_agent_takeovers_total[15m])) > 3",
            "0s",
            "warning",
            "Agent {{ $labels.namespace }}/{{ $labels.agent }}: {{ $value | humanize }} takeovers in 15"
            " minutes",
            "The active replica keeps changing (crashes, evictions or frozen pods); standbys finish the"
            " turns, but look at the pods' restarts and logs.",
        ),
        _alert(
            "StoaAgentNotReady",
            "max by (namespace, agent) (stoa_agent_ready) == 0",
            "5m",
            "warning",
            "Agent {{ $labels.namespace }}/{{ $labels.agent }}: a replica cannot reach RabbitMQ or"
            " PostgreSQL",
            "stoa_agent_ready is 0 on a replica for 5 minutes (its /readyz says which dependency is down).",
        ),
    ]
    slos = [
        _alert(
            "StoaSLOErrorBudgetLow",
            f"{BUDGET_REMAINING} < 0.1",
            "15m",
            "warning",
            "SLO {{ $labels.slo }}: {{ $value | humanizePercentage }} of the error budget left",
            "The objective's error budget for its window is nearly spent; the operator's status.slo shows"
            " the same from the turn records.",
        ),
    ]
    return {
        "groups": [
            {"name": "stoa-gateway", "rules": gateway},
            {"name": "stoa-agents", "rules": agents},
            {"name": "stoa-slo", "rules": slos},
        ]
    }
