"""The SLO PrometheusRule of an Agent or a ModelPolicy: applied when the API server serves the kind.

Owned by the object (garbage-collected with it); without ``spec.slo`` the rule the object had
(``status.prometheusRule``) is deleted.
"""

from __future__ import annotations

from typing import Any

from stoa_operator.builders.common import owner_from_body
from stoa_operator.builders.observability import (
    PROMETHEUS_RULE_API,
    PROMETHEUS_RULE_KIND,
    build_prometheus_rule,
    prometheus_rule_name,
)
from stoa_operator.reconcile.context import Context


def apply_slo_rules(ctx: Context, body: dict[str, Any], rules: dict[str, Any] | None) -> str | None:
    """``rules``: the object's rule groups (None: it has no SLO). Returns the PrometheusRule's name."""
    meta = body["metadata"]
    kind, namespace, name = body["kind"], meta["namespace"], meta["name"]
    had = (body.get("status") or {}).get("prometheusRule")
    if rules is None:
        if had:
            ctx.kube.delete(PROMETHEUS_RULE_API, PROMETHEUS_RULE_KIND, namespace, had)
        return None
    if not ctx.api_available(PROMETHEUS_RULE_API, "prometheusrules"):
        return None
    owner = owner_from_body(body).reference(controller=True)
    labels = ctx.settings.prometheus_rule_labels_map()
    ctx.kube.apply(build_prometheus_rule(kind, namespace, name, rules, owner=owner, extra_labels=labels))
    return prometheus_rule_name(kind, name)
