"""What one replica holds of a shared bucket (pure): leased allowance, estimates and what to sync.

The shared bucket (capacity N per minute, refilled N/60 per second, in Redis) is only ever decreased by
what it grants, so the replicas together never admit more than the bucket allows. A replica takes from
its local ``allowance`` on the request path (no round trip) and leases more in chunks sized to its recent
consumption, in the background before it runs out. What it cannot use soon goes back to the bucket.

Two "owed" amounts let the replica hand its usage back when the shared state was lost: ``usage`` (all
its consumption) after the backend came back empty, ``outage`` (consumption while it was unreachable)
after an outage that kept the data. Each decays at this replica's share of the refill (N / 60 / replicas
per second) and is capped at N, so what the replicas hand back together is what the one bucket would
still miss.
"""

from __future__ import annotations

from dataclasses import dataclass

HORIZON_SECONDS = 0.5  # a lease covers this long of this replica's recent consumption
LOW_WATER = 0.5  # lease more when the allowance falls below this fraction of a chunk
IDLE_SECONDS = 2.0  # an allowance unused this long is returned to the bucket
FORGET_SECONDS = 120.0  # a key unused this long is forgotten (its bucket is full again by then)
MAX_CHUNK_FRACTION = 0.25  # no lease takes more than this fraction of the capacity (unless one call needs it)
RATE_WINDOW = 1.0  # consumption is averaged over windows of this length


@dataclass(frozen=True, slots=True)
class Owed:
    amount: float
    at: float

    def now(self, capacity: float, replicas: int, now: float) -> float:
        """What is still owed at ``now``: decayed at this replica's share of the bucket's refill."""
        return max(0.0, self.amount - max(0.0, now - self.at) * capacity / 60.0 / max(1, replicas))

    def add(self, amount: float, capacity: float, replicas: int, now: float) -> Owed:
        return Owed(min(float(capacity), max(0.0, self.now(capacity, replicas, now) + amount)), now)


@dataclass
class Lease:
    capacity: int
    created: float
    allowance: float = 0.0
    seen_level: float | None = None  # the shared level in the last reply ...
    seen_at: float = 0.0  # ... and when it came
    floor: float = 0.0  # the reserve general traffic must leave (critical calls may go below it)
    rate: float = 0.0  # consumption per second over the last window
    window_start: float = 0.0
    window_used: float = 0.0
    last_used: float = 0.0
    usage: Owed | None = None
    outage: Owed | None = None

    def shared_level(self, now: float) -> float:
        """The shared bucket's level now, estimated from the last reply and the refill since."""
        if self.seen_level is None:
            return float(self.capacity)
        return min(
            float(self.capacity), self.seen_level + max(0.0, now - self.seen_at) * self.capacity / 60.0
        )

    def wait(self, amount: float, floor: float, now: float) -> float:
        """Seconds until ``amount`` could be had (0: from the allowance or by leasing now)."""
        if self.allowance >= amount:
            return 0.0
        need = min(amount, self.capacity - floor) - self.allowance
        available = self.shared_level(now) - floor
        if available >= need:
            return 0.0
        return (need - available) * 60.0 / self.capacity

    def chunk(self, amount: float, now: float) -> float:
        """How much to lease so that ``amount`` fits and the next HORIZON of traffic needs no round trip."""
        need = max(0.0, amount - self.allowance)
        if self.seen_level is not None and self.shared_level(now) - self.floor < 2 * need + 1:
            return need  # at the limit: only what this call needs
        ahead = self.rate_at(now) * HORIZON_SECONDS
        wanted = max(need, ahead - self.allowance + amount)
        return max(need, min(wanted, self.capacity * MAX_CHUNK_FRACTION))

    def rate_at(self, now: float) -> float:
        if now - self.window_start >= 2 * RATE_WINDOW:
            return 0.0
        if now - self.window_start >= RATE_WINDOW:
            return self.window_used / RATE_WINDOW
        return max(self.rate, self.window_used / RATE_WINDOW)

    def consume(self, amount: float, now: float, replicas: int) -> None:
        """Record ``amount`` taken (a correction when negative) by this replica."""
        self.allowance -= amount
        self.record(amount, now, replicas)

    def record(self, amount: float, now: float, replicas: int) -> None:
        if now - self.window_start >= RATE_WINDOW:
            self.rate = self.window_used / RATE_WINDOW if now - self.window_start < 2 * RATE_WINDOW else 0.0
            self.window_start, self.window_used = now, 0.0
        self.window_used += max(0.0, amount)
        self.last_used = now
        self.usage = (self.usage or Owed(0.0, now)).add(amount, self.capacity, replicas, now)

    def record_outage(self, amount: float, now: float, replicas: int) -> None:
        self.outage = (self.outage or Owed(0.0, now)).add(amount, self.capacity, replicas, now)
        self.record(amount, now, replicas)

    def owed(self, which: Owed | None, now: float, replicas: int) -> float:
        """What this replica still owes the bucket for ``which`` consumption."""
        return 0.0 if which is None else which.now(self.capacity, replicas, now)

    def needs_more(self, now: float) -> bool:
        """Active, below the low-water mark of a chunk, and the bucket has plenty left. At the limit
        nobody leases ahead: every replica asks when a call needs it, so the refill goes where the
        calls are (a replica that leased ahead would take it from a newcomer)."""
        active = now - self.last_used < IDLE_SECONDS
        ahead = self.rate_at(now) * HORIZON_SECONDS
        plenty = self.shared_level(now) - self.floor >= 2 * max(1.0, ahead)
        return active and plenty and self.allowance < LOW_WATER * ahead

    def idle(self, now: float) -> bool:
        return now - max(self.last_used, self.created) >= IDLE_SECONDS

    def forgotten(self, now: float) -> bool:
        return now - max(self.last_used, self.created) >= FORGET_SECONDS and self.allowance == 0


@dataclass(frozen=True, slots=True)
class BucketOp:
    """One operation on a shared bucket: lease up to ``amount`` leaving ``floor``, or charge ``amount``."""

    key: str
    capacity: int
    amount: float
    floor: float = 0.0
    lease: bool = True


def sync_ops(key: str, lease: Lease, now: float) -> tuple[BucketOp | None, float]:
    """The background operation for one key and the allowance it hands back (debt charged or refund)."""
    if lease.allowance < 0:  # corrections took more than was leased
        return BucketOp(key, lease.capacity, -lease.allowance, lease=False), lease.allowance
    if lease.allowance > 0 and lease.idle(now):
        return BucketOp(key, lease.capacity, -lease.allowance, lease=False), lease.allowance
    if lease.needs_more(now):
        return BucketOp(key, lease.capacity, lease.chunk(0.0, now), lease.floor), 0.0
    if not lease.idle(now):  # keep the estimate of the shared level fresh while the key is used
        return BucketOp(key, lease.capacity, 0.0, lease.floor), 0.0
    return None, 0.0
