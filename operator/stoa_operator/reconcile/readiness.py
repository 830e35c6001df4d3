"""What the conditions say (pure): from observed children and references to Ready/Progressing/Degraded."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from stoa_operator.reconcile.conditions import (
    DEGRADED,
    LIMITS_SHARED,
    PROGRESSING,
    READY,
    RUNTIME_SYNCED,
    SERVED,
    Observation,
)

LOADING = "Loading"  # Served=False: a ready gateway replica does not serve the current spec yet
CIRCUIT_SEVERITY = {"open": 3, "halfOpen": 2, "half_open": 2, "closed": 1, "unknown": 0}


@dataclass(frozen=True)
class Rollout:
    """A Deployment's progress as the controller-manager reports it."""

    desired: int
    updated: int
    ready: int
    available: int
    current: bool  # the controller has seen the latest spec (status.observedGeneration >= generation)

    @property
    def complete(self) -> bool:
        return self.current and self.updated >= self.desired and self.available >= self.desired


def rollout(deployment: dict[str, Any] | None) -> Rollout:
    if not deployment:
        return Rollout(0, 0, 0, 0, current=False)
    spec, status = deployment.get("spec") or {}, deployment.get("status") or {}
    generation = int((deployment.get("metadata") or {}).get("generation") or 0)
    return Rollout(
        desired=int(spec.get("replicas", 1)),
        updated=int(status.get("updatedReplicas") or 0),
        ready=int(status.get("readyReplicas") or 0),
        available=int(status.get("availableReplicas") or 0),
        current=int(status.get("observedGeneration") or 0) >= generation > 0,
    )


def blocked(missing: list[str], reason: str = "MissingReference") -> list[Observation]:
    """A reference is missing: nothing is (re)applied until it appears."""
    message = "; ".join(missing)
    return [
        Observation(READY, False, reason, message),
        Observation(PROGRESSING, False, "WaitingForReference", f"waiting for: {message}"),
        Observation(DEGRADED, True, reason, message),
    ]


def waiting(what: list[str], reason: str = "WaitingForModel") -> list[Observation]:
    """Not started yet, and nothing is wrong: a dependency is still settling (e.g. a gateway loading a
    new ModelPolicy). Retried until it is ready."""
    message = "; ".join(what)
    return [
        Observation(READY, False, reason, message),
        Observation(PROGRESSING, True, reason, f"waiting for: {message}"),
        Observation(DEGRADED, False, "AsExpected", ""),
    ]


def invalid(message: str) -> list[Observation]:
    return [
        Observation(READY, False, "InvalidSpec", message),
        Observation(PROGRESSING, False, "InvalidSpec", "fix the spec"),
        Observation(DEGRADED, True, "InvalidSpec", message),
    ]


def workload(what: str, ro: Rollout, problems: list[str], problem_reason: str) -> list[Observation]:
    """Ready: at least one replica available (an active agent / a serving gateway) and no problems."""
    if ro.complete:
        progressing = Observation(
            PROGRESSING, False, "RolloutComplete", f"{ro.available}/{ro.desired} available"
        )
    else:
        progressing = Observation(
            PROGRESSING,
            True,
            "RollingOut",
            f"{what}: {ro.updated}/{ro.desired} updated, {ro.available}/{ro.desired} available",
        )
    if problems:
        degraded = Observation(DEGRADED, True, problem_reason, "; ".join(problems))
    else:
        degraded = Observation(DEGRADED, False, "AsExpected", "")
    if problems:
        ready = Observation(READY, False, problem_reason, "; ".join(problems))
    elif ro.current and ro.available >= 1:
        ready = Observation(
            READY, True, "Available", f"{what}: {ro.available}/{ro.desired} replicas available"
        )
    else:
        ready = Observation(READY, False, "Unavailable", f"{what}: no replica available yet")
    return [ready, progressing, degraded]


def runtime_synced(error: str | None, configured: bool) -> Observation:
    if not configured:
        return Observation(
            RUNTIME_SYNCED, False, "PostgresNotConfigured", "no Postgres DSN: status not synced"
        )
    if error is not None:
        return Observation(RUNTIME_SYNCED, False, "RuntimeUnavailable", error)
    return Observation(RUNTIME_SYNCED, True, "Synced", "")


def conversation(phase: str, reason: str) -> list[Observation]:
    ready = phase in ("Running", "Suspended", "Succeeded")
    return [
        Observation(READY, ready, phase, reason or f"conversation is {phase.lower()}"),
        Observation(PROGRESSING, phase in ("Pending", "Running"), phase, ""),
        Observation(
            DEGRADED,
            phase == "Failed",
            "ConversationFailed" if phase == "Failed" else "AsExpected",
            reason if phase == "Failed" else "",
        ),
    ]


def _by(key: str) -> Callable[[dict[str, Any]], str]:
    return lambda view: str(view[key])


