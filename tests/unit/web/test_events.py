"""The event stream's pure core: cursors, what is new since one, and exactly-once across reconnects."""

from __future__ import annotations

import base64
import json
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from stoa_web.events import (
    Activity,
    AuditPage,
    Cursor,
    CursorError,
    Snapshot,
    decode_cursor,
    diff,
    finished,
)
from stoa_web.models import Turn

T0 = datetime(2026, 1, 1, 10, 0, tzinfo=UTC)
NAME = "team/debate"


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def turn(seq: int, seconds: float | None = None) -> Turn:
    return Turn(
        seq=seq,
        speaker=["moderator", "team-a", "team-b"][(seq - 1) % 3],
        role="pro",
        content=f"turn {seq}",
        tokens_in=1,
        tokens_out=2,
        cost_usd=0.0,
        model="m",
        duration_ms=5,
        pod="p",
        created_at=at(seconds if seconds is not None else seq),
    )


def record(seq: int, seconds: float, event: str = "fallback", **extra: Any) -> dict[str, Any]:
    base = {"seq": seq, "ts": at(seconds).isoformat(), "event": event, "policy": "debate", "target": "backup"}
    if event == "fallback":
        base.update(conversation=NAME, fromTarget="primary", reason="primary: status 503", agent="team-a")
    return {**base, **extra}


def snap(**overrides: Any) -> Snapshot:
    values: dict[str, Any] = {
        "runtime_name": NAME,
        "phase": "Running",
        "reason": "",
        "turns_total": 0,
        "created_at": T0,
        "finished_at": None,
        "policies": frozenset({"debate"}),
        "show_takeovers": frozenset({"team-a", "team-b", "moderator"}),
    }
    return Snapshot(**{**values, **overrides})


def types(events: list[Any]) -> list[str]:
    return [e.type for e in events]


def test_cursor_round_trip_and_forgeries() -> None:
    cursor = Cursor(s=7, p="Running", t={"team-a": 2}, g={"abc123": 40})
    assert decode_cursor(cursor.encode()) == cursor
    assert decode_cursor(None) == Cursor()
    assert decode_cursor("") == Cursor()
    forged = [
        "not base64 at all!",
        base64.urlsafe_b64encode(b"[1, 2]").decode(),
        base64.urlsafe_b64encode(json.dumps({"v": 2}).encode()).decode(),
        base64.urlsafe_b64encode(json.dumps({"s": -1}).encode()).decode(),
        base64.urlsafe_b64encode(json.dumps({"t": {"a": -3}}).encode()).decode(),
        base64.urlsafe_b64encode(json.dumps({"x": 1}).encode()).decode(),
        base64.urlsafe_b64encode(json.dumps({"g": {str(i): i for i in range(65)}}).encode()).decode(),
        "A" * 5000,
    ]
    for text in forged:
        with pytest.raises(CursorError):
            decode_cursor(text)


def test_turns_then_the_phase_and_the_end() -> None:
    out, cursor = diff(Cursor(), snap(turns_total=2, new_turns=[turn(1), turn(2)]))
    assert types(out) == ["turn", "turn", "phase"]
    assert decode_cursor(out[0].id).s == 1
    assert decode_cursor(out[-1].id) == cursor == Cursor(s=2, p="Running")
    again, same = diff(cursor, snap(turns_total=2, new_turns=[turn(1), turn(2)]))
    assert again == []
    assert same == cursor
    done = snap(phase="Succeeded", reason="verdict", turns_total=3, new_turns=[turn(3)], finished_at=at(3))
    out, cursor = diff(cursor, done)
    assert types(out) == ["turn", "phase"]
    assert out[-1].data.model_dump()["phase"] == "Succeeded"
    assert finished(cursor, done)
    assert not finished(Cursor(s=2, p="Succeeded"), done)


def test_takeovers_only_during_the_conversation_and_only_where_readable() -> None:
    before = Activity("team-a-0", None, 3, at(-100))
    out, cursor = diff(Cursor(), snap(activity={"team-a": before}))
    assert types(out) == ["phase"]
    assert cursor.t == {"team-a": 3}  # remembered, not shown: it happened before the conversation
    moved = Activity("team-a-1", "team-a-0", 4, at(5))
    out, cursor = diff(cursor, snap(activity={"team-a": moved}))
    assert types(out) == ["takeover"]
    event = out[0].data.model_dump(by_alias=True)
    assert (event["agent"], event["fromPod"], event["toPod"], event["takeovers"]) == (
        "team-a",
        "team-a-0",
        "team-a-1",
        4,
    )
    assert diff(cursor, snap(activity={"team-a": moved}))[0] == []
    hidden = snap(activity={"team-b": Activity("team-b-1", "team-b-0", 1, at(5))}, show_takeovers=frozenset())
    out, cursor = diff(cursor, hidden)
    assert out == []
    assert cursor.t["team-b"] == 1
    late = snap(
        activity={"team-a": Activity("x", "team-a-1", 5, at(50))}, finished_at=at(20), phase="Running"
    )
    assert diff(cursor, late)[0] == []


