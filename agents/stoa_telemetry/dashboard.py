"""The Grafana dashboard the chart ships (pure): agents, policies, conversations, tokens, cost and SLOs.

``dashboard()`` returns Grafana's dashboard JSON model; ``panel_queries()`` every PromQL query in it,
which the tests validate with promtool and run against a Prometheus that scraped a live gateway and live
agents (every metric a panel names must exist in that scrape).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from stoa_telemetry import slo
from stoa_telemetry.gen_ai_metrics import (
    OPERATION_DURATION,
    TIME_PER_OUTPUT_TOKEN,
    TIME_TO_FIRST_TOKEN,
    TOKEN_USAGE,
)
from stoa_telemetry.rules import BUDGET_REMAINING, RECORD_PREFIX

UID = "stoa-overview"
NS = 'namespace=~"$namespace"'
RI = "$__rate_interval"


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str


@dataclass(frozen=True)
class Panel:
    title: str
    queries: tuple[Query, ...]
    unit: str = "short"
    kind: str = "timeseries"  # timeseries or stat
    description: str = ""
    width: int = 8


def _q(expr: str, legend: str) -> Query:
    return Query(expr, legend)


def _rows() -> list[tuple[str, list[Panel]]]:
    failed = "|".join(slo.BAD_TURN_OUTCOMES)
    bad_requests = "|".join(slo.BAD_REQUEST_OUTCOMES)
    p95 = "histogram_quantile(0.95, sum by (le, {by}) (rate({metric}_bucket{{{sel}}}[{ri}])))"
    agents = [
        Panel(
            "Turns per second by outcome",
            (
                _q(
                    f"sum by (agent, outcome) (rate(stoa_agent_turns_total{{{NS}}}[{RI}]))",
                    "{{agent}} {{outcome}}",
                ),
            ),
            "ops",
        ),
        Panel(
            "Turn latency p95 (delivery to commit)",
            (
                _q(
                    p95.format(by="agent", metric="stoa_agent_turn_duration_seconds", sel=NS, ri=RI),
                    "{{agent}}",
                ),
            ),
            "s",
        ),
        Panel(
            "Failed turns (each fails its conversation)",
            (
                _q(
                    "sum by (agent, outcome)"
                    f' (increase(stoa_agent_turns_total{{{NS},outcome=~"{failed}"}}[1h]))',
                    "{{agent}} {{outcome}}",
                ),
            ),
        ),
        Panel(
            "Takeovers and redeliveries",
            (
                _q(
                    f"sum by (agent) (increase(stoa_agent_takeovers_total{{{NS}}}[1h]))",
                    "{{agent}} takeovers",
                ),
                _q(
                    f"sum by (agent) (increase(stoa_agent_redeliveries_total{{{NS}}}[1h]))",
                    "{{agent}} redeliveries",
                ),
            ),
        ),
        Panel(
            "Dead-lettered messages",
            (
                _q(
                    f"sum by (agent, reason) (increase(stoa_agent_dead_lettered_total{{{NS}}}[1h]))",
                    "{{agent}} {{reason}}",
                ),
            ),
        ),
        Panel(
            "Replicas ready / active",
            (
                _q(f"sum by (agent) (stoa_agent_ready{{{NS}}})", "{{agent}} ready"),
                _q(f"sum by (agent) (stoa_agent_active{{{NS}}})", "{{agent}} active"),
            ),
        ),
    ]
    policies = [
        Panel(
            "Gateway requests by outcome",
            (
                _q(
                    f"sum by (policy, outcome) (rate(stoa_gateway_requests_total{{{NS}}}[{RI}]))",
                    "{{policy}} {{outcome}}",
                ),
            ),
            "reqps",
        ),
        Panel(
            "Gateway error ratio",
            (
                _q(
                    "sum by (policy)"
                    f' (rate(stoa_gateway_requests_total{{{NS},outcome=~"{bad_requests}"}}[{RI}]))'
                    f" / sum by (policy) (rate(stoa_gateway_requests_total{{{NS}}}[{RI}]))",
                    "{{policy}}",
                ),
            ),
            "percentunit",
        ),
        Panel(
            "Upstream attempts by target and outcome",
            (
                _q(
                    "sum by (policy, target, outcome)"
                    f" (rate(stoa_gateway_upstream_attempts_total{{{NS}}}[{RI}]))",
                    "{{policy}}/{{target}} {{outcome}}",
                ),
            ),
            "reqps",
        ),
        Panel(
            "Circuit state (0 closed, 1 half-open, 2 open)",
            (_q(f"max by (policy, target) (stoa_gateway_circuit_state{{{NS}}})", "{{policy}}/{{target}}"),),
        ),
        Panel(
            "Failovers per minute by reason",
            (
                _q(
                    f"sum by (policy, reason) (rate(stoa_gateway_fallbacks_total{{{NS}}}[{RI}])) * 60",
                    "{{policy}} {{reason}}",
                ),
            ),
        ),
        Panel(
            "Retries per minute",
            (
                _q(
                    f"sum by (policy, target) (rate(stoa_gateway_retries_total{{{NS}}}[{RI}])) * 60",
                    "{{policy}}/{{target}}",
                ),
            ),
        ),
        Panel(
            "Request latency p95 (successful)",
            (
                _q(
                    p95.format(by="policy", metric="stoa_gateway_request_duration_seconds", sel=NS, ri=RI),
                    "{{policy}}",
                ),
            ),
            "s",
        ),
        Panel(
            "Time to first token p95 (streams, gen_ai.server.time_to_first_token)",
            (
                _q(
                    p95.format(by="gen_ai_request_model", metric=TIME_TO_FIRST_TOKEN, sel=NS, ri=RI),
                    "{{gen_ai_request_model}}",
                ),
            ),
            "s",
        ),
        Panel(
            "Time per output token p95 (gen_ai.server.time_per_output_token)",
            (
                _q(
                    p95.format(by="gen_ai_request_model", metric=TIME_PER_OUTPUT_TOKEN, sel=NS, ri=RI),
                    "{{gen_ai_request_model}}",
                ),
            ),
            "s",
        ),
        Panel(
            "Target health checks (1 healthy)",
            (_q(f"min by (policy, target) (stoa_gateway_target_healthy{{{NS}}})", "{{policy}}/{{target}}"),),
        ),
        Panel(
            "Rate-limit hits",
            (
                _q(
                    f"sum by (policy, scope) (rate(stoa_gateway_rate_limited_total{{{NS}}}[{RI}])) * 60",
                    "{{policy}} {{scope}}",
                ),
            ),
        ),
        Panel(
            "In-flight upstream requests",
            (
                _q(
                    f"sum by (policy, target) (stoa_gateway_in_flight_requests{{{NS}}})",
                    "{{policy}}/{{target}}",
                ),
            ),
        ),
    ]
    tokens = [
        Panel(
            "Tokens per second by type (gen_ai.client.token.usage)",
            (
                _q(
                    "sum by (gen_ai_token_type, gen_ai_request_model)"
                    f" (rate({TOKEN_USAGE}_sum{{{NS}}}[{RI}]))",
                    "{{gen_ai_request_model}} {{gen_ai_token_type}}",
                ),
            ),
        ),
        Panel(
            "Model call duration p95 (gen_ai.client.operation.duration)",
            (
                _q(
                    p95.format(by="gen_ai_request_model", metric=OPERATION_DURATION, sel=NS, ri=RI),
                    "{{gen_ai_request_model}}",
                ),
            ),
            "s",
        ),
        Panel(
            "Tokens by agent",
            (
                _q(
                    f"sum by (agent, direction) (rate(stoa_agent_tokens_total{{{NS}}}[{RI}]))",
                    "{{agent}} {{direction}}",
                ),
            ),
        ),
    ]
    cost = [
        Panel(
            "Spend per hour by policy (USD)",
            (_q(f"sum by (policy) (rate(stoa_gateway_cost_usd_total{{{NS}}}[{RI}])) * 3600", "{{policy}}"),),
            "currencyUSD",
        ),
        Panel(
            "Spend per hour by agent (USD)",
            (_q(f"sum by (agent) (rate(stoa_gateway_cost_usd_total{{{NS}}}[{RI}])) * 3600", "{{agent}}"),),
            "currencyUSD",
        ),
        Panel(
            "Today's spend vs daily budget",
            (
                _q(f"max by (policy) (stoa_gateway_budget_spent_today_usd{{{NS}}})", "{{policy}} spent"),
                _q(f"max by (policy) (stoa_gateway_budget_limit_usd{{{NS}}})", "{{policy}} limit"),
            ),
            "currencyUSD",
        ),
        Panel(
            "Top conversations by cost (1h)",
            (
                _q(
                    "topk(10, sum by (conversation)"
                    f" (increase(stoa_gateway_conversation_cost_usd_total{{{NS}}}[1h])))",
                    "{{conversation}}",
                ),
            ),
            "currencyUSD",
        ),
        Panel(
            "Top conversations by tokens (1h)",
            (
                _q(
                    "topk(10, sum by (conversation)"
                    f" (increase(stoa_gateway_conversation_tokens_total{{{NS}}}[1h])))",
                    "{{conversation}}",
                ),
            ),
        ),
    ]
    slos = [
        Panel(
            "Error budget remaining",
            (_q(f"min by (slo) ({BUDGET_REMAINING}{{{NS}}})", "{{slo}}"),),
            "percentunit",
            kind="stat",
            width=12,
        ),
        Panel(
            "Burn rate (1h error ratio / budget)",
            (
                _q(
                    f"max by (slo) ({RECORD_PREFIX}1h{{{NS}}}) / on (slo) group_left max by (slo)"
                    f" (stoa:slo_error_budget:ratio{{{NS}}})",
                    "{{slo}}",
                ),
            ),
            width=12,
        ),
    ]
    return [
        ("Agents", agents),
        ("Model policies", policies),
        ("Tokens", tokens),
        ("Cost", cost),
        ("SLOs", slos),
    ]


def _panel_json(panel: Panel, pid: int, x: int, y: int) -> dict[str, Any]:
    return {
        "id": pid,
        "type": panel.kind,
        "title": panel.title,
        "description": panel.description,
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "gridPos": {"h": 8, "w": panel.width, "x": x, "y": y},
        "fieldConfig": {"defaults": {"unit": panel.unit}, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom"}}
        if panel.kind == "timeseries"
        else {},
        "targets": [
            {
                "refId": chr(ord("A") + i),
                "datasource": {"type": "prometheus", "uid": "${datasource}"},
                "expr": q.expr,
                "legendFormat": q.legend,
            }
            for i, q in enumerate(panel.queries)
        ],
    }


def dashboard() -> dict[str, Any]:
    panels: list[dict[str, Any]] = []
    pid, y = 1, 0
    for title, row in _rows():
        panels.append(
            {
                "id": pid,
                "type": "row",
                "title": title,
                "collapsed": False,
                "gridPos": {"h": 1, "w": 24, "x": 0, "y": y},
                "panels": [],
            }
        )
        pid, y, x = pid + 1, y + 1, 0
        for panel in row:
            if x + panel.width > 24:
                x, y = 0, y + 8
            panels.append(_panel_json(panel, pid, x, y))
            pid, x = pid + 1, x + panel.width
        y += 8
    return {
        "uid": UID,
        "title": "Stoa: agents, model policies, conversations, tokens and cost",
        "tags": ["stoa"],
        "timezone": "utc",
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "templating": {
            "list": [
                {"name": "datasource", "type": "datasource", "query": "prometheus", "label": "Prometheus"},
                {
                    "name": "namespace",
                    "type": "query",
                    "label": "Namespace",
                    "datasource": {"type": "prometheus", "uid": "${datasource}"},
                    "query": {"query": "label_values(stoa_agent_ready, namespace)", "refId": "namespace"},
                    "definition": "label_values(stoa_agent_ready, namespace)",
                    "includeAll": True,
                    "multi": True,
                    "allValue": ".+",
                    "current": {"text": "All", "value": "$__all"},
                    "refresh": 2,
                },
            ]
        },
        "annotations": {"list": []},
        "panels": panels,
    }


def panel_queries(board: dict[str, Any] | None = None) -> list[tuple[str, str]]:
    """(panel title, expr) of every query in the dashboard."""
    board = board or dashboard()
    return [
        (p["title"], t["expr"])
        for p in board["panels"]
        if p.get("type") != "row"
        for t in p.get("targets", [])
    ]


def concrete(expr: str, namespace: str = ".+", rate_interval: str = "1m") -> str:
    """A panel query with Grafana's variables filled in, runnable by Prometheus or promtool."""
    return expr.replace("$namespace", namespace).replace("$__rate_interval", rate_interval)
