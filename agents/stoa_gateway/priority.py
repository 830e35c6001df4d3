"""Calls waiting at a policy's limits, best priority first (oldest first within one priority).

Only the head of the queue re-plans (after the wait the planner computed); the others wait until they
become the head. A call whose wait would end after its deadline, a call that reaches its deadline, and
the lowest-priority newest waiter when the queue is full are shed: the caller answers 429 with
``Retry-After``. Per policy and replica; the reserve for critical calls is in the shared buckets.
"""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass, field

from stoa_gateway.policy import Priority

RANK = {Priority.CRITICAL: 0, Priority.NORMAL: 1, Priority.BATCH: 2}


def parse_priority(value: str | None) -> Priority | None:
    """The header's priority (absent: normal); None when the value is not a priority class."""
    if value is None or not value.strip():
        return Priority.NORMAL
    try:
        return Priority(value.strip().lower())
    except ValueError:
        return None


@dataclass(eq=False)
class Waiter:
    priority: Priority
    seq: int
    turn: asyncio.Event = field(default_factory=asyncio.Event)
    shed: bool = False

    @property
    def order(self) -> tuple[int, int]:
        return RANK[self.priority], self.seq


class PriorityQueue:
    def __init__(self) -> None:
        self.waiters: list[Waiter] = []
        self._seq = itertools.count()

    def depth(self, priority: Priority) -> int:
        return sum(1 for w in self.waiters if w.priority is priority)

    def must_wait(self, priority: Priority) -> bool:
        """A newcomer queues behind waiters of the same or a better priority."""
        return any(RANK[w.priority] <= RANK[priority] for w in self.waiters)

    def enqueue(self, priority: Priority, max_queued: int) -> tuple[Waiter | None, Waiter | None]:
        """(the new waiter or None when it is shed at once, the waiter shed to make room or None)."""
        waiter = Waiter(priority, next(self._seq))
        evicted = None
        if len(self.waiters) >= max_queued:
            worst = max(self.waiters, key=lambda w: w.order, default=None)
            if worst is None or worst.order < waiter.order:
                return None, None
            evicted = worst
            self.leave(worst, shed=True)
        self.waiters.append(waiter)
        self.waiters.sort(key=lambda w: w.order)
        self._wake_head()
        return waiter, evicted

    def is_head(self, waiter: Waiter) -> bool:
        return bool(self.waiters) and self.waiters[0] is waiter

    async def wait_turn(self, waiter: Waiter, within: float) -> bool:
        """True once ``waiter`` is the head; False when shed or out of time."""
        while not waiter.shed and not self.is_head(waiter):
            waiter.turn.clear()
            try:
                async with asyncio.timeout(max(0.0, within)):
                    await waiter.turn.wait()
            except TimeoutError:
                return False
        return not waiter.shed

    def leave(self, waiter: Waiter, *, shed: bool = False) -> None:
        if waiter in self.waiters:
            self.waiters.remove(waiter)
        waiter.shed = waiter.shed or shed
        waiter.turn.set()
        self._wake_head()

    def _wake_head(self) -> None:
        if self.waiters:
            self.waiters[0].turn.set()
