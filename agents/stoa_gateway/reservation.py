"""One request's hold on its policy's limits: taken at admission and per attempt, settled with usage.

Keys name a bucket across replicas: ``<policy>/target/<target>/rpm`` and ``<policy>/agent/<agent>/tpm``.
rpm buckets are charged 1 per request (per attempted target), tpm buckets the estimated input tokens,
corrected to input + output tokens when the answer is complete.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from stoa_gateway.limits import Demand, Limits
from stoa_gateway.policy import Limit, ModelPolicySpec, Priority, Target


def target_demands(policy: str, target: Target, input_tokens: int) -> list[Demand]:
    demands = []
    if target.rpm is not None:
        demands.append(Demand(f"{policy}/target/{target.name}/rpm", target.rpm, 1))
    if target.tpm is not None:
        demands.append(Demand(f"{policy}/target/{target.name}/tpm", target.tpm, input_tokens))
    return demands


def agent_demands(policy: str, limit: Limit | None, agent: str | None, input_tokens: int) -> list[Demand]:
    if limit is None:
        return []
    name = agent or ""
    demands = []
    if limit.rpm is not None:
        demands.append(Demand(f"{policy}/agent/{name}/rpm", limit.rpm, 1))
    if limit.tpm is not None:
        demands.append(Demand(f"{policy}/agent/{name}/tpm", limit.tpm, input_tokens))
    return demands


def reserve_for(spec: ModelPolicySpec, priority: Priority) -> float:
    """The fraction of each bucket a call of ``priority`` must leave: critical may use it all."""
    return 0.0 if priority is Priority.CRITICAL else spec.priority.critical_reserve


@dataclass
class Reservation:
    limits: Limits
    policy: str
    spec: ModelPolicySpec
    agent: str | None
    input_tokens: int
    priority: Priority = Priority.NORMAL
    taken: set[str] = field(default_factory=set)  # targets whose limits this request holds

    @property
    def reserve(self) -> float:
        return reserve_for(self.spec, self.priority)

    def _agent(self) -> list[Demand]:
        limit = self.spec.rate_limit.for_agent(self.agent)
        return agent_demands(self.policy, limit, self.agent, self.input_tokens)

    def agent_wait(self, now: float) -> float:
        return self.limits.wait(self._agent(), now, self.reserve)

    def target_wait(self, target: Target, now: float) -> float:
        if target.rpm is None and target.tpm is None:
            return 0.0
        return self.limits.wait(target_demands(self.policy, target, self.input_tokens), now, self.reserve)

    async def take_agent(self, now: float) -> float:
        """0.0 when the agent's limits took this request, else the seconds to wait."""
        demands = self._agent()
        return await self.limits.take(demands, now, self.reserve) if demands else 0.0

    async def take_target(self, target: Target, now: float) -> float:
        if target.rpm is None and target.tpm is None:
            self.taken.add(target.name)
            return 0.0
        wait = await self.limits.take(
            target_demands(self.policy, target, self.input_tokens), now, self.reserve
        )
        if wait == 0:
            self.taken.add(target.name)
        return wait

    def refund_target(self, target: Target, now: float) -> None:
        """Give back what ``take_target`` took when no attempt followed."""
        if target.name not in self.taken:
            return
        self.taken.discard(target.name)
        for d in target_demands(self.policy, target, self.input_tokens):
            self.limits.charge(Demand(d.key, d.capacity, -d.amount), now)

    def settle(self, target: Target, total_tokens: int, cost_usd: float, now: float, epoch: float) -> None:
        """Correct the tpm buckets from the estimate to the real tokens; add the spend."""
        if cost_usd:
            self.limits.add_spend(self.policy, epoch, cost_usd)
        extra = total_tokens - self.input_tokens
        if not extra:
            return
        tpm = [d for d in target_demands(self.policy, target, extra) if d.key.endswith("/tpm")]
        tpm += [
            d
            for d in agent_demands(self.policy, self.spec.rate_limit.for_agent(self.agent), self.agent, extra)
            if d.key.endswith("/tpm")
        ]
        for demand in tpm:
            self.limits.charge(demand, now)
