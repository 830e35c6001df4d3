"""A target's health from its active checks (pure): thresholds in a row flip it."""

from __future__ import annotations

from dataclasses import dataclass

from stoa_gateway.retry import Disposition, Failure
from stoa_telemetry.spec import HealthCheck


@dataclass(frozen=True)
class HealthState:
    healthy: bool = True
    passed_in_row: int = 0
    failed_in_row: int = 0


def after_check(state: HealthState, ok: bool, cfg: HealthCheck) -> HealthState:
    """The target's health after one check (pure)."""
    if ok:
        passed = state.passed_in_row + 1
        healthy = state.healthy or passed >= cfg.healthy_threshold
        return HealthState(healthy, passed, 0)
    failed = state.failed_in_row + 1
    healthy = state.healthy and failed < cfg.unhealthy_threshold
    return HealthState(healthy, 0, failed)


def check_passed(failure: Failure | None, retry_fatal: Disposition | None) -> bool:
    """A check passes on an answer: 200, a request-caused 4xx, or 429 (up, but busy)."""
    if failure is None:
        return True
    return failure.status == 429 or retry_fatal is Disposition.FATAL