def test_audit_records_of_this_conversation_and_its_policies_in_order_with_turns() -> None:
    page = AuditPage(
        oldest=1,
        records=[
            record(1, 1.5),  # this conversation's failover
            record(2, 1.6, conversation="team/other"),  # another conversation's
            record(3, 1.7, "breaker_opened", reason="error rate over threshold"),
            record(4, 1.8, "breaker_opened", policy="unrelated"),
            record(5, 1.9, "config_reloaded"),
        ],
    )
    out, cursor = diff(Cursor(), snap(turns_total=2, new_turns=[turn(1), turn(2)], audit={"gw1": page}))
    assert types(out) == ["turn", "failover", "circuit", "turn", "phase"]
    assert out[2].data.model_dump()["state"] == "open"
    ids = [decode_cursor(e.id) for e in out]
    # Never past a record that makes an event before it is sent; past the others once nothing is pending.
    assert [i.g.get("gw1") for i in ids] == [0, 2, 5, 5, 5]
    assert cursor.g == {"gw1": 5}
    assert diff(cursor, snap(turns_total=2, audit={"gw1": page}, new_turns=[]))[0] == []


def test_a_gateway_buffer_that_wrapped_is_reported_as_a_gap() -> None:
    page = AuditPage(oldest=50, records=[record(50, 2.0), record(51, 2.1, conversation="x")])
    out, cursor = diff(Cursor(p="Running", g={"gw1": 10}), snap(audit={"gw1": page}))
    assert types(out) == ["gap", "failover"]
    assert "11..49" in out[0].data.model_dump()["message"]
    assert cursor.g == {"gw1": 51}
    # A first connection (no cursor for that process) is not a gap: it starts where the buffer starts.
    out, _ = diff(Cursor(p="Running"), snap(audit={"gw1": page}))
    assert types(out) == ["failover"]


def test_reconnecting_anywhere_misses_nothing_and_repeats_nothing() -> None:
    """A client cut off after a random number of events of every batch resumes with the last id it got."""
    rng = random.Random(12)
    for _round in range(200):
        turns: list[Turn] = []
        pages: dict[str, list[dict[str, Any]]] = {"gw1": [], "gw2": []}
        acts: dict[str, Activity] = {}
        expected: list[tuple[str, str]] = []
        seq = 0
        audit_seq = {"gw1": 0, "gw2": 0}
        clock = 0.0
        for _ in range(rng.randint(1, 12)):
            clock += rng.random()
            kind = rng.choice(["turn", "fail", "other", "breaker", "takeover"])
            if kind == "turn":
                seq += 1
                turns.append(turn(seq, clock))
                expected.append(("turn", str(seq)))
            elif kind in ("fail", "other", "breaker"):
                gw = rng.choice(["gw1", "gw2"])
                audit_seq[gw] += 1
                extra = {"conversation": "team/else"} if kind == "other" else {}
                name = "breaker_opened" if kind == "breaker" else "fallback"
                pages[gw].append(record(audit_seq[gw], clock, name, **extra))
                if kind != "other":
                    expected.append(("failover" if kind == "fail" else "circuit", f"{gw}:{audit_seq[gw]}"))
            else:
                count = acts.get("team-b", Activity("b0", None, 0, T0)).takeovers + 1
                acts["team-b"] = Activity(f"b{count}", f"b{count - 1}", count, at(clock))
        # Takeovers are a latest-state fact: whatever the count, the newest one is shown once.
        if "team-b" in acts:
            expected.append(("takeover", str(acts["team-b"].takeovers)))
        full = snap(
            turns_total=seq,
            new_turns=turns,
            activity=acts,
            audit={gw: AuditPage(1, recs) for gw, recs in pages.items()},
        )
        got: list[tuple[str, str]] = []
        cursor = Cursor()
        for _attempt in range(100):
            view = snap(
                turns_total=full.turns_total,
                new_turns=[t for t in full.new_turns if t.seq > cursor.s],
                activity=full.activity,
                audit=full.audit,
            )
            out, final = diff(cursor, view)
            if not out:
                break
            cut = rng.randint(1, len(out))  # the connection drops after `cut` events
            for event in out[:cut]:
                if event.type == "turn":
                    got.append(("turn", str(event.data.model_dump()["seq"])))
                elif event.type in ("failover", "circuit"):
                    ts = event.data.model_dump()["at"]
                    gw, rec = next((g, r) for g, rs in pages.items() for r in rs if r["ts"] == ts)
                    got.append((event.type, f"{gw}:{rec['seq']}"))
                elif event.type == "takeover":
                    got.append(("takeover", str(event.data.model_dump()["takeovers"])))
            cursor = decode_cursor(out[cut - 1].id) if cut < len(out) else final
        assert sorted(got) == sorted(expected), (got, expected)
