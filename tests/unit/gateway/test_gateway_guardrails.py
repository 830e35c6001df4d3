"""PII masking, blocked content and the streaming relay (pure)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from stoa_gateway.guardrails import compile_rules, find_blocked, luhn_ok, mask_messages, mask_pii, stream_cut
from stoa_gateway.policy import ContentRules, PiiKind
from stoa_gateway.relay import StreamRelay

ALL = list(PiiKind)


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("write to a.b+c@mail.example.co.uk now", "write to [EMAIL] now"),
        ("card 4111-1111-1111-1111.", "card [CARD]."),
        ("card 4111111111111112 fails Luhn", "card 4111111111111112 fails Luhn"),
        ("ssn 078-05-1120", "ssn [ID]"),
        ("iban GB82 WEST 1234 5698 7654 32 ok", "iban [ID] ok"),
        ("call +44 20 7946 0958 or (415) 555-0132", "call [PHONE] or [PHONE]"),
        ("call 555-0132", "call [PHONE]"),
        (
            "on 2024-05-01 at 10:30, order 12345, version 1.2.3",
            "on 2024-05-01 at 10:30, order 12345, version 1.2.3",
        ),
        ("no pii here", "no pii here"),
    ],
)
def test_mask_pii(text: str, masked: str) -> None:
    assert mask_pii(text, ALL)[0] == masked


def test_mask_only_the_kinds_asked_and_count_them() -> None:
    text = "a@b.io, c@d.io, 4111 1111 1111 1111"
    assert mask_pii(text, [PiiKind.EMAIL]) == ("[EMAIL], [EMAIL], 4111 1111 1111 1111", {PiiKind.EMAIL: 2})


def test_luhn() -> None:
    assert luhn_ok("4111111111111111")
    assert luhn_ok("79927398713")
    assert not luhn_ok("79927398710")


def test_mask_messages_handles_strings_and_parts_without_touching_the_input() -> None:
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": "be nice"},
        {
            "role": "user",
            "content": [{"type": "text", "text": "x@y.org"}, {"type": "image_url", "image_url": {}}],
        },
        {"role": "assistant", "content": None, "tool_calls": []},
    ]
    masked, counts = mask_messages(messages, [PiiKind.EMAIL])
    assert masked[1]["content"][0]["text"] == "[EMAIL]"
    assert messages[1]["content"][0]["text"] == "x@y.org"
    assert counts == {PiiKind.EMAIL: 1}


@pytest.mark.parametrize(
    ("text", "hit"),
    [
        ("the Secret Plan is", "keyword 'secret plan'"),
        ("secret planning", None),  # whole words only
        ("my key is sk-abc123", "pattern 'sk-[a-z0-9]+'"),
        ("fine", None),
    ],
)
def test_find_blocked(text: str, hit: str | None) -> None:
    rules = compile_rules(ContentRules(blocked_keywords=["secret plan"], blocked_patterns=["sk-[a-z0-9]+"]))
    assert find_blocked(text, rules) == hit


def test_stream_cut_never_splits_pii() -> None:
    buffer = "Please contact jane@example.com or +1 415 555 0132 about the invoice. " * 3
    cut = stream_cut(buffer)
    assert 0 < cut <= len(buffer) - 64
    assert buffer[cut - 1] == " "
    assert stream_cut("short") == 0


def chunk(content: str | None = None, finish: str | None = None) -> str:
    delta = {} if content is None else {"content": content}
    return json.dumps(
        {"id": "x", "model": "m", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    )


def sent_text(out: list[bytes]) -> str:
    text = ""
    for raw in out:
        data = raw.decode()[len("data: ") :].strip()
        if data != "[DONE]":
            for choice in json.loads(data)["choices"]:
                text += choice["delta"].get("content") or ""
    return text


def test_relay_masks_pii_split_over_chunks() -> None:
    relay = StreamRelay(compile_rules(ContentRules(mask_pii=[PiiKind.EMAIL])), include_usage=False)
    reply = "Reach me at someone.long@example.com whenever you like, I answer quickly. Bye now!"
    out: list[bytes] = []
    for i in range(0, len(reply), 3):
        out += relay.process(chunk(reply[i : i + 3]))
    out += relay.process(chunk(finish="stop"))
    out += relay.process("[DONE]")
    assert sent_text(out) == reply.replace("someone.long@example.com", "[EMAIL]")
    assert out[-1] == b"data: [DONE]\n\n"
    assert relay.masked == {PiiKind.EMAIL: 1}


def test_relay_blocks_output_and_swallows_usage_unless_asked() -> None:
    relay = StreamRelay(compile_rules(ContentRules(blocked_keywords=["forbidden"])), include_usage=False)
    assert sent_text(relay.process(chunk("all good "))) == "all good "
    out = relay.process(chunk("forbidden words"))
    assert json.loads(out[0].decode()[6:])["choices"][0]["finish_reason"] == "content_filter"
    assert out[-1] == b"data: [DONE]\n\n"
    assert relay.finished
    assert relay.process(chunk("more")) == []

    quiet = StreamRelay(compile_rules(ContentRules()), include_usage=False)
    usage = json.dumps({"choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 2}})
    assert quiet.process(usage) == []
    assert quiet.usage == {"prompt_tokens": 1, "completion_tokens": 2}
    assert StreamRelay(compile_rules(ContentRules()), include_usage=True).process(usage) != []


def test_relay_records_upstream_error_events() -> None:
    relay = StreamRelay(compile_rules(ContentRules()), include_usage=False)
    assert relay.process(json.dumps({"error": {"message": "overloaded"}})) == []
    assert relay.upstream_error == "upstream error event: overloaded"
