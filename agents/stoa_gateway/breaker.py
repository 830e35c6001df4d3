"""Circuit breaker as pure state transitions: closed -> open -> halfOpen -> closed | open.

Closed: outcomes go into a sliding window of ``WINDOW_BUCKETS`` time buckets; when at least
``minRequests`` outcomes are in the window and the error rate reaches the threshold, it opens.
Open: nothing is admitted until ``openSeconds`` have passed; then the next admission moves it to
halfOpen. HalfOpen: up to ``halfOpenProbes`` requests are admitted at once; that many successes
close it (with an empty window), any failure re-opens it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from enum import StrEnum

from stoa_gateway.policy import CircuitBreakerPolicy

WINDOW_BUCKETS = 10


class CircuitState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "halfOpen"


CIRCUIT_GAUGE_VALUE = {CircuitState.CLOSED: 0, CircuitState.HALF_OPEN: 1, CircuitState.OPEN: 2}


@dataclass(frozen=True, slots=True)
class Breaker:
    state: CircuitState = CircuitState.CLOSED
    opened_at: float = 0.0
    # (bucket index, outcomes, failures), oldest first
    buckets: tuple[tuple[int, int, int], ...] = ()
    probes_in_flight: int = 0
    probe_successes: int = 0


def _bucket_index(now: float, window: float) -> int:
    return math.floor(now / (window / WINDOW_BUCKETS))


def _live_buckets(
    breaker: Breaker, cfg: CircuitBreakerPolicy, now: float
) -> tuple[tuple[int, int, int], ...]:
    oldest = _bucket_index(now, cfg.window_seconds) - WINDOW_BUCKETS + 1
    return tuple(b for b in breaker.buckets if b[0] >= oldest)


def window_counts(breaker: Breaker, cfg: CircuitBreakerPolicy, now: float) -> tuple[int, int]:
    """(outcomes, failures) in the sliding window at ``now``."""
    live = _live_buckets(breaker, cfg, now)
    return sum(b[1] for b in live), sum(b[2] for b in live)


def effective_state(breaker: Breaker, cfg: CircuitBreakerPolicy, now: float) -> CircuitState:
    """The state as a reader at ``now`` sees it: an expired open breaker reads as halfOpen."""
    if breaker.state is CircuitState.OPEN and now - breaker.opened_at >= cfg.open_seconds:
        return CircuitState.HALF_OPEN
    return breaker.state


def breaker_would_admit(breaker: Breaker, cfg: CircuitBreakerPolicy, now: float) -> bool:
    if not cfg.enabled:
        return True
    state = effective_state(breaker, cfg, now)
    if state is CircuitState.CLOSED:
        return True
    if state is CircuitState.OPEN:
        return False
    probes = breaker.probes_in_flight if breaker.state is CircuitState.HALF_OPEN else 0
    return probes < cfg.half_open_probes


def breaker_admit(breaker: Breaker, cfg: CircuitBreakerPolicy, now: float) -> tuple[bool, Breaker]:
    """Admit one request or not; in halfOpen an admitted request takes a probe slot."""
    if not cfg.enabled:
        return True, breaker
    if breaker.state is CircuitState.OPEN:
        if now - breaker.opened_at < cfg.open_seconds:
            return False, breaker
        breaker = Breaker(state=CircuitState.HALF_OPEN, opened_at=breaker.opened_at)
    if breaker.state is CircuitState.HALF_OPEN:
        if breaker.probes_in_flight >= cfg.half_open_probes:
            return False, breaker
        return True, replace(breaker, probes_in_flight=breaker.probes_in_flight + 1)
    return True, breaker


def breaker_release(breaker: Breaker) -> Breaker:
    """An admitted request ended without a verdict (client gone): free its probe slot."""
    if breaker.state is CircuitState.HALF_OPEN and breaker.probes_in_flight > 0:
        return replace(breaker, probes_in_flight=breaker.probes_in_flight - 1)
    return breaker


def breaker_record(  # noqa: PLR0911 - one return per transition
    breaker: Breaker, cfg: CircuitBreakerPolicy, ok: bool, now: float
) -> Breaker:
    """Record the outcome of an admitted request."""
    if not cfg.enabled:
        return breaker
    if breaker.state is CircuitState.HALF_OPEN:
        if not ok:
            return Breaker(state=CircuitState.OPEN, opened_at=now)
        successes = breaker.probe_successes + 1
        if successes >= cfg.half_open_probes:
            return Breaker()
        return replace(
            breaker, probe_successes=successes, probes_in_flight=max(0, breaker.probes_in_flight - 1)
        )
    if breaker.state is CircuitState.OPEN:
        return breaker  # late outcome of a request admitted before it opened
    index = _bucket_index(now, cfg.window_seconds)
    live = list(_live_buckets(breaker, cfg, now))
    if live and live[-1][0] == index:
        _, total, failures = live[-1]
        live[-1] = (index, total + 1, failures + (0 if ok else 1))
    else:
        live.append((index, 1, 0 if ok else 1))
    total = sum(b[1] for b in live)
    failures = sum(b[2] for b in live)
    if not ok and total >= cfg.min_requests and failures / total >= cfg.error_rate_threshold:
        return Breaker(state=CircuitState.OPEN, opened_at=now)
    return replace(breaker, buckets=tuple(live))
