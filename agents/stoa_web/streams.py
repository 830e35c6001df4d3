"""The shell of a conversation's event stream: gather a ``Snapshot`` every poll, send what ``events.diff``
says is new, re-check the caller now and then, end when the conversation has ended.

Starlette cancels the generator when the client goes away; ``finally`` then releases the stream's slot
and counts why it ended. Nothing else is held per stream: no connection stays checked out of a pool
between polls, and nothing is written anywhere.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel

from stoa_operator.runtime_adapter import runtime_name
from stoa_web.access import Check
from stoa_web.auth import Caller
from stoa_web.events import Cursor, Snapshot, diff, finished
from stoa_web.kube import KubeError
from stoa_web.models import EndEvent, ErrorEvent, HelloEvent
from stoa_web.problems import ApiProblemError
from stoa_web.services import Services

log = logging.getLogger("stoa.api.streams")
KEEPALIVE_SECONDS = 15.0
STORE_DOWN_LIMIT_SECONDS = 30.0
TURNS_PER_POLL = 50
RETRY_MS = 2000


def sse(event: str, data: BaseModel, event_id: str | None = None) -> bytes:
    lines = [f"event: {event}"]
    if event_id:
        lines.append(f"id: {event_id}")
    lines.append("data: " + json.dumps(data.model_dump(mode="json", by_alias=True), separators=(",", ":")))
    return ("\n".join(lines) + "\n\n").encode()


@dataclass
class StreamPlan:
    """Fixed for the life of one stream (participants and their policies do not change)."""

    namespace: str
    name: str
    uid: str
    created: datetime  # the resource's creationTimestamp: the window before the runtime record exists
    participants: list[str]
    show_takeovers: frozenset[str]
    policies: frozenset[str]
    omitted: list[str] = field(default_factory=list)

    @property
    def runtime_name(self) -> str:
        return runtime_name(self.namespace, self.name)

    def hello(self) -> HelloEvent:
        return HelloEvent(
            conversation=self.name,
            namespace=self.namespace,
            uid=self.uid,
            runtime_name=self.runtime_name,
            omitted=self.omitted,
        )


async def plan_stream(svc: Services, who: Caller, item: dict[str, Any]) -> StreamPlan:
    """What this caller may see beside turns and phases: takeovers of the participants it may ``get``,
    circuit changes of the ModelPolicies of those agents it may ``get``."""
    meta = item["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    participants = [str(p.get("agentRef")) for p in (item.get("spec") or {}).get("participants") or []]
    shown: set[str] = set()
    policies: set[str] = set()
    omitted: list[str] = []
    for agent in participants:
        allowed, _ = await svc.auth.authorize(who.user, Check("get", "agents", namespace, agent))
        if not allowed:
            omitted.append(f"takeovers of {agent} (may not get agents {agent!r})")
            continue
        shown.add(agent)
        found = await svc.kube.get_or_none(svc.path(namespace, "agents", agent), token=who.token)
        spec = (found or {}).get("spec") or {}
        refs = [spec.get("modelPolicyRef") or {}, *(spec.get("fallbackPolicies") or [])]
        policies.update(str(r["name"]) for r in refs if r.get("name"))
    for policy in sorted(policies):
        allowed, _ = await svc.auth.authorize(who.user, Check("get", "modelpolicies", namespace, policy))
        if not allowed:
            policies.discard(policy)
            omitted.append(f"circuit changes of {policy} (may not get modelpolicies {policy!r})")
    created = datetime.fromisoformat(str(meta.get("creationTimestamp") or datetime.now(UTC).isoformat()))
    return StreamPlan(
        namespace,
        name,
        str(meta["uid"]),
        created,
        participants,
        frozenset(shown),
        frozenset(policies),
        omitted,
    )


async def snapshot(svc: Services, plan: StreamPlan, cursor: Cursor, *, fresh_audit: bool = False) -> Snapshot:
    record = await svc.store.conversation(plan.namespace, plan.name, plan.uid)
    activity = await svc.store.activity(plan.namespace, sorted(plan.show_takeovers))
    audit = await svc.gateways.audit(plan.namespace, fresh=fresh_audit)
    if record is None:
        return Snapshot(
            runtime_name=plan.runtime_name,
            phase="Pending",
            reason="",
            turns_total=0,
            created_at=plan.created,
            finished_at=None,
            activity=activity,
            audit=audit,
            policies=plan.policies,
            show_takeovers=plan.show_takeovers,
        )
    turns = []
    if record.turns > cursor.s:
        turns = await svc.store.turns(plan.namespace, record.id, cursor.s, TURNS_PER_POLL)
    return Snapshot(
        runtime_name=plan.runtime_name,
        phase=record.phase,
        reason=record.reason,
        turns_total=record.turns,
        created_at=min(record.created_at, plan.created),
        finished_at=record.finished_at,
        new_turns=turns,
        activity=activity,
        audit=audit,
        policies=plan.policies,
        show_takeovers=plan.show_takeovers,
    )


async def still_allowed(svc: Services, plan: StreamPlan, who: Caller) -> ErrorEvent | None:
    """The token is still valid and may still ``get`` the Conversation (asked afresh)."""
    try:
        user = await svc.auth.authenticate(who.token, fresh=True)
        if user is None:
            return ErrorEvent(status=401, message="the token is no longer accepted by the Kubernetes API")
        check = Check("get", "conversations", plan.namespace, plan.name)
        allowed, _ = await svc.auth.authorize(user, check, fresh=True)
    except KubeError as exc:
        log.warning("Re-check failed, keeping the stream stream=%s error=%s", plan.runtime_name, exc.message)
        return None
    if not allowed:
        return ErrorEvent(status=403, message=f"user {user.username!r} may no longer {check.describe()}")
    return None


@dataclass
class _Run:
    """The moving parts of one open stream."""

    cursor: Cursor
    checked_at: float
    last_sent: float
    down_since: float | None = None
    why: str = "client"
    done: bool = False


async def _poll(svc: Services, plan: StreamPlan, who: Caller, run: _Run) -> list[bytes]:
    """One poll: the chunks to send; ``run.done`` once the stream must end (``run.why`` says why)."""
    try:
        snap = await snapshot(svc, plan, run.cursor)
        run.down_since = None
    except ApiProblemError as exc:
        now = time.monotonic()
        run.down_since = run.down_since or now
        if now - run.down_since > STORE_DOWN_LIMIT_SECONDS:
            run.why, run.done = "unavailable", True
            return [_event(svc, "error", ErrorEvent(status=503, message=exc.problem.message))]
        return []
    outgoing, run.cursor = diff(run.cursor, snap)
    if finished(run.cursor, snap):
        # The last turn is stored: take the gateways' latest records before saying it is over.
        final, run.cursor = diff(run.cursor, await snapshot(svc, plan, run.cursor, fresh_audit=True))
        outgoing += final
    chunks = [_event(svc, out.type, out.data, out.id) for out in outgoing]
    if finished(run.cursor, snap):
        run.why, run.done = "end", True
        # No id of its own: the client's last id already says "everything sent" (a reconnect gets 204).
        chunks.append(_event(svc, "end", EndEvent(phase=snap.phase, reason=snap.reason)))
        return chunks
    now = time.monotonic()
    if now - run.checked_at >= svc.settings.reauth_seconds:
        run.checked_at = now
        denied = await still_allowed(svc, plan, who)
        if denied is not None:
            run.why, run.done = "unauthorized", True
            chunks.append(_event(svc, "error", denied))
    return chunks


async def run_stream(svc: Services, plan: StreamPlan, who: Caller, cursor: Cursor) -> AsyncIterator[bytes]:
    svc.streams += 1
    svc.metrics.streams.inc()
    now = time.monotonic()
    run = _Run(cursor=cursor, checked_at=now, last_sent=now)
    try:
        yield f"retry: {RETRY_MS}\n\n".encode()
        yield _event(svc, "hello", plan.hello())
        while True:
            chunks = await _poll(svc, plan, who, run)
            for chunk in chunks:
                yield chunk
            now = time.monotonic()
            if chunks:
                run.last_sent = now
            if run.done:
                return
            if now - run.last_sent >= KEEPALIVE_SECONDS:
                yield b": keepalive\n\n"
                run.last_sent = now
            await asyncio.sleep(svc.settings.poll_seconds)
    finally:
        svc.streams -= 1
        svc.metrics.streams.dec()
        svc.metrics.streams_ended.labels(run.why).inc()


def _event(svc: Services, event: str, data: BaseModel, event_id: str | None = None) -> bytes:
    svc.metrics.events.labels(event).inc()
    return sse(event, data, event_id)
