"""The turn message on the wire (pure): versioned, small, pointing at Postgres for content."""

from __future__ import annotations

import json
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from stoa_gateway.policy import Priority

SCHEMA_VERSION = 1
CONTENT_TYPE = "application/vnd.stoa.turn+json"


class MalformedMessageError(ValueError):
    """The body is not a turn message this runtime understands; it goes to the dead-letter queue."""


class TurnMessage(BaseModel):
    """``seq`` N asks agent ``to`` for turn N; ``content_ref`` names the previous turn (or the topic)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    schema_version: Literal[1] = Field(default=1, alias="schemaVersion")
    message_id: str = Field(alias="messageId", min_length=1, max_length=200)
    conversation_id: str = Field(alias="conversationId", min_length=1, max_length=100)
    conversation: str = Field(min_length=1, max_length=300)
    seq: int = Field(ge=1)
    from_: str = Field(alias="from", max_length=63)
    to: str = Field(min_length=1, max_length=63)
    content_ref: str = Field(alias="contentRef", max_length=300)
    traceparent: str | None = Field(default=None, max_length=55)
    priority: Priority | None = None  # the conversation's; sent only when set (older readers forbid extras)

    def body(self) -> bytes:
        return self.model_dump_json(
            by_alias=True, exclude={"priority"} if self.priority is None else None
        ).encode()


def message_id_for(conversation_id: str, seq: int) -> str:
    """Deterministic: one id per (conversation, seq); every copy of 'ask for turn N' is the same message."""
    return f"{conversation_id}:{seq}"


def content_ref_for(conversation_id: str, seq: int) -> str:
    return f"turns/{conversation_id}/{seq - 1}" if seq > 1 else f"conversations/{conversation_id}/topic"


def make_message(
    conversation_id: str,
    conversation: str,
    seq: int,
    *,
    sender: str,
    to: str,
    traceparent: str | None,
    priority: Priority | None = None,
) -> TurnMessage:
    return TurnMessage(
        message_id=message_id_for(conversation_id, seq),
        conversation_id=conversation_id,
        conversation=conversation,
        seq=seq,
        from_=sender,
        to=to,
        content_ref=content_ref_for(conversation_id, seq),
        traceparent=traceparent,
        priority=priority,
    )


def parse_message(body: bytes) -> TurnMessage:
    """Decode and validate; any problem raises ``MalformedMessageError`` with a readable reason."""
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MalformedMessageError(f"body is not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise MalformedMessageError("body is not a JSON object")
    version = data.get("schemaVersion")
    if version != SCHEMA_VERSION:
        raise MalformedMessageError(
            f"unsupported schemaVersion {version!r} (this runtime reads {SCHEMA_VERSION})"
        )
    try:
        return TurnMessage.model_validate(data)
    except ValidationError as exc:
        errors = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise MalformedMessageError(f"invalid turn message: {errors}") from exc
