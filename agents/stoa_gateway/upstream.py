"""Calls to OpenAI-compatible providers (I/O adapter): aiohttp errors become ``Failure`` values here."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from stoa_gateway.backoff import parse_retry_after
from stoa_gateway.retry import Failure, FailureKind
from stoa_gateway.sse import DONE, SseDecoder


@dataclass
class Completion:
    body: dict[str, Any]


@dataclass
class StreamStart:
    """An upstream stream that produced its first token; ``events`` are the data read so far."""

    response: aiohttp.ClientResponse
    decoder: SseDecoder
    events: list[str] = field(default_factory=list)


def completions_url(base_url: str) -> str:
    return base_url.rstrip("/") + "/chat/completions"


def _error_message(raw: bytes) -> str:
    try:
        data = json.loads(raw)
    except ValueError:
        text = raw.decode("utf-8", errors="replace").strip()
        return text[:200] or "(empty body)"
    if isinstance(data, dict):
        error = data.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return str(error["message"])[:200]
        if isinstance(error, str):
            return error[:200]
    return json.dumps(data)[:200]


def _status_failure(status: int, raw: bytes, retry_after: str | None) -> Failure:
    return Failure(
        FailureKind.STATUS,
        f"status {status}: {_error_message(raw)}",
        status=status,
        retry_after=parse_retry_after(retry_after, time.time()),
        body=raw[:65536],
    )


def _client_failure(exc: BaseException, timeout: float) -> Failure:
    if isinstance(exc, TimeoutError):
        return Failure(FailureKind.TIMEOUT, f"timed out after {timeout:g}s")
    detail = str(exc) or type(exc).__name__
    return Failure(FailureKind.CONNECTION, f"connection failed ({type(exc).__name__}): {detail}"[:300])


async def post_completion(
    session: aiohttp.ClientSession, url: str, payload: bytes, headers: dict[str, str], limit_seconds: float
) -> Completion | Failure:
    """One non-streaming attempt; non-2xx statuses are returned as ``Failure`` with the status."""
    try:
        async with asyncio.timeout(limit_seconds):
            async with session.post(url, data=payload, headers=headers) as resp:
                raw = await resp.read()
                status = resp.status
                retry_after = resp.headers.get("Retry-After")
    except (TimeoutError, aiohttp.ClientError, OSError) as exc:
        return _client_failure(exc, limit_seconds)
    if status != 200:
        return _status_failure(status, raw, retry_after)
    try:
        body = json.loads(raw)
    except ValueError:
        return Failure(FailureKind.INVALID_RESPONSE, "response is not JSON")
    if not isinstance(body, dict) or not isinstance(body.get("choices"), list):
        return Failure(FailureKind.INVALID_RESPONSE, "response has no choices")
    return Completion(body)


def is_first_token(chunk: dict[str, Any]) -> bool:
    """A chunk that commits the stream: content, tool calls or a finish reason."""
    for choice in chunk.get("choices") or []:
        if not isinstance(choice, dict):
            continue
        if choice.get("finish_reason"):
            return True
        delta = choice.get("delta") or {}
        if isinstance(delta, dict) and (
            delta.get("content") or delta.get("tool_calls") or delta.get("function_call")
        ):
            return True
    return False


def _first_token_verdict(data: str) -> bool | Failure:
    """True when ``data`` commits the stream, a Failure for a broken event, False to read on."""
    if data == DONE:
        return True
    try:
        chunk = json.loads(data)
    except ValueError:
        return Failure(FailureKind.INVALID_RESPONSE, "stream event is not JSON")
    if not isinstance(chunk, dict):
        return False
    if chunk.get("error"):
        message = _error_message(data.encode())
        return Failure(FailureKind.INVALID_RESPONSE, f"error event before the first token: {message}")
    return is_first_token(chunk)


async def open_stream(
    session: aiohttp.ClientSession, url: str, payload: bytes, headers: dict[str, str], limit_seconds: float
) -> StreamStart | Failure:
    """Start a streaming attempt and read until the first token (within ``limit_seconds``)."""
    resp: aiohttp.ClientResponse | None = None
    try:
        async with asyncio.timeout(limit_seconds):
            resp = await session.post(url, data=payload, headers=headers)
            if resp.status != 200:
                raw = await resp.read()
                resp.release()
                return _status_failure(resp.status, raw, resp.headers.get("Retry-After"))
            decoder = SseDecoder()
            events: list[str] = []
            while True:
                raw = await resp.content.readany()
                fresh = decoder.push(raw) if raw else [e for e in [decoder.flush()] if e is not None]
                for i, data in enumerate(fresh):
                    verdict = _first_token_verdict(data)
                    if verdict is True:  # commit, keeping whatever else this read brought
                        events.extend(fresh[i:])
                        return StreamStart(resp, decoder, events)
                    if isinstance(verdict, Failure):
                        resp.close()
                        return verdict
                    events.append(data)
                if not raw:
                    resp.close()
                    return Failure(FailureKind.INVALID_RESPONSE, "stream ended before the first token")
    except (TimeoutError, aiohttp.ClientError, OSError) as exc:
        if resp is not None:
            resp.close()
        return _client_failure(exc, limit_seconds)
