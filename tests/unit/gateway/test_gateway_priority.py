"""The priority queue: best priority first, oldest first within one, the lowest shed when full."""

from __future__ import annotations

from stoa_gateway.policy import Priority
from stoa_gateway.priority import PriorityQueue, parse_priority


async def test_order_and_shedding_when_full() -> None:
    queue = PriorityQueue()
    first, _ = queue.enqueue(Priority.BATCH, max_queued=3)
    second, _ = queue.enqueue(Priority.BATCH, max_queued=3)
    normal, _ = queue.enqueue(Priority.NORMAL, max_queued=3)
    assert first is not None
    assert second is not None
    assert normal is not None
    assert queue.is_head(normal)
    assert queue.must_wait(Priority.BATCH)
    assert queue.must_wait(Priority.NORMAL)
    assert not queue.must_wait(Priority.CRITICAL)

    critical, evicted = queue.enqueue(Priority.CRITICAL, max_queued=3)
    assert critical is not None
    assert queue.is_head(critical)
    assert evicted is second  # the newest of the lowest priority makes room
    assert second.shed
    assert not await queue.wait_turn(second, 1.0)

    shed, none = queue.enqueue(Priority.BATCH, max_queued=3)
    assert (shed, none) == (None, None)  # nothing below it to push out: the newcomer is shed

    queue.leave(critical)
    assert queue.is_head(normal)
    assert await queue.wait_turn(normal, 0.0)
    assert not await queue.wait_turn(first, 0.01)  # not its turn within the time given
    assert queue.depth(Priority.BATCH) == 1


def test_parse_priority() -> None:
    assert parse_priority(None) is Priority.NORMAL
    assert parse_priority(" Critical ") is Priority.CRITICAL
    assert parse_priority("batch") is Priority.BATCH
    assert parse_priority("urgent") is None
