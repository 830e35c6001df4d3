"""Where a test may inject a fault into a replica. The runtime calls these hooks at fixed points; a real
replica runs with :data:`NO_FAULTS` (every hook returns at once). Test tooling (``stoa_testing.faults``)
passes its own subclass in: fault injection is not built into the runtime or its settings."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")

# The points of one delivery, in order (docs/runtime.md, "Exactly once").
POINTS = ("on_receive", "before_model", "during_model", "after_commit", "after_publish")


class Faults:
    """No faults."""

    def at(self, point: str, conversation: str) -> None:
        """Called at each point of ``POINTS`` except ``during_model``."""

    def admit(self, conversation: str, seq: int) -> None:
        """Called when a turn is admitted; raising makes the delivery fail (a poison message)."""

    async def model_call(self, call: Awaitable[T], conversation: str) -> T:
        """Wraps the model call (``during_model``)."""
        return await call


NO_FAULTS = Faults()
