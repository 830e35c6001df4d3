"""SLO math: burn-rate factors, budget left, the page/ticket verdict and the status shape."""

from __future__ import annotations

import pytest

from stoa_telemetry import slo
from stoa_telemetry.slo import Counts


@pytest.mark.parametrize(
    ("window", "factors"),
    [
        ("30d", {"1h": 14.4, "6h": 6.0, "1d": 3.0, "3d": 1.0}),  # the Sloth/Pyrra/SRE-workbook table
        ("7d", {"1h": 3.36, "6h": 1.4, "1d": 0.7, "3d": 0.2333}),
        ("28d", {"1h": 13.44, "6h": 5.6, "1d": 2.8, "3d": 0.9333}),
    ],
)
def test_burn_factors_keep_the_budget_fractions(window: str, factors: dict[str, float]) -> None:
    assert {w.long: w.factor(window) for w in slo.BURN_WINDOWS} == factors
    assert [(w.severity, w.long, w.short) for w in slo.BURN_WINDOWS] == [
        ("page", "1h", "5m"),
        ("page", "6h", "30m"),
        ("ticket", "1d", "2h"),
        ("ticket", "3d", "6h"),
    ]


@pytest.mark.parametrize(
    ("counts", "objective", "burn", "left"),
    [
        (Counts(1000, 0), 99.9, 0.0, 1.0),
        (Counts(1000, 1), 99.9, 1.0, 0.0),  # exactly the budget
        (Counts(1000, 5), 99.9, 5.0, -4.0),  # overspent five times
        (Counts(2000, 1), 99.9, 0.5, 0.5),
        (Counts(0, 0), 99.9, 0.0, 1.0),  # no events: nothing burnt
        (Counts(100, 1), 99.0, 1.0, 0.0),
    ],
)
def test_burn_rate_and_budget_remaining(counts: Counts, objective: float, burn: float, left: float) -> None:
    assert slo.burn_rate(counts, objective) == pytest.approx(burn)
    assert slo.budget_remaining(counts, objective) == pytest.approx(left)


@pytest.mark.parametrize(
    ("rates", "expected"),
    [
        ({}, {"page": False, "ticket": False}),
        ({"1h": 20, "5m": 20}, {"page": True, "ticket": False}),
        ({"1h": 20, "5m": 1}, {"page": False, "ticket": False}),  # the short window has recovered
        ({"6h": 7, "30m": 7}, {"page": True, "ticket": False}),
        ({"1d": 3.5, "2h": 3.5}, {"page": False, "ticket": True}),
        ({"3d": 1.1, "6h": 1.1}, {"page": False, "ticket": True}),
        ({"1h": 14.4, "5m": 14.4}, {"page": False, "ticket": False}),  # strictly above
    ],
)
def test_alerting_needs_both_windows_above_the_factor(
    rates: dict[str, float], expected: dict[str, bool]
) -> None:
    assert slo.alerting(rates, "30d") == expected


def test_objective_status_is_the_agent_status_block() -> None:
    counts = {w: Counts(100, 0) for w in slo.RATE_WINDOWS}
    counts["5m"] = Counts(10, 5)
    counts["1h"] = Counts(100, 5)
    counts["30d"] = Counts(10000, 5)
    status = slo.objective_status(99.9, "30d", counts)
    assert status["objective"] == 99.9
    assert status["sli"] == 99.95
    assert status["errorBudgetRemaining"] == pytest.approx(0.5)
    assert status["events"] == 10000
    assert status["badEvents"] == 5
    rates = {r["window"]: r["rate"] for r in status["burnRates"]}  # type: ignore[attr-defined]
    assert rates["5m"] == pytest.approx(500)
    assert rates["1h"] == pytest.approx(50)
    assert rates["3d"] == 0
    assert status["alerting"] == {"page": True, "ticket": False}
    assert slo.budget_text(0.5) == "50.0%"
    assert slo.budget_text(-1.25) == "-125.0%"


def test_seconds_parses_prometheus_durations() -> None:
    assert [slo.seconds(w) for w in ("5m", "1h", "3d", "30d")] == [300, 3600, 259200, 2592000]
    with pytest.raises(ValueError, match="not a duration"):
        slo.seconds("1h30m")
