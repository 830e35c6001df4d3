"""Prometheus rules (pure): per-SLO recording rules and burn-rate alerts, and the alerts the chart ships.

SLO rules have the shape Sloth and Pyrra generate: one error-ratio recording per rate window
(``stoa:slo_errors:ratio_rate5m`` ... ``_rate3d``), the ratio over the whole SLO window (from the raw
counters, as Pyrra does, so it equals the operator's number), the objective, the error budget and the
budget remaining, then a page alert and a ticket alert over the multi-window multi-burn-rate pairs of
``stoa_telemetry.slo``. Every series carries ``slo`` (``<kind>/<namespace>/<name>/<sli>``),
``slo_kind``, ``sli``, ``namespace`` and ``agent`` or ``policy``, so the shipped generic alerts and the
dashboard can use them across SLOs.

The output is plain rule groups (``{"groups": [...]}``): a Prometheus rule file, and the ``spec`` of a
prometheus-operator ``PrometheusRule``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from stoa_telemetry import slo
from stoa_telemetry.spec import AgentSLO, LatencyObjective, Objective, PolicySLO

RECORD_PREFIX = "stoa:slo_errors:ratio_rate"
WINDOW = "$__window"
OBJECTIVE = "stoa:slo_objective:ratio"
BUDGET = "stoa:slo_error_budget:ratio"
BUDGET_REMAINING = "stoa:slo_error_budget_remaining:ratio"

AGENT_TURNS = "stoa_agent_turns_total"
AGENT_TURN_SECONDS = "stoa_agent_turn_duration_seconds"
GATEWAY_REQUESTS = "stoa_gateway_requests_total"
GATEWAY_SECONDS = "stoa_gateway_request_duration_seconds"
GATEWAY_TTFT = "stoa_gateway_time_to_first_token_seconds"


def go_float(value: float) -> str:
    """How prometheus_client writes a bucket's ``le`` (``10`` -> ``10.0``): label values must match."""
    text = repr(float(value))
    return text if "e" not in text else f"{value:.17g}"


def _selector(labels: dict[str, str], **more: str) -> str:
    items = {**labels, **more}
    return (
        "{"
        + ",".join(f'{k}="{v}"' if not k.endswith("~") else f'{k[:-1]}=~"{v}"' for k, v in items.items())
        + "}"
    )


def _regex(values: tuple[str, ...]) -> str:
    return "|".join(values)


@dataclass(frozen=True)
class SLI:
    """One objective of one object: its PromQL error ratio over any window."""

    kind: str  # agent or policy
    namespace: str
    name: str
    sli: str  # availability, latency, timeToFirstToken
    objective: float
    window: str
    errors_template: str  # PromQL with WINDOW where the range goes

    @property
    def id(self) -> str:
        return f"{self.kind}/{self.namespace}/{self.name}/{self.sli}"

    @property
    def labels(self) -> dict[str, str]:
        return {
            "slo": self.id,
            "slo_kind": self.kind,
            "sli": self.sli,
            "namespace": self.namespace,
            self.kind: self.name,
        }

    def errors(self, window: str) -> str:
        return self.errors_template.replace(WINDOW, window)


def _ratio(bad: str, total: str) -> str:
    # A counter a process has never incremented has no series: `or vector(0)` makes "no failures" 0.
    # A window without any event has no ratio (not NaN): `> 0` drops the empty denominator.
    return f"(sum(rate({bad}[{WINDOW}])) or vector(0)) / (sum(rate({total}[{WINDOW}])) > 0)"


def _latency(histogram: str, sel: dict[str, str], threshold: float) -> str:
    fast = f"{histogram}_bucket" + _selector(sel, le=go_float(threshold))
    count = f"{histogram}_count" + _selector(sel)
    return f"1 - (sum(rate({fast}[{WINDOW}])) / (sum(rate({count}[{WINDOW}])) > 0))"


def _availability(bad: str, good: tuple[str, ...], failed: tuple[str, ...], sel: dict[str, str]) -> str:
    errors = bad + _selector(sel, **{"outcome~": _regex(failed)})
    total = bad + _selector(sel, **{"outcome~": _regex(good + failed)})
    return _ratio(errors, total)


def agent_slis(namespace: str, agent: str, spec: AgentSLO) -> list[SLI]:
    sel = {"namespace": namespace, "agent": agent}
    found: list[tuple[str, Objective | LatencyObjective, str]] = []
    if spec.availability is not None:
        expr = _availability(AGENT_TURNS, slo.GOOD_TURN_OUTCOMES, slo.BAD_TURN_OUTCOMES, sel)
        found.append(("availability", spec.availability, expr))
    if spec.latency is not None:
        found.append(
            ("latency", spec.latency, _latency(AGENT_TURN_SECONDS, sel, spec.latency.threshold_seconds))
        )
    return [SLI("agent", namespace, agent, name, o.objective, spec.window, expr) for name, o, expr in found]


