"""SLO spec validation and the shape of the generated rules (the numbers are checked by promtool)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from stoa_agents.metrics import AgentMetrics
from stoa_api.agent import AgentSpec
from stoa_gateway.metrics import LATENCY_BUCKETS as GATEWAY_BUCKETS
from stoa_gateway.policy import ModelPolicySpec
from stoa_telemetry import slo
from stoa_telemetry.rules import agent_rules, go_float, policy_rules
from stoa_telemetry.spec import LATENCY_BUCKETS, AgentSLO


def test_latency_thresholds_are_the_exported_buckets() -> None:
    """Prometheus can only count 'under the threshold' at a bucket boundary of the histograms."""
    assert tuple(float(b) for b in GATEWAY_BUCKETS) == LATENCY_BUCKETS
    turn = AgentMetrics().turn_seconds
    assert tuple(float(b) for b in turn._upper_bounds[:-1]) == LATENCY_BUCKETS


def test_agent_spec_accepts_slo_and_probe_and_rejects_bad_values() -> None:
    spec = AgentSpec.model_validate(
        {
            "role": "pro",
            "persona": "p",
            "modelPolicyRef": {"name": "m"},
            "slo": {
                "window": "28d",
                "availability": {"objective": 99.5},
                "latency": {"objective": 99, "thresholdSeconds": 30},
            },
            "probe": {"intervalSeconds": 60},
        }
    )
    assert spec.slo is not None
    assert spec.slo.window == "28d"
    assert spec.probe is not None
    assert spec.probe.timeout_seconds == 120
    with pytest.raises(ValidationError, match="histogram bucket boundary"):
        AgentSLO.model_validate({"latency": {"objective": 99, "thresholdSeconds": 7}})
    with pytest.raises(ValidationError):
        AgentSLO.model_validate({"availability": {"objective": 100}})
    with pytest.raises(ValidationError):
        AgentSLO.model_validate({"window": "2h"})


def test_policy_spec_accepts_slo_and_health_check() -> None:
    spec = ModelPolicySpec.model_validate(
        {
            "targets": [{"name": "a", "baseURL": "http://x/v1", "model": "m"}],
            "slo": {"timeToFirstToken": {"objective": 99, "thresholdSeconds": 1}},
            "healthCheck": {"intervalSeconds": 5},
        }
    )
    assert spec.health_check is not None
    assert spec.health_check.unhealthy_threshold == 2


def test_agent_rules_shape() -> None:
    rules = agent_rules("ns1", "planner", AgentSLO.model_validate({"availability": {"objective": 99.9}}))
    recordings, alerts = rules["groups"]
    names = [r["record"] for r in recordings["rules"]]
    assert names[:7] == [f"stoa:slo_errors:ratio_rate{w}" for w in slo.RATE_WINDOWS]
    assert "stoa:slo_errors:ratio_rate30d" in names
    assert {r["labels"]["slo"] for r in recordings["rules"]} == {"agent/ns1/planner/availability"}
    assert [a["alert"] for a in alerts["rules"]] == ["StoaSLOBurnRatePage", "StoaSLOBurnRateTicket"]
    page = alerts["rules"][0]["expr"]
    assert "(14.4 * 0.001)" in page
    assert "(6 * 0.001)" in page
    assert 'outcome=~"model-failed|dead-lettered"' in recordings["rules"][0]["expr"]


def test_policy_rules_cover_each_objective_and_bucket_label_format() -> None:
    spec = ModelPolicySpec.model_validate(
        {
            "targets": [{"name": "a", "baseURL": "http://x/v1", "model": "m"}],
            "slo": {
                "availability": {"objective": 99},
                "latency": {"objective": 95, "thresholdSeconds": 10},
                "timeToFirstToken": {"objective": 90, "thresholdSeconds": 0.5},
            },
        }
    )
    assert spec.slo is not None
    groups = policy_rules("ns", "chat", spec.slo)["groups"]
    assert len(groups) == 6
    text = str(groups)
    assert 'le="10.0"' in text
    assert 'le="0.5"' in text
    assert go_float(120) == "120.0"
    assert go_float(0.025) == "0.025"
