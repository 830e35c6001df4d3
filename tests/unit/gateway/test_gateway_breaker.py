"""Circuit breaker transitions (pure)."""

from __future__ import annotations

import pytest

from stoa_gateway.breaker import (
    Breaker,
    CircuitState,
    breaker_admit,
    breaker_record,
    breaker_release,
    breaker_would_admit,
    effective_state,
    window_counts,
)
from stoa_gateway.policy import CircuitBreakerPolicy

CFG = CircuitBreakerPolicy(
    error_rate_threshold=0.5, window_seconds=10, min_requests=4, open_seconds=5, half_open_probes=2
)


def feed(outcomes: list[tuple[float, bool]], breaker: Breaker | None = None) -> Breaker:
    breaker = breaker or Breaker()
    for now, ok in outcomes:
        breaker = breaker_record(breaker, CFG, ok, now)
    return breaker


@pytest.mark.parametrize(
    ("outcomes", "state"),
    [
        ([(0, False), (0, False), (0, False)], CircuitState.CLOSED),  # below minRequests
        ([(0, False), (0, False), (0, True), (0, False)], CircuitState.OPEN),  # 3/4 failed
        ([(0, True), (0, True), (0, False), (0, False)], CircuitState.OPEN),  # exactly the threshold
        ([(0, True), (0, True), (0, True), (0, False)], CircuitState.CLOSED),  # 1/4 failed
        (
            [(0, False), (0, False), (0, False), (11, False)],
            CircuitState.CLOSED,
        ),  # old failures left the window
        ([(0, True)] * 10 + [(1, False)] * 9, CircuitState.CLOSED),  # 9/19 < 0.5
        ([(0, True)] * 10 + [(1, False)] * 10, CircuitState.OPEN),
    ],
)
def test_closed_breaker_opens_on_error_rate(outcomes: list[tuple[float, bool]], state: CircuitState) -> None:
    assert feed(outcomes).state is state


def test_window_slides() -> None:
    breaker = feed([(0, False), (4, True), (9.5, True)])
    assert window_counts(breaker, CFG, 9.9) == (3, 1)
    assert window_counts(breaker, CFG, 10.5) == (2, 0)


def test_open_half_open_closed_cycle() -> None:
    opened = feed([(0, False)] * 4)
    assert opened == Breaker(state=CircuitState.OPEN, opened_at=0)
    assert breaker_admit(opened, CFG, 4.9) == (False, opened)
    assert not breaker_would_admit(opened, CFG, 4.9)
    assert effective_state(opened, CFG, 5) is CircuitState.HALF_OPEN
    ok1, probing = breaker_admit(opened, CFG, 5)
    ok2, probing = breaker_admit(probing, CFG, 5)
    ok3, probing = breaker_admit(probing, CFG, 5)
    assert (ok1, ok2, ok3) == (True, True, False)  # two probes at once
    probing = breaker_record(probing, CFG, True, 6)
    assert probing.state is CircuitState.HALF_OPEN
    closed = breaker_record(probing, CFG, True, 6)
    assert closed == Breaker()


def test_failed_probe_reopens_and_restarts_the_open_period() -> None:
    _, probing = breaker_admit(feed([(0, False)] * 4), CFG, 5)
    reopened = breaker_record(probing, CFG, False, 7)
    assert reopened == Breaker(state=CircuitState.OPEN, opened_at=7)
    assert not breaker_would_admit(reopened, CFG, 11)
    assert breaker_would_admit(reopened, CFG, 12)


def test_release_frees_a_probe_slot_and_late_outcomes_are_ignored_while_open() -> None:
    opened = feed([(0, False)] * 4)
    assert breaker_record(opened, CFG, False, 1) == opened
    _, probing = breaker_admit(opened, CFG, 5)
    assert breaker_release(probing).probes_in_flight == 0


def test_disabled_breaker_always_admits() -> None:
    cfg = CircuitBreakerPolicy(enabled=False)
    breaker = Breaker(state=CircuitState.OPEN, opened_at=0)
    assert breaker_admit(breaker, cfg, 0) == (True, breaker)
    assert breaker_record(Breaker(), cfg, False, 0) == Breaker()
