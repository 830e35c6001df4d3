"""Agent and ModelPolicy reconciles with SLOs and probes, against fakes of both adapters."""

from __future__ import annotations

import datetime as dt
from typing import Any

from stoa_agents.probes import ProbeReport
from stoa_agents.store.turn_records import WindowCounts
from stoa_operator.reconcile.agent import reconcile_agent
from stoa_operator.reconcile.modelpolicy import reconcile_model_policy
from tests.unit.operator.fakes import FakeKube, FakeRuntime
from tests.unit.operator.test_reconcile_tables import NS, _agent, _conditions, _ctx, _policy

RULES = "monitoring.coreos.com/v1/prometheusrules"
SLO = {"availability": {"objective": 99}, "latency": {"objective": 95, "thresholdSeconds": 10}}


def _kube(*objects: dict[str, Any], served: bool = True) -> FakeKube:
    kube = FakeKube(served={RULES} if served else set())
    kube.secret(NS, "stoa-connections", {"rabbitmqUrl": "amqp://x", "postgresDsn": "postgresql://x"})
    for obj in objects:
        kube.add(obj)
    return kube


def _rules(kube: FakeKube) -> list[dict[str, Any]]:
    return [o for o in kube.objects.values() if o["kind"] == "PrometheusRule"]


def test_agent_slo_status_budget_column_and_rule() -> None:
    kube = _kube(_policy())
    runtime = FakeRuntime(turn_counts={(NS, "ada"): WindowCounts(stored=990, failed=10, timed=990, slow=0)})
    body = kube.add(_agent(slo=SLO))
    outcome = reconcile_agent(_ctx(kube, runtime), body)
    slo = outcome.status["slo"]
    assert slo["availability"]["sli"] == 99.0
    assert slo["availability"]["errorBudgetRemaining"] == 0  # exactly the 1% budget spent
    assert slo["latency"]["errorBudgetRemaining"] == 1
    assert outcome.status["errorBudgetRemaining"] == "0.0%"
    (rule,) = _rules(kube)
    assert rule["metadata"]["name"] == "stoa-slo-agent-ada"
    assert rule["metadata"]["ownerReferences"][0]["uid"] == "uid-ada"
    assert outcome.status["prometheusRule"] == "stoa-slo-agent-ada"
    # The SLO removed: the rule goes, the status fields are cleared.
    body = kube.body("stoa.dev/v1alpha1", "Agent", NS, "ada")
    body["spec"].pop("slo")
    outcome = reconcile_agent(_ctx(kube, runtime), body)
    assert _rules(kube) == []
    assert "slo" not in outcome.status or outcome.status["slo"] is None


def test_no_prometheus_operator_no_rule_but_status_still() -> None:
    kube = _kube(_policy(), served=False)
    body = kube.add(_agent(slo=SLO))
    outcome = reconcile_agent(_ctx(kube, FakeRuntime()), body)
    assert _rules(kube) == []
    assert outcome.status["slo"]["availability"]["events"] == 0
    assert outcome.status["errorBudgetRemaining"] == "100.0%"


def test_failing_probe_sets_probe_failing_with_the_reason() -> None:
    kube = _kube(_policy())
    now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    report = ProbeReport(now, "Failed", "Agent ada could not get turn 1 from its model: HTTP 503", None, 2)
    runtime = FakeRuntime(probes={(NS, "ada"): report})
    outcome = reconcile_agent(_ctx(kube, runtime), kube.add(_agent(probe={"intervalSeconds": 60})))
    assert _conditions(outcome.status)["ProbeFailing"] == ("True", "ProbeFailed")
    assert outcome.status["probe"]["consecutiveFailures"] == 2
    assert ("Warning", "ProbeFailed") in [(e.type, e.reason) for e in outcome.events]
    assert ("probe", NS, "ada") in runtime.calls


def test_model_policy_slo_rule() -> None:
    kube = _kube()
    body = kube.add(_policy(slo={"timeToFirstToken": {"objective": 99, "thresholdSeconds": 1}}))
    outcome = reconcile_model_policy(_ctx(kube, FakeRuntime()), body)
    (rule,) = _rules(kube)
    assert rule["metadata"]["name"] == "stoa-slo-policy-models"
    assert {g["name"] for g in rule["spec"]["groups"]} == {
        "stoa-slo-policy-team-models-timeToFirstToken-recordings",
        "stoa-slo-policy-team-models-timeToFirstToken-alerts",
    }
    assert outcome.status["prometheusRule"] == "stoa-slo-policy-models"
