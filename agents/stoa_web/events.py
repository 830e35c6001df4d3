"""A conversation's event stream (pure): what is new since a cursor, in order, and the cursor after each.

The stream merges facts that live in three places:
- turns and the phase: the runtime store (``stoa.turns``, ``stoa.conversations``);
- takeovers: the store's active-consumer record per agent (``stoa.agent_activity``, which Agent status
  copies);
- failovers of the conversation's calls and circuit changes of its policies: the gateway replicas' audit
  records (``GET /v1/stoa/audit``).

Every event's SSE ``id`` is the cursor after it: how far the client got in each source (last turn seq,
last phase, takeover count per agent, last audit seq per gateway process). A client that reconnects with
``Last-Event-ID`` gets exactly what came after, from any API replica: the cursor is the only state.
"""

from __future__ import annotations

import base64
import binascii
import heapq
import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from stoa_web.models import CircuitEvent, GapEvent, GatewayEvent, PhaseEvent, TakeoverEvent, Turn

MAX_CURSOR_CHARS = 4096
TERMINAL = ("Succeeded", "Failed")
FAILOVER_EVENTS = ("fallback", "all_targets_failed", "stream_interrupted")
CIRCUIT_STATES = {"breaker_opened": "open", "breaker_half_open": "halfOpen", "breaker_closed": "closed"}


class CursorError(ValueError):
    """A ``Last-Event-ID`` that is not a cursor this API wrote."""


class Cursor(BaseModel):
    """``s``: last turn seq sent; ``p``: last phase sent; ``t``: takeovers per agent; ``g``: last audit seq
    per gateway process."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    v: Literal[1] = 1
    s: int = Field(default=0, ge=0, le=1_000_000)
    p: str | None = Field(default=None, max_length=32)
    t: dict[str, int] = Field(default_factory=dict, max_length=64)
    g: dict[str, int] = Field(default_factory=dict, max_length=64)

    def encode(self) -> str:
        raw = json.dumps(self.model_dump(exclude_defaults=True), separators=(",", ":"), sort_keys=True)
        return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(text: str | None) -> Cursor:
    """The cursor of a ``Last-Event-ID`` (empty or absent: from the beginning)."""
    if not text:
        return Cursor()
    if len(text) > MAX_CURSOR_CHARS:
        raise CursorError(f"Last-Event-ID longer than {MAX_CURSOR_CHARS} characters")
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        cursor = Cursor.model_validate(json.loads(raw))
    except (binascii.Error, ValueError, UnicodeDecodeError, ValidationError) as exc:
        raise CursorError("Last-Event-ID is not an event id of this stream") from exc
    if any(v < 0 or len(k) > 253 for k, v in (*cursor.t.items(), *cursor.g.items())):
        raise CursorError("Last-Event-ID is not an event id of this stream")
    return cursor


@dataclass(frozen=True)
class Activity:
    """``stoa.agent_activity`` of one participant."""

    pod: str
    previous_pod: str | None
    takeovers: int
    active_since: datetime


@dataclass(frozen=True)
class AuditPage:
    """What one gateway process still holds after the cursor's seq (``oldest``: first seq it holds)."""

    oldest: int
    records: list[dict[str, Any]]


@dataclass(frozen=True)
class Snapshot:
    runtime_name: str
    phase: str
    reason: str
    turns_total: int
    created_at: datetime
    finished_at: datetime | None
    new_turns: list[Turn] = field(default_factory=list)  # seq > cursor.s, ascending
    activity: dict[str, Activity] = field(default_factory=dict)  # agent -> its record
    audit: dict[str, AuditPage] = field(default_factory=dict)  # gateway instance -> page
    policies: frozenset[str] = frozenset()  # the participants' ModelPolicies (circuit events)
    show_takeovers: frozenset[str] = frozenset()  # agents the caller may read
    show_policies: bool = True


@dataclass(frozen=True)
class Outgoing:
    type: str
    data: BaseModel
    id: str


