"""Status conditions (pure): merge observations into conditions, and the events their flips deserve."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

READY = "Ready"
PROGRESSING = "Progressing"
DEGRADED = "Degraded"
RUNTIME_SYNCED = "RuntimeSynced"
LIMITS_SHARED = "LimitsShared"
PROBE_FAILING = "ProbeFailing"
SERVED = "Served"  # ModelPolicy: every ready gateway replica serves the current spec
ORDER = (READY, PROGRESSING, DEGRADED, RUNTIME_SYNCED, SERVED, LIMITS_SHARED, PROBE_FAILING)
WARN_WHEN = {RUNTIME_SYNCED: "False", PROBE_FAILING: "True"}  # a flip to this status posts a Warning


@dataclass(frozen=True)
class Observation:
    """What a reconcile concluded about one condition type."""

    type: str
    status: bool | None  # None: Unknown
    reason: str
    message: str = ""

    @property
    def status_text(self) -> str:
        return "Unknown" if self.status is None else ("True" if self.status else "False")


@dataclass(frozen=True)
class Event:
    type: str  # Normal or Warning
    reason: str
    message: str


def merge_conditions(
    current: list[dict[str, Any]], observed: list[Observation], generation: int, now: str
) -> list[dict[str, Any]]:
    """New condition list: ``lastTransitionTime`` moves only when a condition's status flips."""
    by_type = {c.get("type"): c for c in current}
    merged = []
    for obs in sorted(observed, key=lambda o: ORDER.index(o.type) if o.type in ORDER else len(ORDER)):
        old = by_type.get(obs.type)
        flipped = old is None or old.get("status") != obs.status_text
        merged.append(
            {
                "type": obs.type,
                "status": obs.status_text,
                "reason": obs.reason,
                "message": obs.message,
                "lastTransitionTime": now if flipped or old is None else old.get("lastTransitionTime", now),
                "observedGeneration": generation,
            }
        )
    return merged


def condition(conditions: list[dict[str, Any]], type_: str) -> dict[str, Any] | None:
    for item in conditions:
        if item.get("type") == type_:
            return item
    return None


def is_true(conditions: list[dict[str, Any]], type_: str) -> bool:
    found = condition(conditions, type_)
    return found is not None and found.get("status") == "True"


def transition_events(kind: str, old: list[dict[str, Any]], new: list[dict[str, Any]]) -> list[Event]:
    """Events for the transitions an operator of the cluster would want to see in ``kubectl describe``."""
    events = []
    for cond in new:
        previous = condition(old, cond["type"])
        same_status = previous is not None and previous.get("status") == cond["status"]
        if same_status and previous is not None and previous.get("reason") == cond["reason"]:
            continue
        if cond["type"] == READY and cond["status"] == "True":
            events.append(Event("Normal", cond["reason"], f"{kind} is ready: {cond['message']}".rstrip(": ")))
        elif cond["type"] == DEGRADED and cond["status"] == "True":
            events.append(Event("Warning", cond["reason"], cond["message"]))
        elif cond["type"] == DEGRADED and previous is not None and previous.get("status") == "True":
            events.append(
                Event("Normal", "Recovered", f"{kind} recovered: {previous.get('reason')} resolved")
            )
        elif WARN_WHEN.get(cond["type"]) == cond["status"] and not same_status:
            events.append(Event("Warning", cond["reason"], cond["message"]))
        elif cond["type"] == PROBE_FAILING and previous is not None and previous.get("status") == "True":
            events.append(Event("Normal", "ProbeRecovered", f"{kind} probe succeeds again"))
    return events


def status_changed(current: dict[str, Any] | None, desired: dict[str, Any]) -> bool:
    """True when writing ``desired`` would change the stored status (keys outside ``desired`` ignored)."""
    current = current or {}
    return any(current.get(key) != value for key, value in desired.items())