def policy_slis(namespace: str, policy: str, spec: PolicySLO) -> list[SLI]:
    sel = {"namespace": namespace, "policy": policy}
    found: list[tuple[str, Objective | LatencyObjective, str]] = []
    if spec.availability is not None:
        expr = _availability(GATEWAY_REQUESTS, slo.GOOD_REQUEST_OUTCOMES, slo.BAD_REQUEST_OUTCOMES, sel)
        found.append(("availability", spec.availability, expr))
    for name, objective, histogram in (
        ("latency", spec.latency, GATEWAY_SECONDS),
        ("timeToFirstToken", spec.time_to_first_token, GATEWAY_TTFT),
    ):
        if objective is not None:
            found.append((name, objective, _latency(histogram, sel, objective.threshold_seconds)))
    return [SLI("policy", namespace, policy, name, o.objective, spec.window, expr) for name, o, expr in found]


def _num(value: float) -> str:
    return f"{value:.12g}"


def sli_groups(slis: list[SLI]) -> list[dict[str, Any]]:
    """Recording and alerting groups for these SLIs (one pair of groups per SLI)."""
    groups: list[dict[str, Any]] = []
    for s in slis:
        budget = slo.error_budget(s.objective)
        labels = s.labels
        sel = _selector({"slo": s.id})
        records: list[dict[str, Any]] = [
            {"record": f"{RECORD_PREFIX}{w}", "expr": s.errors(w), "labels": dict(labels)}
            for w in slo.RATE_WINDOWS
        ]
        # The whole window from the raw counters (as Pyrra does): the exact ratio of events, the same
        # number the operator computes from the turn records.
        records += [
            {"record": f"{RECORD_PREFIX}{s.window}", "expr": s.errors(s.window), "labels": dict(labels)},
            {"record": OBJECTIVE, "expr": f"vector({_num(s.objective / 100)})", "labels": dict(labels)},
            {"record": BUDGET, "expr": f"vector({_num(budget)})", "labels": dict(labels)},
            {
                "record": BUDGET_REMAINING,
                "expr": f"1 - ({RECORD_PREFIX}{s.window}{sel} / {_num(budget)})",
                "labels": dict(labels),
            },
        ]
        alerts = [_burn_alert(s, severity, budget) for severity in ("page", "ticket")]
        safe = s.id.replace("/", "-")
        groups.append({"name": f"stoa-slo-{safe}-recordings", "rules": records})
        groups.append({"name": f"stoa-slo-{safe}-alerts", "rules": alerts})
    return groups


def _burn_alert(s: SLI, severity: str, budget: float) -> dict[str, Any]:
    sel = _selector({"slo": s.id})
    clauses = []
    for w in slo.BURN_WINDOWS:
        if w.severity != severity:
            continue
        threshold = f"({_num(w.factor(s.window))} * {_num(budget)})"
        clauses.append(
            f"({RECORD_PREFIX}{w.long}{sel} > {threshold} and {RECORD_PREFIX}{w.short}{sel} > {threshold})"
        )
    what = {"agent": "Agent", "policy": "ModelPolicy"}[s.kind]
    name = {"page": "StoaSLOBurnRatePage", "ticket": "StoaSLOBurnRateTicket"}[severity]
    spent = " or ".join(
        f"{w.budget_fraction:.0%} of the budget in {w.long}"
        for w in slo.BURN_WINDOWS
        if w.severity == severity
    )
    return {
        "alert": name,
        "expr": "\n  or\n".join(clauses),
        "labels": {
            **s.labels,
            "severity": "critical" if severity == "page" else "warning",
            "stoa_alert": severity,
        },
        "annotations": {
            "summary": f"{what} {s.namespace}/{s.name}: {s.sli} SLO burning its error budget too fast",
            "description": (
                f"The {s.sli} objective ({s.objective}% over {s.window}) is spending {spent} (short window"
                f" confirming). See `kubectl describe {what.lower()} -n {s.namespace} {s.name}` (status.slo)."
            ),
        },
    }


def agent_rules(namespace: str, agent: str, spec: AgentSLO) -> dict[str, Any]:
    return {"groups": sli_groups(agent_slis(namespace, agent, spec))}


def policy_rules(namespace: str, policy: str, spec: PolicySLO) -> dict[str, Any]:
    return {"groups": sli_groups(policy_slis(namespace, policy, spec))}
