"""Token buckets for rpm/tpm limits (pure).

A limit of N per minute is a bucket of capacity N refilled at N/60 per second, starting full.
Token limits are charged with the estimated input tokens up front and corrected with the real usage
afterwards (``bucket_charge`` may take the level below zero: that debt delays later requests).
A request larger than the whole capacity passes only when the bucket is full. A ``floor`` keeps that
much of the bucket for others (the capacity reserved for critical calls): the take must leave it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Bucket:
    level: float
    updated: float


def full_bucket(capacity: float, now: float) -> Bucket:
    return Bucket(level=float(capacity), updated=now)


def refill(bucket: Bucket, capacity: float, now: float) -> Bucket:
    elapsed = max(0.0, now - bucket.updated)
    return Bucket(level=min(float(capacity), bucket.level + elapsed * capacity / 60.0), updated=now)


def needed_level(capacity: float, amount: float, floor: float = 0.0) -> float:
    """The level at which ``amount`` may be taken: amount + floor, at most the whole capacity."""
    return min(amount + floor, float(capacity))


def bucket_wait(bucket: Bucket, capacity: float, amount: float, now: float, floor: float = 0.0) -> float:
    """Seconds until ``amount`` can be taken (0 when it can be taken now)."""
    current = refill(bucket, capacity, now)
    needed = needed_level(capacity, amount, floor)
    if current.level >= needed:
        return 0.0
    return (needed - current.level) * 60.0 / capacity


def bucket_take(
    bucket: Bucket, capacity: float, amount: float, now: float, floor: float = 0.0
) -> tuple[bool, Bucket, float]:
    """Take ``amount`` if available: (taken, new bucket, seconds to wait when not taken)."""
    wait = bucket_wait(bucket, capacity, amount, now, floor)
    current = refill(bucket, capacity, now)
    if wait > 0:
        return False, current, wait
    return True, Bucket(level=current.level - amount, updated=now), 0.0


def bucket_charge(bucket: Bucket, capacity: float, amount: float, now: float) -> Bucket:
    """Charge (or refund, when negative) unconditionally; the level may go below zero."""
    current = refill(bucket, capacity, now)
    return Bucket(level=min(float(capacity), current.level - amount), updated=now)
