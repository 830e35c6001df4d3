"""Synthetic probes: a one-turn conversation with one Agent, on a schedule, marked ``synthetic``.

A probe is a real turn (delivered by RabbitMQ, answered by the agent's model through its ModelPolicy,
committed to PostgreSQL), so it feeds the Agent's availability SLI through the same turn records; it is
never counted in the agent's totals and never listed with user conversations. The operator calls
``run_probe`` from the Agent's reconcile: it reads the last probes, decides (``plan_probe``, pure) whether
to time one out and whether to start the next, and reports the result for the ``ProbeFailing`` condition.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import asyncpg

from stoa_agents import control
from stoa_agents.bus.broker import Bus
from stoa_agents.identity import agent_key
from stoa_agents.store import repo
from stoa_api.conversation import ConversationSpec
from stoa_telemetry.slo import PROBE_TIMEOUT_OUTCOME
from stoa_telemetry.spec import Probe

PREFIX = "stoa-probe-"
KEEP = 10  # probe conversations kept per agent (older ones are purged; their turn records stay)


def probe_prefix(namespace: str, agent: str) -> str:
    scope = f"{namespace}/" if namespace else ""
    return f"{scope}{PREFIX}{agent}-"


def probe_name(namespace: str, agent: str, at: dt.datetime) -> str:
    return probe_prefix(namespace, agent) + at.astimezone(dt.UTC).strftime("%Y%m%dt%H%M%S")


def probe_spec(agent: str, probe: Probe) -> ConversationSpec:
    return ConversationSpec.model_validate(
        {"topic": probe.topic, "participants": [{"agentRef": agent}], "maxTurns": 1}
    )


@dataclass(frozen=True)
class PastProbe:
    name: str
    phase: str
    reason: str
    created_at: dt.datetime
    finished_at: dt.datetime | None


@dataclass(frozen=True)
class ProbePlan:
    time_out: str | None  # a running probe to stop as timed out
    start: bool
    purge: tuple[str, ...]


def plan_probe(past: list[PastProbe], probe: Probe, now: dt.datetime) -> ProbePlan:
    """What to do now, from the probes so far (newest first)."""
    latest = past[0] if past else None
    time_out = None
    if latest is not None and latest.phase not in ("Succeeded", "Failed"):
        if (now - latest.created_at).total_seconds() >= probe.timeout_seconds:
            time_out = latest.name
        else:
            return ProbePlan(None, start=False, purge=())
    due = latest is None or (now - latest.created_at).total_seconds() >= probe.interval_seconds
    keep = KEEP - 1 if due else KEEP
    return ProbePlan(time_out, start=due and probe.enabled, purge=tuple(p.name for p in past[keep:]))


@dataclass(frozen=True)
class ProbeReport:
    last_run: dt.datetime | None
    last_result: str | None  # Succeeded, Failed, TimedOut (None: none finished yet)
    last_reason: str | None
    last_success: dt.datetime | None
    consecutive_failures: int


TIMED_OUT_PREFIX = "Probe timed out"


def report(past: list[PastProbe]) -> ProbeReport:
    """The newest finished probe's result, and how many finished ones in a row failed (newest first)."""
    finished = [p for p in past if p.phase in ("Succeeded", "Failed")]
    failures = 0
    for p in finished:
        if p.phase == "Succeeded":
            break
        failures += 1
    last = finished[0] if finished else None
    result = None
    if last is not None:
        result = "TimedOut" if last.reason.startswith(TIMED_OUT_PREFIX) else last.phase
    success = next((p.finished_at or p.created_at for p in finished if p.phase == "Succeeded"), None)
    return ProbeReport(
        last_run=past[0].created_at if past else None,
        last_result=result,
        last_reason=last.reason if last is not None and last.phase == "Failed" else None,
        last_success=success,
        consecutive_failures=failures,
    )


async def _past(db: asyncpg.Pool, namespace: str, agent: str) -> list[PastProbe]:
    rows = await db.fetch(
        "SELECT name, phase, reason, created_at, finished_at FROM stoa.conversations"
        " WHERE synthetic AND starts_with(name, $1) ORDER BY created_at DESC, name DESC LIMIT $2",
        probe_prefix(namespace, agent),
        KEEP + 5,
    )
    return [PastProbe(r["name"], r["phase"], r["reason"], r["created_at"], r["finished_at"]) for r in rows]


async def _time_out(db: asyncpg.Pool, name: str, key: str, probe: Probe) -> None:
    """Fail a probe nobody answered, recording its turn as timed out: an unavailable agent is what the
    probe is for, so it counts against the availability SLI like a failed turn."""
    conversation = await repo.find_conversation(db, name)
    if conversation is None:
        return
    await repo.fail_conversation(
        db,
        conversation.id,
        f"{TIMED_OUT_PREFIX}: no answer within {probe.timeout_seconds}s",
        message_id=f"{conversation.id}:{conversation.next_seq}",
        agent=key,
        pod="",
        outcome=PROBE_TIMEOUT_OUTCOME,
    )


async def run_probe(
    db: asyncpg.Pool, bus: Bus, namespace: str, agent: str, *, probe: Probe, now: dt.datetime
) -> ProbeReport:
    """One scheduling step: time out a stuck probe, start the next when due, purge old ones."""
    past = await _past(db, namespace, agent)
    plan = plan_probe(past, probe, now)
    if plan.time_out is not None:
        await _time_out(db, plan.time_out, agent_key(namespace, agent), probe)
    for name in plan.purge:
        await control.purge(db, name)
    if plan.start:
        await control.start_conversation(
            db, bus, probe_name(namespace, agent, now), probe_spec(agent, probe), synthetic=True
        )
    return report(await _past(db, namespace, agent))
