"""The shipped alerts, the generated SLO rules and every dashboard query, checked by a real promtool.

``promtool check rules`` validates syntax; ``promtool test rules`` runs the hand-written expectations in
``promtool/`` (input series, alert timing, labels and annotations) against the generated rule files.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path

import yaml

from stoa_devenv.prometheus import promtool
from stoa_telemetry.cli import RULES_FILE, chart_files
from stoa_telemetry.dashboard import concrete, panel_queries
from stoa_telemetry.rules import agent_rules, policy_rules
from stoa_telemetry.spec import AgentSLO, PolicySLO

HERE = Path(__file__).parent / "promtool"
PLANNER_SLO = AgentSLO.model_validate(
    {"availability": {"objective": 99.9}, "latency": {"objective": 99, "thresholdSeconds": 10}}
)
CHAT_SLO = PolicySLO.model_validate(
    {
        "window": "7d",
        "availability": {"objective": 99.5},
        "latency": {"objective": 95, "thresholdSeconds": 5},
        "timeToFirstToken": {"objective": 99, "thresholdSeconds": 1},
    }
)


def _dump(path: Path, rules: Mapping[str, object]) -> Path:
    path.write_text(yaml.safe_dump(rules, sort_keys=False))
    return path


def _ok(result: object) -> None:
    assert getattr(result, "returncode", 1) == 0, getattr(result, "stdout", "") + getattr(
        result, "stderr", ""
    )


def test_shipped_alerts_pass_check_and_their_unit_tests(tmp_path: Path) -> None:
    (tmp_path / RULES_FILE).write_text(chart_files()[RULES_FILE])
    shutil.copy(HERE / "shipped_test.yaml", tmp_path)
    check = promtool("check", "rules", str(tmp_path / RULES_FILE))
    _ok(check)
    assert "SUCCESS: 10 rules found" in check.stdout
    _ok(promtool("test", "rules", "shipped_test.yaml", cwd=tmp_path))


def test_agent_slo_rules_fire_page_and_ticket_on_the_burn_rate_table(tmp_path: Path) -> None:
    _dump(tmp_path / "slo_agent_rules.yaml", agent_rules("ns1", "planner", PLANNER_SLO))
    shutil.copy(HERE / "slo_agent_test.yaml", tmp_path)
    _ok(promtool("check", "rules", str(tmp_path / "slo_agent_rules.yaml")))
    _ok(promtool("test", "rules", "slo_agent_test.yaml", cwd=tmp_path))


def test_policy_slo_rules_fire_on_gateway_errors_and_slow_first_tokens(tmp_path: Path) -> None:
    _dump(tmp_path / "slo_policy_rules.yaml", policy_rules("ns1", "chat", CHAT_SLO))
    shutil.copy(HERE / "slo_policy_test.yaml", tmp_path)
    _ok(promtool("check", "rules", str(tmp_path / "slo_policy_rules.yaml")))
    _ok(promtool("test", "rules", "slo_policy_test.yaml", cwd=tmp_path))


def test_a_wrong_expectation_fails(tmp_path: Path) -> None:
    """The promtool runs above can fail: the same test with the page expected too early does."""
    _dump(tmp_path / "slo_agent_rules.yaml", agent_rules("ns1", "planner", PLANNER_SLO))
    text = (HERE / "slo_agent_test.yaml").read_text().replace("- eval_time: 75m", "- eval_time: 61m", 1)
    (tmp_path / "slo_agent_test.yaml").write_text(text)
    result = promtool("test", "rules", "slo_agent_test.yaml", cwd=tmp_path)
    assert result.returncode != 0
    assert "StoaSLOBurnRatePage" in result.stdout + result.stderr


def test_every_dashboard_query_is_valid_promql(tmp_path: Path) -> None:
    queries = panel_queries()
    assert len(queries) >= 25
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"dashboard:query_{i}", "expr": concrete(q)}
                    for i, (_, q) in enumerate(queries)
                ],
            }
        ]
    }
    path = _dump(tmp_path / "dashboard.yaml", rules)
    check = promtool("check", "rules", str(path))
    _ok(check)
    assert f"SUCCESS: {len(queries)} rules found" in check.stdout
