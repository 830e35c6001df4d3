"""Where rpm/tpm buckets and the daily spend live: the ``Limits`` interface and its in-memory form.

A ModelPolicy's limits are totals across every gateway replica. ``LocalLimits`` holds them in this
process and, knowing only how many replicas there are, gives this replica its share (limit / replicas)
of every bucket and of the daily budget. ``stoa_gateway.shared_limits.SharedLimits`` leases from
buckets in Redis instead, and falls back to a ``LocalLimits`` share while Redis is unreachable.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from stoa_gateway.costs import utc_day
from stoa_gateway.limiter import Bucket, bucket_charge, bucket_take, bucket_wait, full_bucket

MAX_KEYS = 20000  # buckets kept (targets and agents); the least recently used one is dropped (a full bucket)


@dataclass(frozen=True, slots=True)
class Demand:
    """``amount`` from the bucket ``key`` whose limit (per minute, all replicas together) is ``capacity``."""

    key: str
    capacity: int
    amount: float


class Limits:
    """Buckets and spend of every policy. ``reserve`` is the fraction of a bucket the take must leave."""

    shared = False

    def wait(self, demands: Sequence[Demand], now: float, reserve: float = 0.0) -> float:
        """Seconds until every demand can be taken (0: now); an estimate, ``take`` decides."""
        raise NotImplementedError

    async def take(self, demands: Sequence[Demand], now: float, reserve: float = 0.0) -> float:
        """Take all demands (0.0) or none (seconds to wait)."""
        raise NotImplementedError

    def charge(self, demand: Demand, now: float) -> None:
        """Charge a correction (a refund when negative), unconditionally."""
        raise NotImplementedError

    def spent(self, policy: str, epoch: float) -> float:
        """Today's spend of ``policy`` as the budget check sees it (scaled to this replica's share)."""
        raise NotImplementedError

    def add_spend(self, policy: str, epoch: float, usd: float) -> None:
        raise NotImplementedError

    def status(self) -> dict[str, Any]:
        raise NotImplementedError

    async def start(self) -> None:
        """Begin background work (connections, leases); nothing for in-memory limits."""

    async def close(self) -> None:
        """Return what is held and stop."""


class LocalLimits(Limits):
    """In-memory buckets holding this replica's share (capacity / ``replicas``) of every limit."""

    def __init__(self, replicas: int = 1, reason: str = "no shared limit backend configured") -> None:
        self.replicas = max(1, replicas)
        self.reason = reason
        self.buckets: OrderedDict[str, Bucket] = OrderedDict()
        self.spend: dict[str, tuple[str, float]] = {}  # policy -> (UTC day, USD spent by this replica)

    def share(self, capacity: float) -> float:
        return capacity / self.replicas

    def _bucket(self, demand: Demand, now: float) -> Bucket:
        bucket = self.buckets.get(demand.key)
        if bucket is None:
            bucket = self.buckets[demand.key] = full_bucket(self.share(demand.capacity), now)
            while len(self.buckets) > MAX_KEYS:
                self.buckets.popitem(last=False)
        else:
            self.buckets.move_to_end(demand.key)
        return bucket

    def wait(self, demands: Sequence[Demand], now: float, reserve: float = 0.0) -> float:
        waits = [0.0]
        for d in demands:
            share = self.share(d.capacity)
            waits.append(bucket_wait(self._bucket(d, now), share, d.amount, now, reserve * share))
        return max(waits)

    async def take(self, demands: Sequence[Demand], now: float, reserve: float = 0.0) -> float:
        return self.take_now(demands, now, reserve)

    def take_now(self, demands: Sequence[Demand], now: float, reserve: float = 0.0) -> float:
        wait = self.wait(demands, now, reserve)
        if wait > 0:
            return wait
        for d in demands:
            share = self.share(d.capacity)
            _, self.buckets[d.key], _ = bucket_take(self._bucket(d, now), share, d.amount, now)
        return 0.0

    def charge(self, demand: Demand, now: float) -> None:
        share = self.share(demand.capacity)
        self.buckets[demand.key] = bucket_charge(self._bucket(demand, now), share, demand.amount, now)

    def local_spend(self, policy: str, epoch: float) -> float:
        day, usd = self.spend.get(policy, ("", 0.0))
        return usd if day == utc_day(epoch) else 0.0

    def spent(self, policy: str, epoch: float) -> float:
        return self.local_spend(policy, epoch) * self.replicas

    def add_spend(self, policy: str, epoch: float, usd: float) -> None:
        self.spend[policy] = (utc_day(epoch), self.local_spend(policy, epoch) + usd)

    def status(self) -> dict[str, Any]:
        return {"backend": "local", "shared": False, "replicas": self.replicas, "reason": self.reason}
