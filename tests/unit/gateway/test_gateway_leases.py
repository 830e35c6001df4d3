"""What a replica holds of a shared bucket (pure): waits, chunk sizes, what is owed after an outage."""

from __future__ import annotations

import pytest

from stoa_gateway.leases import IDLE_SECONDS, Lease, Owed, sync_ops


def test_wait_counts_the_allowance_then_the_estimated_shared_level() -> None:
    lease = Lease(capacity=60, created=0, allowance=2)
    assert lease.wait(2, floor=0, now=0) == 0  # from the allowance
    assert lease.wait(5, floor=0, now=0) == 0  # nothing seen yet: the bucket is taken to be full
    lease.seen_level, lease.seen_at = 0.0, 0.0
    assert lease.wait(5, floor=0, now=0) == pytest.approx(3.0)  # 3 missing at 1 per second
    assert lease.wait(5, floor=0, now=3) == 0  # refilled meanwhile
    assert lease.wait(5, floor=10, now=3) == pytest.approx(10.0)  # the critical reserve is not ours


def test_chunks_follow_the_recent_rate_within_a_quarter_of_the_bucket() -> None:
    lease = Lease(capacity=1000, created=0)
    assert lease.chunk(3, now=0) == 3  # no traffic seen: just what this call needs
    for i in range(100):  # 100 calls within the last second
        lease.consume(1, now=0.5 + i * 0.001, replicas=1)
    lease.allowance = 0.0
    assert lease.chunk(1, now=0.7) == pytest.approx(0.5 * 100 + 1)  # the next half second, and this call
    assert lease.chunk(600, now=0.7) == 600  # one big call gets what it needs
    lease.allowance = -20.0  # corrections took more than was leased: the debt is covered first
    assert lease.chunk(1, now=0.7) == pytest.approx(0.5 * 100 + 20 + 1)
    busy = Lease(capacity=100, created=0)
    for i in range(1000):
        busy.consume(1, now=i * 0.0005, replicas=1)
    busy.allowance = 0.0
    assert busy.chunk(1, now=0.5) == 25  # capped at a quarter of the capacity


def test_owed_decays_at_this_replicas_share_of_the_refill() -> None:
    owed = Owed(0.0, 0.0).add(60, capacity=60, replicas=3, now=0)
    assert owed.now(60, 3, now=30) == pytest.approx(50)  # 60/60/3 = 1/3 per second
    assert owed.add(100, capacity=60, replicas=3, now=30).amount == 60  # never more than the bucket


@pytest.mark.parametrize(
    ("allowance", "last_used", "now", "op"),
    [
        (-3.0, 0.0, 0.1, ("c", 3.0)),  # a debt from corrections is charged
        (4.0, 0.0, IDLE_SECONDS + 0.1, ("c", -4.0)),  # an idle allowance goes back
        (4.0, 0.0, 0.1, ("l", 0.0)),  # in use, enough left: refresh the level only
    ],
)
def test_sync_ops(allowance: float, last_used: float, now: float, op: tuple[str, float]) -> None:
    lease = Lease(capacity=60, created=0, allowance=allowance, last_used=last_used)
    bucket_op, handed = sync_ops("k", lease, now)
    assert bucket_op is not None
    assert ("l" if bucket_op.lease else "c", bucket_op.amount) == op
    assert handed == (allowance if op[0] == "c" else 0.0)
