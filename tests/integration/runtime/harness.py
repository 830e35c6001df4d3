"""A small local 'cluster' for runtime tests: agent replica subprocesses, a supervisor that restarts them,
and the invariant checks every failure-injection test ends with."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg

from stoa_agents.bus.broker import Bus
from stoa_agents.control import conversation_status, start_conversation
from stoa_agents.envcontract import Wiring, agent_env, literal_env
from stoa_agents.identity import agent_key
from stoa_agents.local.fleet import Fleet
from stoa_agents.store.db import open_pool
from stoa_agents.turns.policy import TERMINAL_PHASES, Phase
from stoa_api.agent import AgentSpec
from stoa_api.conversation import ConversationSpec

_WORDS = (
    "nurses",
    "drivers",
    "coders",
    "farmers",
    "clerks",
    "teachers",
    "welders",
    "artists",
    "doctors",
    "cashiers",
    "pilots",
    "bakers",
    "lawyers",
    "miners",
    "chefs",
    "editors",
    "tutors",
    "guards",
)
_run = itertools.count(1)


def distinct_replies(n: int = 60) -> list[str]:
    """Replies whose word trigrams differ from each other (the repetition detector must not fire)."""
    out = []
    for i in range(n):
        a, b, c = _WORDS[i % 18], _WORDS[(i * 5 + 3) % 18], _WORDS[(i * 7 + 11) % 18]
        out.append(f"Claim {i}: {a} and {b} gain while {c} adapt quickly in round {i}.")
    assert len(set(out)) == n  # a precondition of the tests that use them, checked where they are made
    return out


def unique_prefix(label: str) -> str:
    return f"{label}{next(_run)}-{uuid.uuid4().hex[:4]}"


@dataclass
class Cluster:
    db: asyncpg.Pool
    bus: Bus
    fleet: Fleet
    agents: list[str]
    supervisor: asyncio.Task[None] | None = None
    names: list[str] = field(default_factory=list)
    namespace: str = ""  # the agents' STOA_NAMESPACE; conversations are then named <namespace>/<name>

    @classmethod
    async def start(
        cls,
        *,
        prefix: str,
        postgres_dsn: str,
        rabbitmq_url: str,
        model_url: str | dict[str, str],
        log_dir: Path,
        replicas: int = 2,
        env: dict[str, str] | None = None,
        agents: int = 3,
        per_agent_env: dict[str, dict[str, str]] | None = None,
        metrics: bool = False,
        namespace: str = "",
        agent_names: list[str] | None = None,
    ) -> Cluster:
        """``namespace``/``agent_names``: run the agents as Agents of one namespace (same names may run in
        another Cluster of another namespace; pods are then named ``<namespace>-<agent>-<i>-g<n>``)."""
        names = agent_names or [f"{prefix}-m", f"{prefix}-a", f"{prefix}-b"][:agents]
        envs = {}
        for i, name in enumerate(names):
            role = "moderator" if i == 0 else ("pro" if i == 1 else "con")
            url = model_url if isinstance(model_url, str) else model_url[name]
            wiring = Wiring(
                rabbitmq_url=rabbitmq_url,
                postgres_dsn=postgres_dsn,
                model_url=url,
                default_model="fake-model",
                namespace=namespace or None,
                metrics_port_number=0,
            )
            envs[f"{namespace}-{name}" if namespace else name] = literal_env(
                agent_env(
                    name,
                    # Direct to the fake (no gateway): the policy is only the name the spec needs.
                    AgentSpec.model_validate(
                        {"role": role, "persona": f"You are {name}.", "modelPolicyRef": {"name": "fake"}}
                    ),
                    wiring,
                    {
                        "STOA_HEARTBEAT_SECONDS": "2",
                        "STOA_MODEL_BACKOFF_SECONDS": "0.05",
                        "STOA_RELAY_INTERVAL_SECONDS": "2",
                        "STOA_LOG_LEVEL": "INFO",
                        **(env or {}),
                        **((per_agent_env or {}).get(name, {})),
                    },
                )
            )
        db = await open_pool(postgres_dsn)
        bus = await Bus.connect(
            rabbitmq_url, name="stoa-test", delivery_limit=int((env or {}).get("STOA_DELIVERY_LIMIT", "3"))
        )
        for name in names:
            await bus.declare_agent(agent_key(namespace, name))
        # Agents with STOA_TEST_* faults run as the faulty agent of the test tooling (faults passed in).
        faulty = [sys.executable, "-m", "stoa_testing.faults"]
        commands = {a: faulty for a, e in envs.items() if any(k.startswith("STOA_TEST_") for k in e)}
        fleet = Fleet(envs, replicas, log_dir / prefix, restart_delay=0.2, metrics=metrics, commands=commands)
        fleet.start()
        cluster = cls(db, bus, fleet, names, namespace=namespace)
        cluster.supervisor = asyncio.create_task(cluster._supervise())
        return cluster

    async def _supervise(self) -> None:
        while True:
            self.fleet.supervise()
            await asyncio.sleep(0.1)

    def spec(self, max_turns: int = 9, **extra: Any) -> ConversationSpec:
        moderator, *others = self.agents
        return ConversationSpec.model_validate(
            {
                "topic": "AI and jobs",
                "participants": [
                    {"agentRef": moderator, "role": "moderator"},
                    *({"agentRef": n, "role": "pro" if i == 0 else "con"} for i, n in enumerate(others)),
                ],
                "moderator": moderator,
                "maxTurns": max_turns,
                **extra,
            }
        )

    async def start_conversations(self, count: int, max_turns: int = 9, label: str = "c") -> list[str]:
        scope = f"{self.namespace}/" if self.namespace else ""
        names = [f"{scope}{self.agents[0]}-{label}{i}" for i in range(count)]
        for name in names:
            await start_conversation(self.db, self.bus, name, self.spec(max_turns))
        self.names.extend(names)
        return names

    async def wait_finished(self, names: list[str], within: float = 120.0) -> None:
        deadline = asyncio.get_running_loop().time() + within
        while True:
            statuses = [await conversation_status(self.db, n) for n in names]
            if all(s is not None and s.phase in TERMINAL_PHASES for s in statuses):
                return
            if asyncio.get_running_loop().time() > deadline:
                summary = {
                    n: (s.phase.value, s.turns, s.reason) if s else None
                    for n, s in zip(names, statuses, strict=True)
                }
                raise AssertionError(
                    f"conversations not finished after {within:.0f}s: {summary}\n{self.log_tail()}"
                )
            await asyncio.sleep(0.2)

    def log_tail(self, lines: int = 15) -> str:
        out = []
        for replica in self.fleet.members.values():
            if replica.log.exists():
                text = replica.log.read_text(errors="replace").splitlines()[-lines:]
                out.append(f"--- {replica.pod} ---\n" + "\n".join(text))
        return "\n".join(out)

    async def check_exactly_once(self, name: str, expected: int) -> int:
        """Succeeded, every seq 1..N stored once, one processed id and one outbox message per seq."""
        status = await conversation_status(self.db, name)
        assert status is not None
        assert status.phase is Phase.SUCCEEDED, (status.phase, status.reason)
        seqs = [
            r["seq"]
            for r in await self.db.fetch(
                "SELECT seq FROM stoa.turns WHERE conversation_id = $1 ORDER BY seq", uuid.UUID(status.id)
            )
        ]
        assert seqs == list(range(1, len(seqs) + 1)), f"{name}: seqs not contiguous: {seqs}"
        assert len(seqs) == status.turns == expected
        processed = await self.db.fetch(
            "SELECT message_id FROM stoa.processed_messages WHERE conversation_id = $1", uuid.UUID(status.id)
        )
        assert sorted(r["message_id"] for r in processed) == sorted(f"{status.id}:{s}" for s in seqs)
        outbox = await self.db.fetch(
            "SELECT seq, published_at FROM stoa.outbox WHERE conversation_id = $1 ORDER BY seq",
            uuid.UUID(status.id),
        )
        assert [r["seq"] for r in outbox] == seqs, f"{name}: outbox seqs {[r['seq'] for r in outbox]}"
        assert all(r["published_at"] is not None for r in outbox)
        return len(seqs)

    async def close(self) -> None:
        if self.supervisor is not None:
            self.supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.supervisor
        await asyncio.to_thread(self.fleet.stop, 15.0)
        await self.bus.close()
        await self.db.close()
