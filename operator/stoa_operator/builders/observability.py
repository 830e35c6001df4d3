"""SLO rules of an Agent or a ModelPolicy as a prometheus-operator ``PrometheusRule`` (pure)."""

from __future__ import annotations

from typing import Any

from stoa_operator.builders.common import LABEL_COMPONENT, LABEL_MANAGED_BY, MANAGED_BY

PROMETHEUS_RULE_API = "monitoring.coreos.com/v1"
PROMETHEUS_RULE_KIND = "PrometheusRule"
PROMETHEUS_RULE_CRD = "prometheusrules.monitoring.coreos.com"


def prometheus_rule_name(kind: str, name: str) -> str:
    prefix = {"Agent": "stoa-slo-agent-", "ModelPolicy": "stoa-slo-policy-"}[kind]
    return (prefix + name)[:253]


def build_prometheus_rule(
    kind: str,
    namespace: str,
    name: str,
    rules: dict[str, Any],
    *,
    owner: dict[str, Any] | None,
    extra_labels: dict[str, str] | None = None,
) -> dict[str, Any]:
    """``rules`` is ``{"groups": [...]}`` from ``stoa_telemetry.rules``; owned by the CR when given."""
    metadata: dict[str, Any] = {
        "name": prometheus_rule_name(kind, name),
        "namespace": namespace,
        "labels": {
            LABEL_MANAGED_BY: MANAGED_BY,
            LABEL_COMPONENT: "slo",
            "stoa.dev/slo-of": f"{kind.lower()}.{name}"[:63],
            **(extra_labels or {}),
        },
    }
    if owner is not None:
        metadata["ownerReferences"] = [owner]
    return {
        "apiVersion": PROMETHEUS_RULE_API,
        "kind": PROMETHEUS_RULE_KIND,
        "metadata": metadata,
        "spec": {"groups": rules["groups"]},
    }
