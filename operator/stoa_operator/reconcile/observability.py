"""An Agent's SLO status, probe condition and SLO rules (pure): from turn records and probe reports.

The SLIs come from the turn records in PostgreSQL (``stoa_agents.store.turn_records``), so status works
without Prometheus; the numbers follow ``stoa_telemetry.slo``, the same table the Prometheus rules use.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from stoa_operator.reconcile.conditions import PROBE_FAILING, Observation
from stoa_telemetry import slo
from stoa_telemetry.spec import AgentSLO


def slo_windows(spec: AgentSLO) -> dict[str, int]:
    """Windows to count: the SLO window and every burn-rate window (name -> seconds)."""
    return {spec.window: slo.seconds(spec.window), **{w: slo.seconds(w) for w in slo.RATE_WINDOWS}}


def latency_ms(spec: AgentSLO) -> int | None:
    return None if spec.latency is None else round(spec.latency.threshold_seconds * 1000)


def slo_status(spec: AgentSLO, counts: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    """(``status.slo``, the printer column's budget text) from per-window ``WindowCounts``.

    No timestamp in it: an idle agent's status does not change, so it is not rewritten."""
    out: dict[str, Any] = {"window": spec.window}
    budgets: list[float] = []
    if spec.availability is not None:
        availability = {w: slo.Counts(c.stored + c.failed, c.failed) for w, c in counts.items()}
        block = slo.objective_status(spec.availability.objective, spec.window, availability)
        out["availability"] = block
        budgets.append(float(block["errorBudgetRemaining"]))  # type: ignore[arg-type]
    if spec.latency is not None:
        latency = {w: slo.Counts(c.timed, c.slow) for w, c in counts.items()}
        block = slo.objective_status(spec.latency.objective, spec.window, latency)
        out["latency"] = block
        budgets.append(float(block["errorBudgetRemaining"]))  # type: ignore[arg-type]
    return out, slo.budget_text(min(budgets)) if budgets else None


def _iso(value: dt.datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def probe_status(report: Any) -> dict[str, Any]:
    """``status.probe`` from a ``stoa_agents.probes.ProbeReport``."""
    return {
        "lastRun": _iso(report.last_run),
        "lastResult": report.last_result,
        "lastReason": report.last_reason,
        "lastSuccess": _iso(report.last_success),
        "consecutiveFailures": report.consecutive_failures,
    }


def probe_observation(report: Any) -> Observation:
    """``ProbeFailing``: True after a failed or timed-out probe, until one succeeds."""
    if report.last_result is None:
        return Observation(PROBE_FAILING, False, "NoProbeFinished", "no probe has finished yet")
    if report.last_result == "Succeeded":
        return Observation(
            PROBE_FAILING, False, "ProbeSucceeded", f"last probe succeeded at {_iso(report.last_run)}"
        )
    reason = "ProbeTimedOut" if report.last_result == "TimedOut" else "ProbeFailed"
    message = f"{report.consecutive_failures} probe(s) in a row failed; last: {report.last_reason}"
    return Observation(PROBE_FAILING, True, reason, message)
