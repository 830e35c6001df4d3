"""The chart's observability toggles: alert rules, dashboard, PodMonitor and the OTEL_* wiring."""

from __future__ import annotations

import json
from typing import Any

import yaml

from stoa_telemetry.dashboard import dashboard
from stoa_telemetry.shipped import shipped_rules
from tests.unit.chart.helm import find, render, template

ALL = (
    "observability.prometheusRules.enabled=true",
    "observability.prometheusRules.configMap=true",
    "observability.grafanaDashboard.enabled=true",
    "observability.podMonitor.enabled=true",
)


def _operator_env(objects: list[dict[str, Any]]) -> dict[str, Any]:
    (deployment,) = find(objects, "Deployment", "stoa-operator")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e.get("value") for e in container["env"]}


def test_off_by_default() -> None:
    objects = render()
    assert not [o for o in objects if o["kind"] in ("PrometheusRule", "PodMonitor")]
    assert not [o for o in objects if o["kind"] == "ConfigMap" and "dashboard" in o["metadata"]["name"]]
    assert not [k for k in _operator_env(objects) if k.startswith("OTEL_")]


def test_rules_and_dashboard_are_the_generated_ones() -> None:
    objects = render(*ALL, "observability.prometheusRules.labels.release=kps")
    (rule,) = find(objects, "PrometheusRule")
    assert rule["metadata"]["labels"]["release"] == "kps"
    assert rule["spec"] == shipped_rules()
    (rules_cm,) = find(objects, "ConfigMap", "stoa-prometheus-rules")
    assert yaml.safe_load(rules_cm["data"]["stoa-rules.yaml"]) == shipped_rules()
    (board,) = find(objects, "ConfigMap", "stoa-dashboard")
    assert board["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(board["data"]["stoa-overview.json"]) == dashboard()
    # The SLO PrometheusRules the operator creates get the same labels (the Prometheus' ruleSelector).
    assert _operator_env(objects)["STOA_OPERATOR_PROMETHEUS_RULE_LABELS"] == "release=kps"


def test_dashboard_namespace_and_sidecar_label_are_settable() -> None:
    objects = render(
        "observability.grafanaDashboard.enabled=true",
        "observability.grafanaDashboard.namespace=monitoring",
        "observability.grafanaDashboard.labels.grafana_dashboard=stoa",
        "observability.grafanaDashboard.annotations.grafana_folder=Stoa",
    )
    (board,) = find(objects, "ConfigMap", "stoa-dashboard")
    assert board["metadata"]["namespace"] == "monitoring"
    assert board["metadata"]["labels"]["grafana_dashboard"] == "stoa"
    assert board["metadata"]["annotations"] == {"grafana_folder": "Stoa"}


def test_pod_monitor_selects_agents_and_gateways_of_the_watched_namespaces() -> None:
    (monitor,) = find(render("observability.podMonitor.enabled=true"), "PodMonitor")
    assert monitor["spec"]["namespaceSelector"] == {"any": True}
    expressions = {e["key"]: e["values"] for e in monitor["spec"]["selector"]["matchExpressions"]}
    assert expressions == {
        "app.kubernetes.io/managed-by": ["stoa-operator"],
        "app.kubernetes.io/component": ["agent", "gateway"],
    }
    assert [e["port"] for e in monitor["spec"]["podMetricsEndpoints"]] == ["metrics", "http"]
    (scoped,) = find(
        render("observability.podMonitor.enabled=true", "operator.watchNamespaces={team-a,team-b}"),
        "PodMonitor",
    )
    assert scoped["spec"]["namespaceSelector"] == {"matchNames": ["team-a", "team-b"]}


def test_otel_values_reach_the_operator_environment() -> None:
    env = _operator_env(
        render(
            "observability.otel.endpoint=http://otel-collector.monitoring:4318",
            "observability.otel.captureMessageContent=true",
            "observability.otel.env.OTEL_TRACES_SAMPLER=parentbased_traceidratio",
            "observability.otel.env.OTEL_TRACES_SAMPLER_ARG=0.1",
        )
    )
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel-collector.monitoring:4318"
    assert env["OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"] == "true"
    assert env["OTEL_TRACES_SAMPLER"] == "parentbased_traceidratio"
    assert env["OTEL_TRACES_SAMPLER_ARG"] == "0.1"


def test_schema_rejects_what_would_miswire_traces() -> None:
    for bad in (
        "observability.otel.endpoint=collector:4318",  # not a URL
        "observability.otel.env.OTEL_SERVICE_NAME=x",  # each component names itself
        "observability.otel.env.STOA_X=1",
        "observability.podMonitor.interval=soon",
        "observability.grafanaDashboard.enable=true",  # typo
    ):
        result = template(bad)
        assert result.returncode != 0, bad
        assert "values don't meet the specifications of the schema" in result.stderr, result.stderr
