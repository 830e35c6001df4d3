"""Server-sent events: a tiny incremental decoder and the encoder (pure)."""

from __future__ import annotations

import json
from typing import Any

DONE = "[DONE]"


class SseDecoder:
    """Feed lines (with or without the newline); get each event's joined ``data`` when it ends."""

    def __init__(self) -> None:
        self._data: list[str] = []
        self._partial = b""

    def feed(self, raw: bytes) -> str | None:
        line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
        if not line:
            if not self._data:
                return None
            data = "\n".join(self._data)
            self._data = []
            return data
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        if name == "data":
            self._data.append(value[1:] if value.startswith(" ") else value)
        return None

    def push(self, data: bytes) -> list[str]:
        """Feed raw bytes (any split); returns the events completed by them."""
        self._partial += data
        *lines, self._partial = self._partial.split(b"\n")
        events = []
        for line in lines:
            event = self.feed(line)
            if event is not None:
                events.append(event)
        return events

    def flush(self) -> str | None:
        """End of stream: the pending event, if any (a last line without a newline included)."""
        if self._partial:
            self.feed(self._partial)
            self._partial = b""
        if not self._data:
            return None
        data = "\n".join(self._data)
        self._data = []
        return data


def encode_event(data: str) -> bytes:
    return f"data: {data}\n\n".encode()


def encode_json_event(payload: Any) -> bytes:
    return encode_event(json.dumps(payload, separators=(",", ":")))
