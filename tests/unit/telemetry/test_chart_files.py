"""The chart's rule and dashboard files are what stoa_telemetry generates; the CLI prints SLO rules."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from stoa_cli.main import main as stoa
from stoa_telemetry.cli import CHART_FILES, DASHBOARD_FILE, RULES_FILE, chart_files


def test_chart_files_are_generated_and_current() -> None:
    for rel, content in chart_files().items():
        path = CHART_FILES / rel
        assert path.read_text() == content, f"{path} is stale: run `make chart-observability`"
    assert stoa(["observability", "chart-files", "--check"]) == 0
    board = json.loads((CHART_FILES / DASHBOARD_FILE).read_text())
    assert board["uid"] == "stoa-overview"
    rules = yaml.safe_load((CHART_FILES / RULES_FILE).read_text())
    alerts = {r["alert"] for g in rules["groups"] for r in g["rules"]}
    assert {
        "StoaGatewayErrorRateHigh",
        "StoaGatewayCircuitOpen",
        "StoaGatewayFailoversHigh",
        "StoaSpendBudgetNearExhaustion",
        "StoaDeadLetteredMessages",
        "StoaConversationsFailing",
        "StoaAgentTakeoversFrequent",
        "StoaSLOErrorBudgetLow",
    } <= alerts


def test_check_fails_on_a_stale_file(tmp_path: Path) -> None:
    assert stoa(["observability", "chart-files", "--dir", str(tmp_path)]) == 0
    (tmp_path / RULES_FILE).write_text("groups: []\n")
    assert stoa(["observability", "chart-files", "--check", "--dir", str(tmp_path)]) == 1


def test_slo_rules_for_manifests(tmp_path: Path, capsys: object) -> None:
    (tmp_path / "agents.yaml").write_text(
        yaml.safe_dump_all(
            [
                {
                    "apiVersion": "stoa.dev/v1alpha1",
                    "kind": "Agent",
                    "metadata": {"name": "planner", "namespace": "team"},
                    "spec": {
                        "role": "r",
                        "persona": "p",
                        "modelPolicyRef": {"name": "m"},
                        "slo": {"availability": {"objective": 99}},
                    },
                },
                {
                    "apiVersion": "stoa.dev/v1alpha1",
                    "kind": "Agent",
                    "metadata": {"name": "quiet", "namespace": "team"},
                    "spec": {"role": "r", "persona": "p", "modelPolicyRef": {"name": "m"}},
                },
            ]
        )
    )
    assert stoa(["observability", "slo-rules", "-f", str(tmp_path), "--prometheus-rule"]) == 0
    out = capsys.readouterr().out  # type: ignore[attr-defined]
    (doc,) = list(yaml.safe_load_all(out))
    assert doc["kind"] == "PrometheusRule"
    assert doc["metadata"] == {
        "name": "stoa-slo-agent-planner",
        "namespace": "team",
        "labels": {
            "app.kubernetes.io/managed-by": "stoa-operator",
            "app.kubernetes.io/component": "slo",
            "stoa.dev/slo-of": "agent.planner",
        },
    }
    assert {g["name"] for g in doc["spec"]["groups"]} == {
        "stoa-slo-agent-team-planner-availability-recordings",
        "stoa-slo-agent-team-planner-availability-alerts",
    }