def merge_target_health(
    policy: str, targets: list[str], replies: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Per-target health over gateway replicas: the worst circuit, the latest error and failover."""
    merged = []
    for name in targets:
        seen = [
            ((reply.get("policies") or {}).get(policy) or {}).get("targets", {}).get(name)
            for reply in replies
        ]
        views = [v for v in seen if isinstance(v, dict)]
        circuit = max(
            (str(v.get("circuit") or "unknown") for v in views),
            key=lambda c: CIRCUIT_SEVERITY.get(c, 0),
            default="unknown",
        )
        entry: dict[str, Any] = {
            "name": name,
            "circuit": circuit,
            "openReplicas": sum(1 for v in views if v.get("circuit") == "open"),
            "replicas": len(views),
        }
        for key, time_key in (("lastError", "lastErrorTime"), ("lastFailoverReason", "lastFailoverTime")):
            stamped = sorted((v for v in views if v.get(time_key)), key=_by(time_key))
            latest = stamped[-1] if stamped else None
            if latest is not None:
                entry[key] = latest.get(key)
                entry[time_key] = latest.get(time_key)
        merged.append(entry)
    return merged


def limits_shared(replies: list[dict[str, Any]]) -> Observation:
    """LimitsShared: every replica answering shares rpm/tpm and budgets through the backend."""
    views = [r["limits"] for r in replies if isinstance(r.get("limits"), dict)]
    if not views:
        return Observation(
            LIMITS_SHARED, None, "NoReplicaReporting", "no gateway replica reported its limits"
        )
    unshared = [v for v in views if not v.get("shared")]
    if not unshared:
        return Observation(
            LIMITS_SHARED, True, "Shared", f"{len(views)} replicas share limits and budgets through Redis"
        )
    replicas = max(int(v.get("replicas") or 1) for v in unshared)
    if all(v.get("backend") == "local" for v in unshared):
        return Observation(
            LIMITS_SHARED,
            False,
            "NoSharedBackend",
            f"each of {replicas} replicas holds limit / {replicas} (no redisUrl in the connection Secret)",
        )
    reason = next((str(v.get("reason")) for v in unshared if v.get("reason")), "unreachable")
    return Observation(
        LIMITS_SHARED,
        False,
        "BackendUnreachable",
        f"{len(unshared)}/{len(views)} replicas hold their share (limit / {replicas}): {reason}"[:1000],
    )


@dataclass(frozen=True)
class Replica:
    """One gateway pod as the ModelPolicy reconcile sees it: Ready, and its ``/v1/stoa/status`` (None
    when it did not answer)."""

    pod: str
    ready: bool
    reply: dict[str, Any] | None


@dataclass(frozen=True)
class Serving:
    observation: Observation
    served: str  # "<serving>/<ready>" for status.served

    @property
    def ok(self) -> bool:
        return bool(self.observation.status)


def served(policy: str, spec_hash: str, replicas: list[Replica]) -> Serving:
    """Served: every Ready gateway replica (the ones the Service sends calls to) reports this policy with
    the spec hash the operator rendered. The kubelet refreshes a mounted ConfigMap lazily (up to about a
    minute), so a replica may serve an older spec, or not know a new policy, for a while after a change."""
    ready = [r for r in replicas if r.ready]
    serving = [
        r
        for r in ready
        if r.reply is not None
        and str(((r.reply.get("policies") or {}).get(policy) or {}).get("specHash") or "") == spec_hash
    ]
    count = f"{len(serving)}/{len(ready)}"
    if not ready:
        return Serving(Observation(SERVED, False, "NoReadyReplica", "no gateway replica is ready"), count)
    if len(serving) == len(ready):
        return Serving(
            Observation(SERVED, True, "Served", f"{count} ready gateway replicas serve the current spec"),
            count,
        )
    silent = sorted(r.pod for r in ready if r.reply is None)
    behind = sorted(r.pod for r in ready if r.reply is not None and r not in serving)
    parts = []
    if behind:
        parts.append(
            f"not loaded yet by {', '.join(behind)} (the kubelet refreshes the ConfigMap within a minute)"
        )
    if silent:
        parts.append(f"no status answer from {', '.join(silent)}")
    message = f"{count} ready gateway replicas serve the current spec; " + "; ".join(parts)
    return Serving(Observation(SERVED, False, LOADING, message), count)


def gate_ready(observations: list[Observation], serving: Serving) -> list[Observation]:
    """Ready only once the policy is served: a call right after Ready must find the current spec."""
    out = []
    for o in observations:
        gated = o.type == READY and o.status and not serving.ok
        out.append(
            Observation(READY, False, serving.observation.reason, serving.observation.message) if gated else o
        )
    return [*out, serving.observation]


def circuits(targets: list[dict[str, Any]]) -> str:
    """``status.circuits``: each target's (worst) circuit, in spec order."""
    return ",".join(f"{t['name']}={t.get('circuit', 'unknown')}" for t in targets)
