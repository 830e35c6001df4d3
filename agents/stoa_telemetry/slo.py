"""SLO math (pure): SLIs, error budget remaining and multi-window multi-burn-rate verdicts.

One table for both places that judge an SLO: the Prometheus rules (``stoa_telemetry.rules``) and the
Agent status the operator computes from the turn records in PostgreSQL. The alert windows are the ones
Sloth and Pyrra use (Google SRE workbook, "Alerting on SLOs"): for a 30-day window,

* page:   1h and 5m above 14.4x (2% of the budget in an hour), or 6h and 30m above 6x (5% in 6 hours);
* ticket: 1d and 2h above 3x (10% in a day), or 3d and 6h above 1x (10% in 3 days).

For another window the factors keep the same budget fractions (``factor = fraction * window / long``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass

# Outcomes of the runtime's turn records (stoa.processed_messages.outcome, stoa_agent_turns_total).
GOOD_TURN_OUTCOMES = ("stored",)
BAD_TURN_OUTCOMES = ("model-failed", "dead-lettered")
# A probe no replica answered within its timeout: recorded by the operator (no agent saw it), so it is in
# the turn records (status) but not in the agents' metrics (Prometheus: the probe metrics and alert).
PROBE_TIMEOUT_OUTCOME = "timed-out"
RECORDED_BAD_TURN_OUTCOMES = (*BAD_TURN_OUTCOMES, PROBE_TIMEOUT_OUTCOME)
# Gateway request outcomes (stoa_gateway_requests_total): server-side failures vs successes. Rejections a
# policy asks for (budget, agent limits, guardrails) and client errors count as neither.
GOOD_REQUEST_OUTCOMES = ("ok",)
BAD_REQUEST_OUTCOMES = (
    "upstream_error",
    "stream_interrupted",
    "no_target_available",
    "upstream_rate_limited",
)

_DURATION = re.compile(r"^(\d+)([smhd])$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def seconds(window: str) -> int:
    """``5m`` -> 300 (Prometheus duration syntax, one unit)."""
    match = _DURATION.match(window)
    if match is None:
        raise ValueError(f"not a duration: {window!r}")
    return int(match.group(1)) * _UNIT[match.group(2)]


@dataclass(frozen=True)
class BurnWindow:
    severity: str  # page or ticket
    long: str
    short: str
    budget_fraction: float  # of the whole window's budget spent within ``long``

    def factor(self, slo_window: str) -> float:
        return round(self.budget_fraction * seconds(slo_window) / seconds(self.long), 4)


BURN_WINDOWS = (
    BurnWindow("page", "1h", "5m", 0.02),
    BurnWindow("page", "6h", "30m", 0.05),
    BurnWindow("ticket", "1d", "2h", 0.10),
    BurnWindow("ticket", "3d", "6h", 0.10),
)
RATE_WINDOWS = ("5m", "30m", "1h", "2h", "6h", "1d", "3d")


@dataclass(frozen=True)
class Counts:
    """Events in one window: ``bad`` of ``total`` missed the objective."""

    total: int
    bad: int

    @property
    def error_ratio(self) -> float | None:
        return self.bad / self.total if self.total else None


def error_budget(objective_percent: float) -> float:
    """Allowed error ratio: 99.9 -> 0.001."""
    return round(1 - objective_percent / 100, 12)


def burn_rate(counts: Counts, objective_percent: float) -> float:
    """How fast the budget burns in this window: 1 = exactly on budget; no events burns nothing."""
    ratio = counts.error_ratio
    return 0.0 if ratio is None else ratio / error_budget(objective_percent)


def budget_remaining(window_counts: Counts, objective_percent: float) -> float:
    """Fraction of the window's error budget left (1 = untouched, 0 = spent, negative = overspent)."""
    ratio = window_counts.error_ratio
    return 1.0 if ratio is None else 1 - ratio / error_budget(objective_percent)


def alerting(rates: Mapping[str, float], slo_window: str) -> dict[str, bool]:
    """Which severities the multi-window multi-burn-rate rules would fire on these burn rates."""
    out = {"page": False, "ticket": False}
    for w in BURN_WINDOWS:
        factor = w.factor(slo_window)
        if rates.get(w.long, 0.0) > factor and rates.get(w.short, 0.0) > factor:
            out[w.severity] = True
    return out


def _round(value: float) -> float:
    return 0.0 if math.isclose(value, 0.0, abs_tol=1e-12) else round(value, 6)


def objective_status(
    objective_percent: float, slo_window: str, counts: Mapping[str, Counts]
) -> dict[str, object]:
    """The status of one objective (camelCase): SLI over the window, budget left, burn rates, alerts.

    ``counts`` holds the SLO window itself (key ``slo_window``) and every ``RATE_WINDOWS`` entry."""
    whole = counts[slo_window]
    rates = {w: burn_rate(counts.get(w, Counts(0, 0)), objective_percent) for w in RATE_WINDOWS}
    ratio = whole.error_ratio
    return {
        "objective": objective_percent,
        "sli": None if ratio is None else round(100 * (1 - ratio), 4),
        "errorBudgetRemaining": _round(budget_remaining(whole, objective_percent)),
        "events": whole.total,
        "badEvents": whole.bad,
        "burnRates": [{"window": w, "rate": _round(r)} for w, r in rates.items()],
        "alerting": alerting(rates, slo_window),
    }


def budget_text(remaining: float | None) -> str | None:
    """The printer-column text: ``87.5%`` (may go below 0% when the budget is overspent)."""
    return None if remaining is None else f"{remaining * 100:.1f}%"
