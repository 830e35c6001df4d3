"""Fault injection for Stoa's own tests: an agent replica that crashes (kill -9) or fails on purpose.

``python -m stoa_testing.faults`` is ``stoa agent`` with faults passed in (``AgentRuntime(settings,
faults)``); the faults come from variables of this module, removed from the environment before the
runtime reads its settings (which know nothing about them):

- ``STOA_TEST_CRASH_AT``: comma-separated points of ``stoa_agents.faults.POINTS`` to SIGKILL at,
- ``STOA_TEST_CRASH_PROBABILITY`` (default 1): chance to crash at each point reached,
- ``STOA_TEST_CRASH_CONVERSATION``: only in conversations whose name contains this,
- ``STOA_TEST_FAIL_CONVERSATION``: raise on every turn of conversations whose name contains this.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import signal
import sys
from collections.abc import Awaitable, MutableMapping
from dataclasses import dataclass
from typing import TypeVar

from stoa_agents.faults import POINTS, Faults
from stoa_agents.runtime import run_agent
from stoa_agents.settings import AgentSettings

T = TypeVar("T")
log = logging.getLogger("stoa.testing.faults")
VARIABLES = (
    "STOA_TEST_CRASH_AT",
    "STOA_TEST_CRASH_PROBABILITY",
    "STOA_TEST_CRASH_CONVERSATION",
    "STOA_TEST_FAIL_CONVERSATION",
)


class InjectedFailureError(RuntimeError):
    """``STOA_TEST_FAIL_CONVERSATION``: a deterministic poison (an unexpected error to the runtime)."""


@dataclass(frozen=True)
class EnvFaults(Faults):
    crash_at: frozenset[str] = frozenset()
    probability: float = 1.0
    crash_conversation: str = ""
    fail_conversation: str = ""

    @classmethod
    def take(cls, environ: MutableMapping[str, str]) -> EnvFaults:
        """The faults ``environ`` asks for; their variables are removed from it."""
        values = {name: environ.pop(name, "") for name in VARIABLES}
        points = frozenset(p.strip() for p in values["STOA_TEST_CRASH_AT"].split(",") if p.strip())
        unknown = points - set(POINTS)
        if unknown:
            raise ValueError(f"unknown STOA_TEST_CRASH_AT points: {', '.join(sorted(unknown))}")
        probability = float(values["STOA_TEST_CRASH_PROBABILITY"] or 1.0)
        if not 0 <= probability <= 1:
            raise ValueError(f"STOA_TEST_CRASH_PROBABILITY must be in [0, 1], not {probability}")
        return cls(
            points, probability, values["STOA_TEST_CRASH_CONVERSATION"], values["STOA_TEST_FAIL_CONVERSATION"]
        )

    def at(self, point: str, conversation: str) -> None:
        if point not in self.crash_at:
            return
        if self.crash_conversation and self.crash_conversation not in conversation:
            return
        if random.random() < self.probability:  # noqa: S311 (fault injection, not crypto)
            log.warning("Crashing on purpose point=%s conversation=%s", point, conversation)
            logging.shutdown()
            os.kill(os.getpid(), signal.SIGKILL)

    def admit(self, conversation: str, seq: int) -> None:
        if self.fail_conversation and self.fail_conversation in conversation:
            raise InjectedFailureError(f"injected failure for conversation {conversation} turn {seq}")

    async def model_call(self, call: Awaitable[T], conversation: str) -> T:
        if "during_model" not in self.crash_at:
            return await call
        task = asyncio.ensure_future(call)
        await asyncio.sleep(0.002)
        self.at("during_model", conversation)
        return await task


def main() -> int:
    faults = EnvFaults.take(os.environ)
    return run_agent(AgentSettings(), faults)


if __name__ == "__main__":
    sys.exit(main())
