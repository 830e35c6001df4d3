"""Token estimates and text extraction from OpenAI chat bodies (pure)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

CHARS_PER_TOKEN = 4


def estimate_tokens(text: str) -> int:
    """~4 characters per token, rounded up; 0 for empty text."""
    return -(-len(text) // CHARS_PER_TOKEN)


def message_texts(messages: Any) -> Iterator[str]:
    """Every text fragment of ``messages`` (string contents and ``{"type": "text"}`` parts)."""
    if not isinstance(messages, list):
        return
    for message in messages:
        if not isinstance(message, Mapping):
            continue
        content = message.get("content")
        if isinstance(content, str):
            yield content
        elif isinstance(content, list):
            for part in content:
                if isinstance(part, Mapping) and isinstance(part.get("text"), str):
                    yield part["text"]


def estimate_input_tokens(messages: Any) -> int:
    return sum(estimate_tokens(text) for text in message_texts(messages))


def completion_text(body: Mapping[str, Any]) -> str:
    """Concatenated ``choices[].message.content`` of a non-streaming completion."""
    parts: list[str] = []
    for choice in body.get("choices") or []:
        if isinstance(choice, Mapping):
            message = choice.get("message")
            if isinstance(message, Mapping) and isinstance(message.get("content"), str):
                parts.append(message["content"])
    return "".join(parts)


def delta_text(chunk: Mapping[str, Any]) -> str:
    """Concatenated ``choices[].delta.content`` of one streaming chunk."""
    parts: list[str] = []
    for choice in chunk.get("choices") or []:
        if isinstance(choice, Mapping):
            delta = choice.get("delta")
            if isinstance(delta, Mapping) and isinstance(delta.get("content"), str):
                parts.append(delta["content"])
    return "".join(parts)
