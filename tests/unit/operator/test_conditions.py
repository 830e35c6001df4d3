"""Conditions logic: transitions, observedGeneration, events and the readiness tables."""

from __future__ import annotations

from typing import Any

import pytest

from stoa_operator.reconcile import readiness
from stoa_operator.reconcile.conditions import (
    Observation,
    merge_conditions,
    status_changed,
    transition_events,
)


def test_last_transition_time_moves_only_on_flip() -> None:
    first = merge_conditions([], [Observation("Ready", False, "Unavailable", "m")], 1, "T1")
    same = merge_conditions(first, [Observation("Ready", False, "Other", "m2")], 2, "T2")
    flipped = merge_conditions(same, [Observation("Ready", True, "Available")], 3, "T3")
    assert first[0]["lastTransitionTime"] == "T1"
    assert same[0] == {
        "type": "Ready",
        "status": "False",
        "reason": "Other",
        "message": "m2",
        "lastTransitionTime": "T1",
        "observedGeneration": 2,
    }
    assert flipped[0]["lastTransitionTime"] == "T3"
    assert flipped[0]["status"] == "True"


def test_conditions_are_ordered_ready_progressing_degraded() -> None:
    merged = merge_conditions(
        [],
        [
            Observation("Degraded", False, "A"),
            Observation("Ready", True, "B"),
            Observation("Progressing", None, "C"),
        ],
        1,
        "T",
    )
    assert [(c["type"], c["status"]) for c in merged] == [
        ("Ready", "True"),
        ("Progressing", "Unknown"),
        ("Degraded", "False"),
    ]


def test_events_for_ready_degraded_and_recovery() -> None:
    degraded = merge_conditions(
        [], [Observation("Degraded", True, "MissingReference", "ModelPolicy x not found")], 1, "T"
    )
    [event] = transition_events("Agent", [], degraded)
    assert (event.type, event.reason, event.message) == (
        "Warning",
        "MissingReference",
        "ModelPolicy x not found",
    )
    recovered = merge_conditions(degraded, [Observation("Degraded", False, "AsExpected")], 1, "T2")
    [event] = transition_events("Agent", degraded, recovered)
    assert (event.type, event.reason) == ("Normal", "Recovered")
    assert transition_events("Agent", recovered, recovered) == []


def test_status_changed_ignores_unmanaged_keys() -> None:
    assert not status_changed({"a": 1, "kopf": {}}, {"a": 1})
    assert status_changed({"a": 1}, {"a": 2})
    assert status_changed(None, {"a": 1})


def _deployment(replicas: int, gen: int, observed: int, updated: int, available: int) -> dict[str, Any]:
    return {
        "metadata": {"generation": gen},
        "spec": {"replicas": replicas},
        "status": {
            "observedGeneration": observed,
            "updatedReplicas": updated,
            "availableReplicas": available,
            "readyReplicas": available,
        },
    }


@pytest.mark.parametrize(
    ("deployment", "problems", "ready", "progressing", "degraded"),
    [
        (None, [], ("False", "Unavailable"), ("True", "RollingOut"), ("False", "AsExpected")),
        (
            _deployment(2, 1, 1, 2, 0),
            [],
            ("False", "Unavailable"),
            ("True", "RollingOut"),
            ("False", "AsExpected"),
        ),
        (
            _deployment(2, 1, 1, 2, 1),
            [],
            ("True", "Available"),
            ("True", "RollingOut"),
            ("False", "AsExpected"),
        ),
        (
            _deployment(2, 1, 1, 2, 2),
            [],
            ("True", "Available"),
            ("False", "RolloutComplete"),
            ("False", "AsExpected"),
        ),
        (
            _deployment(2, 2, 1, 2, 2),
            [],
            ("False", "Unavailable"),
            ("True", "RollingOut"),
            ("False", "AsExpected"),
        ),
        (
            _deployment(2, 1, 1, 2, 2),
            ["Secret k not found"],
            ("False", "SecretNotFound"),
            ("False", "RolloutComplete"),
            ("True", "SecretNotFound"),
        ),
    ],
)
def test_workload_conditions_table(
    deployment: dict[str, Any] | None,
    problems: list[str],
    ready: tuple[str, str],
    progressing: tuple[str, str],
    degraded: tuple[str, str],
) -> None:
    obs = {
        o.type: (o.status_text, o.reason)
        for o in readiness.workload("x", readiness.rollout(deployment), problems, "SecretNotFound")
    }
    assert obs == {"Ready": ready, "Progressing": progressing, "Degraded": degraded}


@pytest.mark.parametrize(
    ("phase", "ready", "progressing", "degraded"),
    [
        ("Pending", "False", "True", "False"),
        ("Running", "True", "True", "False"),
        ("Suspended", "True", "False", "False"),
        ("Succeeded", "True", "False", "False"),
        ("Failed", "False", "False", "True"),
    ],
)
def test_conversation_conditions_table(phase: str, ready: str, progressing: str, degraded: str) -> None:
    obs = {o.type: o.status_text for o in readiness.conversation(phase, "")}
    assert obs == {"Ready": ready, "Progressing": progressing, "Degraded": degraded}


def test_blocked_names_what_is_missing() -> None:
    obs = {o.type: o for o in readiness.blocked(["ModelPolicy p not found", "Secret s not found"])}
    assert obs["Degraded"].status is True
    assert obs["Degraded"].message == "ModelPolicy p not found; Secret s not found"
    assert obs["Ready"].status is False


def test_target_health_takes_the_worst_replica_and_latest_failover() -> None:
    replies = [
        {
            "policies": {
                "p": {
                    "targets": {
                        "a": {
                            "circuit": "closed",
                            "lastFailoverReason": "timeout",
                            "lastFailoverTime": "2026-01-01T00:00:01Z",
                        }
                    }
                }
            }
        },
        {
            "policies": {
                "p": {
                    "targets": {
                        "a": {
                            "circuit": "open",
                            "lastFailoverReason": "status 503",
                            "lastFailoverTime": "2026-01-01T00:00:09Z",
                        }
                    }
                }
            }
        },
    ]
    [a, b] = readiness.merge_target_health("p", ["a", "b"], replies)
    assert a == {
        "name": "a",
        "circuit": "open",
        "openReplicas": 1,
        "replicas": 2,
        "lastFailoverReason": "status 503",
        "lastFailoverTime": "2026-01-01T00:00:09Z",
    }
    assert b == {"name": "b", "circuit": "unknown", "openReplicas": 0, "replicas": 0}


@pytest.mark.parametrize(
    ("limits", "status", "reason", "words"),
    [
        ([], None, "NoReplicaReporting", "no gateway replica"),
        ([{"backend": "redis", "shared": True, "replicas": 2}] * 2, True, "Shared", "2 replicas share"),
        (
            [{"backend": "local", "shared": False, "replicas": 2, "reason": "x"}] * 2,
            False,
            "NoSharedBackend",
            "each of 2 replicas holds limit / 2",
        ),
        (
            [
                {"backend": "redis", "shared": True, "replicas": 3},
                {
                    "backend": "redis",
                    "shared": False,
                    "replicas": 3,
                    "reason": "cannot reach redis://r:6379/0",
                },
            ],
            False,
            "BackendUnreachable",
            "1/2 replicas hold their share (limit / 3): cannot reach redis://r:6379/0",
        ),
    ],
)
def test_limits_shared_condition(
    limits: list[dict[str, object]], status: bool | None, reason: str, words: str
) -> None:
    observation = readiness.limits_shared([{"limits": item} for item in limits])
    assert (observation.type, observation.status, observation.reason) == ("LimitsShared", status, reason)
    assert words in observation.message
