"""The wire format of turn messages, trace context and queue arguments."""

from __future__ import annotations

import json

import pytest

from stoa_agents.bus.topology import queue_arguments, with_heartbeat
from stoa_agents.protocol import MalformedMessageError, make_message, message_id_for, parse_message
from stoa_agents.tracing import child_traceparent, trace_id_of

TP = "00-" + "a" * 32 + "-" + "b" * 16 + "-01"


def test_roundtrip_uses_camel_case_and_from() -> None:
    msg = make_message("c1", "debate", 3, sender="team-a", to="team-b", traceparent=TP)
    data = json.loads(msg.body())
    assert data["schemaVersion"] == 1
    assert data["from"] == "team-a"
    assert data["messageId"] == "c1:3" == message_id_for("c1", 3)
    assert data["contentRef"] == "turns/c1/2"
    assert parse_message(msg.body()) == msg


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b"not json", "not JSON"),
        (b"\xff\xfe", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b'{"schemaVersion": 2}', "unsupported schemaVersion 2"),
        (b'{"schemaVersion": 1, "messageId": "x"}', "invalid turn message"),
    ],
)
def test_malformed(body: bytes, fragment: str) -> None:
    with pytest.raises(MalformedMessageError, match=fragment):
        parse_message(body)


def test_unknown_fields_are_rejected() -> None:
    data = json.loads(make_message("c", "n", 1, sender="", to="a", traceparent=None).body())
    data["extra"] = True
    with pytest.raises(MalformedMessageError):
        parse_message(json.dumps(data).encode())


def test_trace_context_continues_the_trace() -> None:
    child = child_traceparent(TP, "f" * 32, "1" * 16)
    assert child == "00-" + "a" * 32 + "-" + "1" * 16 + "-01"
    assert trace_id_of(child) == "a" * 32
    assert child_traceparent("garbage", "f" * 32, "1" * 16) == "00-" + "f" * 32 + "-" + "1" * 16 + "-01"


def test_queue_arguments_follow_the_verified_declaration() -> None:
    args = queue_arguments("team-a", 3)
    assert args["x-delivery-limit"] == 3
    assert isinstance(args["x-delivery-limit"], int)
    assert args["x-single-active-consumer"] is True
    assert args["x-queue-type"] == "quorum"
    assert args["x-dead-letter-strategy"] == "at-least-once"
    assert args["x-overflow"] == "reject-publish"
    with pytest.raises(ValueError, match="positive int"):
        queue_arguments("a", "3")  # type: ignore[arg-type]


def test_heartbeat_is_explicit() -> None:
    assert with_heartbeat("amqp://h/", 5) == "amqp://h/?heartbeat=5"
    assert with_heartbeat("amqp://h/?x=1", 5) == "amqp://h/?x=1&heartbeat=5"
    assert with_heartbeat("amqp://h/?heartbeat=2", 5) == "amqp://h/?heartbeat=2"
