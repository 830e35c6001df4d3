"""What the gateway sends to the client for each upstream stream event (pure, stateful per stream).

Tracks usage, output text and the end of the stream; applies output guardrails: a blocked keyword or
pattern ends the stream with ``finish_reason: content_filter`` and ``[DONE]``; PII masking holds back
the tail of the text (see ``guardrails.stream_cut``) so that an item split over chunks is masked whole.
A client that asked for usage gets it in the final usage chunk with ``usage.cost`` (estimated when the
provider sent none).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from stoa_gateway.costs import Usage
from stoa_gateway.guardrails import CompiledRules, find_blocked, mask_pii, stream_cut
from stoa_gateway.policy import PiiKind
from stoa_gateway.sse import DONE, encode_event, encode_json_event
from stoa_gateway.tokens import delta_text

SCAN_WINDOW = 1024


UsageOf = Callable[[Any, int], Usage]  # (provider usage or None, output characters) -> tokens and cost


class StreamRelay:
    def __init__(self, rules: CompiledRules, include_usage: bool, usage_of: UsageOf | None = None) -> None:
        self.rules = rules
        self.include_usage = include_usage
        self.usage_of = usage_of
        self.usage_sent = False
        self.scan = bool(rules.keywords or rules.patterns)
        self.usage: dict[str, Any] | None = None
        self.text_chars = 0
        self.content_events = 0
        self.finished = False  # [DONE] sent
        self.finish_reason: str | None = None
        self.blocked: str | None = None
        self.upstream_error: str | None = None
        self.masked: dict[PiiKind, int] = {}
        self._seen = ""
        self._pending = ""
        self._template: dict[str, Any] = {}

    def _mask(self, text: str) -> str:
        masked, counts = mask_pii(text, self.rules.pii)
        for kind, n in counts.items():
            self.masked[kind] = self.masked.get(kind, 0) + n
        return masked

    def _chunk(self, delta: dict[str, Any], finish_reason: str | None) -> dict[str, Any]:
        return {
            "id": self._template.get("id", "chatcmpl-stoa"),
            "object": "chat.completion.chunk",
            "created": self._template.get("created", 0),
            "model": self._template.get("model", ""),
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
        }

    def _flush_pending(self) -> list[bytes]:
        if not self._pending:
            return []
        text, self._pending = self._mask(self._pending), ""
        return [encode_json_event(self._chunk({"content": text}, None))]

    def _done(self) -> list[bytes]:
        out = self._flush_pending()
        if self.include_usage and not self.usage_sent and self.usage_of is not None:  # none sent: estimate
            usage = self.usage_of(None, self.text_chars)
            out.append(encode_json_event({**self._chunk({}, None), "choices": [], "usage": usage.body(None)}))
        out.append(encode_event(DONE))
        self.finished = True
        return out

    def _with_usage(self, chunk: dict[str, Any]) -> dict[str, Any]:
        """Record the provider's usage; the client's chunk carries it with ``cost``, or drops it."""
        self.usage = chunk["usage"]
        if not self.include_usage:
            return {k: v for k, v in chunk.items() if k != "usage"}
        if self.usage_of is None:  # no prices known (tests of the relay alone): as the provider sent it
            return chunk
        usage = self.usage_of(self.usage, self.text_chars + len(delta_text(chunk)))
        self.usage_sent = True
        return {**chunk, "usage": usage.body(self.usage if isinstance(self.usage, dict) else None)}

    def process(self, data: str) -> list[bytes]:  # noqa: PLR0911, PLR0912 - one branch per kind of event
        """Bytes to send to the client for one upstream event's ``data``."""
        if self.finished:
            return []
        if data == DONE:
            return self._done()
        try:
            chunk = json.loads(data)
        except ValueError:
            return [encode_event(data)]
        if not isinstance(chunk, dict):
            return [encode_event(data)]
        if chunk.get("error"):
            error = chunk["error"]
            message = error.get("message") if isinstance(error, dict) else str(error)
            self.upstream_error = f"upstream error event: {message}"
            return []
        self._template = chunk
        choices = chunk.get("choices") or []
        if chunk.get("usage"):
            chunk = self._with_usage(chunk)
            data = json.dumps(chunk, separators=(",", ":"))
            if not choices:
                return [*self._flush_pending(), encode_event(data)] if self.include_usage else []
        text = delta_text(chunk)
        if text:
            self.content_events += 1
        self.text_chars += len(text)
        finish = next(
            (c.get("finish_reason") for c in choices if isinstance(c, dict) and c.get("finish_reason")), None
        )
        if finish:
            self.finish_reason = str(finish)
        if self.scan and text:
            self._seen = (self._seen + text)[-SCAN_WINDOW:]
            hit = find_blocked(self._seen, self.rules)
            if hit:
                self.blocked = hit
                self.finished = True
                self._pending = ""
                return [encode_json_event(self._chunk({}, "content_filter")), encode_event(DONE)]
        if not self.rules.pii or not choices or not isinstance(choices[0], dict):
            return [encode_event(data)]
        delta = choices[0].get("delta")
        if isinstance(delta, dict) and isinstance(delta.get("content"), str):
            self._pending += delta["content"]
            if finish:
                emit, self._pending = self._pending, ""
            else:
                cut = stream_cut(self._pending)
                emit, self._pending = self._pending[:cut], self._pending[cut:]
            delta["content"] = self._mask(emit) if emit else ""
            if not emit and not finish and len(delta) == 1:
                return []
            return [encode_json_event(chunk)]
        if finish:
            return [*self._flush_pending(), encode_event(data)]
        return [encode_event(data)]
