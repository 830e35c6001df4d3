"""Agent identity is namespace-scoped: the agent key and every name derived from it (queues, schemas)."""

from __future__ import annotations

import pytest

from stoa_agents.bus.topology import dead_letter_queue_name, queue_arguments, queue_name
from stoa_agents.identity import (
    PG_IDENTIFIER_MAX,
    agent_key,
    conversation_namespace,
    memory_schema,
    participant_key,
    split_agent_key,
)
from stoa_operator.runtime_adapter import agent_queue

LONG = "x" * 63


@pytest.mark.parametrize(
    ("namespace", "agent", "key"),
    [
        ("", "team-a", "team-a"),
        ("ns-a", "team-a", "ns-a/team-a"),
        ("ns-b", "team-a", "ns-b/team-a"),
        (LONG, LONG, f"{LONG}/{LONG}"),
    ],
)
def test_agent_key(namespace: str, agent: str, key: str) -> None:
    assert agent_key(namespace, agent) == key
    assert split_agent_key(key) == (namespace, agent)


@pytest.mark.parametrize(
    ("namespace", "agent"),
    [
        ("", ""),
        ("", "Team"),
        ("", "a/b"),
        ("", "a.b"),
        ("", "-a"),
        ("ns/x", "a"),
        ("NS", "a"),
        ("", "y" * 64),
    ],
)
def test_agent_key_rejects_non_labels(namespace: str, agent: str) -> None:
    with pytest.raises(ValueError, match="not a"):
        agent_key(namespace, agent)


@pytest.mark.parametrize(
    ("conversation", "agent", "key"),
    [
        ("debate", "team-a", "team-a"),  # stoa run: bare names
        ("ns-a/debate", "team-a", "ns-a/team-a"),  # operator: <namespace>/<name>
        ("ns-b/debate", "moderator", "ns-b/moderator"),
    ],
)
def test_participants_are_agents_of_the_conversation_namespace(
    conversation: str, agent: str, key: str
) -> None:
    assert participant_key(conversation, agent) == key
    assert conversation_namespace(conversation) == key.rpartition("/")[0]


@pytest.mark.parametrize(
    ("key", "queue"),
    [
        ("team-a", "stoa.agent.team-a"),
        ("ns-a/team-a", "stoa.agent.ns-a.team-a"),
        ("ns-b/team-a", "stoa.agent.ns-b.team-a"),
    ],
)
def test_queue_names(key: str, queue: str) -> None:
    assert queue_name(key) == queue
    assert dead_letter_queue_name(key) == f"{queue}.dlq"
    assert queue_arguments(key, 3)["x-dead-letter-routing-key"] == key


def test_operator_shows_the_scoped_queue() -> None:
    assert agent_queue("ns-a", "team-a") == "stoa.agent.ns-a.team-a"


@pytest.mark.parametrize(
    ("key", "schema"),
    [
        ("team-a", "agent_team_a"),
        ("moderator", "agent_moderator"),
        ("ns-a/team-a", "agent_ns_a_team_a_bc1afe4d"),
        ("ns-b/team-a", "agent_ns_b_team_a_a8f0a42e"),
    ],
)
def test_memory_schema_table(key: str, schema: str) -> None:
    assert memory_schema(key) == schema


@pytest.mark.parametrize(
    "key",
    ["a" * 63, "b" * 58, f"{LONG}/{LONG}", "ns-a/" + "t" * 63, "n" * 63 + "/team-a", "ns-a/team-a"],
)
def test_memory_schema_is_a_plain_identifier_of_at_most_63_bytes(key: str) -> None:
    schema = memory_schema(key)
    assert len(schema.encode()) <= PG_IDENTIFIER_MAX
    assert schema.startswith("agent_")
    assert all(c.isascii() and (c.isalnum() or c == "_") for c in schema)
    assert schema == schema.lower()


def test_memory_schemas_stay_distinct_where_sanitizing_or_cutting_would_merge_them() -> None:
    keys = [
        "a-b/c",
        "a/b-c",  # both read agent_a_b_c before the hash
        "ns-a/team-a",
        "ns-b/team-a",
        f"{LONG}/{'p' * 62}a",
        f"{LONG}/{'p' * 62}b",  # same first 54 characters
        "q" * 62 + "a",
        "q" * 62 + "b",
    ]
    schemas = [memory_schema(k) for k in keys]
    assert len(set(schemas)) == len(keys)
    assert memory_schema("b" * 57) == "agent_" + "b" * 57  # exactly 63: unchanged
