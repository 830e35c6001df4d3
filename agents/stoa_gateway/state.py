"""Mutable per-replica runtime state of each policy and target (owned by the server shell)."""

from __future__ import annotations

from dataclasses import dataclass, field

from stoa_gateway.breaker import Breaker
from stoa_gateway.costs import seconds_to_utc_midnight
from stoa_gateway.health_state import HealthState
from stoa_gateway.policy import ModelPolicySpec
from stoa_gateway.reservation import Reservation
from stoa_gateway.routing import ObservedState, TargetView

EWMA_ALPHA = 0.3


def ewma(previous: float | None, sample: float, alpha: float = EWMA_ALPHA) -> float:
    return sample if previous is None else previous + alpha * (sample - previous)


@dataclass
class TargetRuntime:
    breaker: Breaker = field(default_factory=Breaker)
    in_flight: int = 0
    ewma_latency: float | None = None
    cooldown_until: float = 0.0
    last_error: str | None = None
    last_error_at: float | None = None
    last_failover_reason: str | None = None
    last_failover_at: float | None = None
    last_success_at: float | None = None
    health: HealthState = field(default_factory=HealthState)  # active health checks (health_check.py)
    last_health_check_at: float | None = None
    last_health_error: str | None = None

    def view(self, limit_wait: float) -> TargetView:
        return TargetView(
            breaker=self.breaker,
            in_flight=self.in_flight,
            ewma_latency=self.ewma_latency,
            limit_wait=limit_wait,
            cooldown_until=self.cooldown_until,
            unhealthy=not self.health.healthy,
        )


class PolicyRuntime:
    """State of one policy; survives config reloads for targets that keep their name."""

    def __init__(self, name: str, spec: ModelPolicySpec) -> None:
        self.name = name
        self.spec = spec
        self.targets: dict[str, TargetRuntime] = {t.name: TargetRuntime() for t in spec.targets}
        self.rr_counter = 0

    def update_spec(self, spec: ModelPolicySpec) -> None:
        self.spec = spec
        self.targets = {t.name: self.targets.get(t.name) or TargetRuntime() for t in spec.targets}

    def target_runtime(self, name: str) -> TargetRuntime:
        runtime = self.targets.get(name)
        if runtime is None:  # a target added by a reload while a request was planned
            runtime = self.targets[name] = TargetRuntime()
        return runtime

    def observed(self, now: float, epoch: float, reservation: Reservation, rand: float) -> ObservedState:
        """Snapshot for the pure planner: breakers, load, and how long each limit would make us wait."""
        return ObservedState(
            now=now,
            targets={
                t.name: self.target_runtime(t.name).view(reservation.target_wait(t, now))
                for t in self.spec.targets
            },
            agent_wait=reservation.agent_wait(now),
            spent_today_usd=reservation.limits.spent(self.name, epoch),
            seconds_to_budget_reset=seconds_to_utc_midnight(epoch),
            rr_counter=self.rr_counter,
            rand=rand,
        )
