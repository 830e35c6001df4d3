"""Mutable per-replica runtime state of each policy and target (owned by the server shell)."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

from stoa_gateway.breaker import Breaker
from stoa_gateway.costs import seconds_to_utc_midnight, utc_day
from stoa_gateway.limiter import Bucket, full_bucket
from stoa_gateway.policy import ModelPolicySpec
from stoa_gateway.routing import ObservedState, TargetView

EWMA_ALPHA = 0.3
MAX_TRACKED_AGENTS = 10000


def ewma(previous: float | None, sample: float, alpha: float = EWMA_ALPHA) -> float:
    return sample if previous is None else previous + alpha * (sample - previous)


def _bucket(bucket: Bucket | None, capacity: int | None, now: float) -> Bucket | None:
    if capacity is None:
        return None
    return bucket if bucket is not None else full_bucket(capacity, now)


@dataclass
class TargetRuntime:
    breaker: Breaker = field(default_factory=Breaker)
    in_flight: int = 0
    ewma_latency: float | None = None
    rpm_bucket: Bucket | None = None
    tpm_bucket: Bucket | None = None
    cooldown_until: float = 0.0
    last_error: str | None = None
    last_error_at: float | None = None
    last_failover_reason: str | None = None
    last_failover_at: float | None = None
    last_success_at: float | None = None

    def view(self) -> TargetView:
        return TargetView(
            breaker=self.breaker,
            in_flight=self.in_flight,
            ewma_latency=self.ewma_latency,
            rpm_bucket=self.rpm_bucket,
            tpm_bucket=self.tpm_bucket,
            cooldown_until=self.cooldown_until,
        )


@dataclass
class AgentRuntime:
    rpm_bucket: Bucket | None = None
    tpm_bucket: Bucket | None = None


class PolicyRuntime:
    """State of one policy; survives config reloads for targets that keep their name."""

    def __init__(self, name: str, spec: ModelPolicySpec) -> None:
        self.name = name
        self.spec = spec
        self.targets: dict[str, TargetRuntime] = {t.name: TargetRuntime() for t in spec.targets}
        self.agents: OrderedDict[str, AgentRuntime] = OrderedDict()
        self.rr_counter = 0
        self.budget_day = ""
        self.spent_today_usd = 0.0

    def update_spec(self, spec: ModelPolicySpec) -> None:
        self.spec = spec
        self.targets = {t.name: self.targets.get(t.name) or TargetRuntime() for t in spec.targets}

    def target_runtime(self, name: str) -> TargetRuntime:
        runtime = self.targets.get(name)
        if runtime is None:  # a target added by a reload while a request was planned
            runtime = self.targets[name] = TargetRuntime()
        return runtime

    def agent_runtime(self, agent: str | None) -> AgentRuntime:
        key = agent or ""
        runtime = self.agents.get(key)
        if runtime is None:
            runtime = self.agents[key] = AgentRuntime()
            while len(self.agents) > MAX_TRACKED_AGENTS:
                self.agents.popitem(last=False)
        else:
            self.agents.move_to_end(key)
        return runtime

    def spent_today(self, epoch: float) -> float:
        day = utc_day(epoch)
        if day != self.budget_day:
            self.budget_day = day
            self.spent_today_usd = 0.0
        return self.spent_today_usd

    def add_spend(self, epoch: float, usd: float) -> None:
        self.spent_today(epoch)
        self.spent_today_usd += usd

    def observed(self, now: float, epoch: float, agent: str | None, rand: float) -> ObservedState:
        """Snapshot for the pure planner; lazily creates full buckets for configured limits."""
        for target in self.spec.targets:
            rt = self.target_runtime(target.name)
            rt.rpm_bucket = _bucket(rt.rpm_bucket, target.rpm, now)
            rt.tpm_bucket = _bucket(rt.tpm_bucket, target.tpm, now)
        limit = self.spec.rate_limit.for_agent(agent)
        agent_rt = self.agent_runtime(agent)
        if limit is not None:
            agent_rt.rpm_bucket = _bucket(agent_rt.rpm_bucket, limit.rpm, now)
            agent_rt.tpm_bucket = _bucket(agent_rt.tpm_bucket, limit.tpm, now)
        return ObservedState(
            now=now,
            targets={name: rt.view() for name, rt in self.targets.items()},
            agent_rpm_bucket=agent_rt.rpm_bucket,
            agent_tpm_bucket=agent_rt.tpm_bucket,
            spent_today_usd=self.spent_today(epoch),
            seconds_to_budget_reset=seconds_to_utc_midnight(epoch),
            rr_counter=self.rr_counter,
            rand=rand,
        )