def _parse_ts(value: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(str(value))
    except ValueError:
        return None


def _in_window(at: datetime, snap: Snapshot) -> bool:
    if at < snap.created_at:
        return False
    return snap.finished_at is None or at <= snap.finished_at


def _audit_event(record: dict[str, Any], snap: Snapshot) -> tuple[str, BaseModel] | None:
    at = _parse_ts(record.get("ts"))
    if at is None:
        return None
    event = str(record.get("event") or "")
    if event in FAILOVER_EVENTS and record.get("conversation") == snap.runtime_name:
        return "failover", GatewayEvent(
            at=str(record["ts"]),
            event=event,
            policy=str(record.get("policy") or ""),
            target=record.get("target"),
            from_target=record.get("fromTarget"),
            reason=str(record.get("reason") or ""),
            agent=record.get("agent"),
            conversation=record.get("conversation"),
        )
    state = CIRCUIT_STATES.get(event)
    if (
        state is not None
        and snap.show_policies
        and record.get("policy") in snap.policies
        and record.get("target")
        and _in_window(at, snap)
    ):
        return "circuit", CircuitEvent(
            at=str(record["ts"]),
            policy=str(record["policy"]),
            target=str(record["target"]),
            state=state,
            reason=str(record.get("reason") or ""),
        )
    return None


@dataclass
class Step:
    """One event before it is sent: when it happened, and how the cursor moves once it is delivered."""

    at: datetime
    type: str
    data: BaseModel
    move: dict[str, Any]  # {"s": seq} | {"t": {agent: count}} | {"g": {instance: seq}}


def _takeover_steps(cursor: Cursor, snap: Snapshot) -> tuple[list[Step], dict[str, int]]:
    """Takeovers to show, and the counts of those not shown (before the conversation, not readable)."""
    steps: list[Step] = []
    quiet = dict(cursor.t)
    for agent, act in sorted(snap.activity.items()):
        seen = cursor.t.get(agent)
        if seen is not None and act.takeovers <= seen:
            continue
        if agent in snap.show_takeovers and act.previous_pod and _in_window(act.active_since, snap):
            event = TakeoverEvent(
                agent=agent,
                from_pod=act.previous_pod,
                to_pod=act.pod,
                at=act.active_since,
                takeovers=act.takeovers,
            )
            steps.append(Step(act.active_since, "takeover", event, {"t": {agent: act.takeovers}}))
        else:
            quiet[agent] = act.takeovers
    return sorted(steps, key=lambda step: step.at), quiet


def _audit_steps(instance: str, page: AuditPage, last: int, snap: Snapshot) -> tuple[list[Step], int]:
    """Events of one gateway process after seq ``last``, and where the cursor may stand before them.

    The cursor passes records that make no event, but only up to just below the next one that does."""
    steps: list[Step] = []
    seqs: list[int] = []
    highest = last
    for record in sorted(page.records, key=lambda r: int(r.get("seq") or 0)):
        seq = int(record.get("seq") or 0)
        if seq <= last:
            continue
        highest = seq
        found = _audit_event(record, snap)
        at = _parse_ts(record.get("ts"))
        if found is not None and at is not None:
            steps.append(Step(at, found[0], found[1], {}))
            seqs.append(seq)
    for i, step in enumerate(steps):
        step.move = {"g": {instance: seqs[i + 1] - 1 if i + 1 < len(steps) else highest}}
    return steps, (seqs[0] - 1 if seqs else highest)


def diff(cursor: Cursor, snap: Snapshot) -> tuple[list[Outgoing], Cursor]:
    """Events new since ``cursor`` and the cursor after the last one.

    Sources are merged by time, each keeping its own order (turns by seq, a gateway process's records by
    its seq), and a phase change comes last. Facts that make no event for this stream (other
    conversations' records, takeovers before it began) still move the cursor, but never past a fact that
    does: a client cut off anywhere in the batch misses nothing when it reconnects.
    """
    turns = [Step(t.created_at, "turn", t, {"s": t.seq}) for t in snap.new_turns if t.seq > cursor.s]
    takeovers, quiet = _takeover_steps(cursor, snap)
    sources = [turns, takeovers]
    gateways = dict(cursor.g)
    gaps: list[str] = []
    for instance, page in sorted(snap.audit.items()):
        last = cursor.g.get(instance, 0)
        if last and page.oldest > last + 1:
            gaps.append(
                f"gateway process {instance} no longer holds audit records {last + 1}..{page.oldest - 1}: "
                "failovers in that range are not shown"
            )
            last = page.oldest - 1
        steps, gateways[instance] = _audit_steps(instance, page, last, snap)
        sources.append(steps)

    state = cursor.model_copy(update={"t": quiet, "g": gateways})
    out = [Outgoing("gap", GapEvent(source="gateway", message=m), state.encode()) for m in gaps]
    for step in heapq.merge(*sources, key=lambda item: item.at):
        key, value = next(iter(step.move.items()))
        moved = value if key == "s" else {**getattr(state, key), **value}
        state = state.model_copy(update={key: moved})
        out.append(Outgoing(step.type, step.data, state.encode()))
    if snap.phase != cursor.p:
        state = state.model_copy(update={"p": snap.phase})
        phase = PhaseEvent(phase=snap.phase, reason=snap.reason, turns=snap.turns_total)
        out.append(Outgoing("phase", phase, state.encode()))
    return out, state


def finished(cursor: Cursor, snap: Snapshot) -> bool:
    """Every turn and the terminal phase have been sent: the stream can end."""
    return snap.phase in TERMINAL and cursor.p == snap.phase and cursor.s >= snap.turns_total
