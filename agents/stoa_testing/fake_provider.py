"""A scriptable OpenAI-compatible fake model server for tests, demos and benchmarks.

Endpoints: ``POST /v1/chat/completions`` (JSON and SSE streaming), ``GET /v1/models``,
``GET /healthz``; admin: ``POST /_admin/script`` (queue per-request behaviours, set the default,
the replies or echo), ``GET /_admin/stats`` (counters and the last request bodies and headers),
``POST /_admin/reset``.

Each chat request takes the next behaviour from the queue, else the default behaviour. The reply is
the behaviour's ``reply``, else the echo of the last user message when ``echo`` is on, else the next
of ``replies`` (cycled). ``usage`` is estimated at ~4 characters per token.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import sys
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from stoa_gateway.running import RunningServer, serve
from stoa_gateway.tokens import estimate_input_tokens, estimate_tokens, message_texts

DEFAULT_REPLY = "Hello from the fake model."
LAST_REQUESTS = 50


class Behaviour(BaseModel):
    """How the fake answers one chat request (camelCase or snake_case keys)."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")

    status: int = Field(default=200, ge=100, le=599)
    latency: float = Field(default=0.0, ge=0, description="seconds before the response starts")
    token_delay: float = Field(default=0.0, ge=0, description="seconds between stream chunks")
    chunk_chars: int = Field(default=4, ge=1, description="characters per stream chunk (~1 token)")
    retry_after: str | None = None
    hang: bool = Field(default=False, description="never answer (until the client gives up)")
    reset: bool = Field(default=False, description="close the connection without an answer")
    drop_after_chunks: int | None = Field(default=None, ge=0, description="stream: cut the connection")
    error_event_after_chunks: int | None = Field(
        default=None, ge=0, description="stream: send an error event"
    )
    reply: str | None = None
    error_message: str | None = None
    include_usage: bool = True
    cost: float | None = Field(default=None, description="usage.cost to report (USD), as OpenRouter does")


class Script(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")

    queue: list[Behaviour] = Field(default_factory=list)
    replace_queue: bool = False
    default: Behaviour | None = None
    replies: list[str] | None = None
    echo: bool | None = None


class FakeState:
    def __init__(
        self,
        *,
        replies: Sequence[str] = (DEFAULT_REPLY,),
        echo: bool = False,
        default: Behaviour | None = None,
        model: str = "fake-model",
    ) -> None:
        self.model = model
        self._initial = (list(replies), echo, default or Behaviour())
        self.reset()

    def reset(self) -> None:
        replies, echo, default = self._initial
        self.replies = list(replies) or [DEFAULT_REPLY]
        self._reply_cycle = itertools.cycle(self.replies)
        self.echo = echo
        self.default = default
        self.queue: deque[Behaviour] = deque()
        self.requests = 0
        self.chat_requests = 0
        self.statuses: dict[str, int] = {}
        self.in_flight = 0
        self.max_in_flight = 0
        self.last: deque[dict[str, Any]] = deque(maxlen=LAST_REQUESTS)

    def apply(self, script: Script) -> None:
        if script.replace_queue:
            self.queue.clear()
        self.queue.extend(script.queue)
        if script.default is not None:
            self.default = script.default
        if script.replies is not None:
            self.replies = list(script.replies) or [DEFAULT_REPLY]
            self._reply_cycle = itertools.cycle(self.replies)
        if script.echo is not None:
            self.echo = script.echo

    def next_behaviour(self) -> Behaviour:
        return self.queue.popleft() if self.queue else self.default

    def reply_for(self, behaviour: Behaviour, body: dict[str, Any]) -> str:
        if behaviour.reply is not None:
            return behaviour.reply
        if self.echo:
            messages = body.get("messages") or []
            users = [m for m in messages if isinstance(m, dict) and m.get("role") == "user"]
            return "".join(message_texts(users[-1:]))
        return next(self._reply_cycle)

    def stats(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "chatRequests": self.chat_requests,
            "statuses": dict(self.statuses),
            "inFlight": self.in_flight,
            "maxInFlight": self.max_in_flight,
            "queued": len(self.queue),
            "lastRequests": list(self.last),
        }


STATE = web.AppKey("state", FakeState)


def _usage(body: dict[str, Any], reply: str) -> dict[str, int]:
    prompt = estimate_input_tokens(body.get("messages"))
    completion = estimate_tokens(reply)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _error(behaviour: Behaviour) -> web.Response:
    headers = {"Retry-After": behaviour.retry_after} if behaviour.retry_after else {}
    message = behaviour.error_message or f"fake provider scripted status {behaviour.status}"
    return web.json_response(
        {"error": {"message": message, "type": "fake_error", "code": str(behaviour.status)}},
        status=behaviour.status,
        headers=headers,
    )


async def _chat(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    state.requests += 1
    state.chat_requests += 1
    try:
        body = json.loads(await request.read())
    except ValueError:
        return web.json_response(
            {"error": {"message": "invalid JSON", "type": "invalid_request_error"}}, status=400
        )
    state.last.append({"path": request.path, "headers": dict(request.headers), "body": body})
    behaviour = state.next_behaviour()
    state.in_flight += 1
    state.max_in_flight = max(state.max_in_flight, state.in_flight)
    try:
        if behaviour.latency:
            await asyncio.sleep(behaviour.latency)
        if behaviour.hang:
            await asyncio.sleep(3600)
        if behaviour.reset:
            if request.transport is not None:
                request.transport.abort()
            return web.Response(status=499)  # never sent: the connection is gone
        key = str(behaviour.status)
        state.statuses[key] = state.statuses.get(key, 0) + 1
        if behaviour.status != 200:
            return _error(behaviour)
        reply = state.reply_for(behaviour, body)
        if body.get("stream"):
            return await _stream(request, body, behaviour, reply)
        if behaviour.token_delay:
            await asyncio.sleep(behaviour.token_delay * max(1, -(-len(reply) // behaviour.chunk_chars)))
        payload: dict[str, Any] = {
            "id": f"chatcmpl-fake-{state.chat_requests}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", state.model),
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": reply}, "finish_reason": "stop"}
            ],
        }
        if behaviour.include_usage:
            payload["usage"] = {
                **_usage(body, reply),
                **({} if behaviour.cost is None else {"cost": behaviour.cost}),
            }
        return web.json_response(payload)
    finally:
        state.in_flight -= 1


def _chunk(ident: str, model: str, delta: dict[str, Any], finish: str | None) -> bytes:
    data = {
        "id": ident,
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return f"data: {json.dumps(data)}\n\n".encode()


async def _stream(
    request: web.Request, body: dict[str, Any], behaviour: Behaviour, reply: str
) -> web.StreamResponse:
    state = request.app[STATE]
    ident = f"chatcmpl-fake-{state.chat_requests}"
    model = str(body.get("model", state.model))
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await resp.prepare(request)
    await resp.write(_chunk(ident, model, {"role": "assistant", "content": ""}, None))
    pieces = [reply[i : i + behaviour.chunk_chars] for i in range(0, len(reply), behaviour.chunk_chars)]
    for n, piece in enumerate(pieces):
        if behaviour.drop_after_chunks is not None and n >= behaviour.drop_after_chunks:
            if request.transport is not None:
                request.transport.abort()
            return resp
        if behaviour.error_event_after_chunks is not None and n >= behaviour.error_event_after_chunks:
            error = {
                "error": {"message": behaviour.error_message or "fake mid-stream error", "type": "fake_error"}
            }
            await resp.write(f"data: {json.dumps(error)}\n\n".encode())
            await resp.write_eof()
            return resp
        if behaviour.token_delay and n:
            await asyncio.sleep(behaviour.token_delay)
        await resp.write(_chunk(ident, model, {"content": piece}, None))
    await resp.write(_chunk(ident, model, {}, "stop"))
    options = body.get("stream_options")
    if behaviour.include_usage and isinstance(options, dict) and options.get("include_usage"):
        usage = {
            "id": ident,
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": model,
            "choices": [],
            "usage": _usage(body, reply),
        }
        await resp.write(f"data: {json.dumps(usage)}\n\n".encode())
    await resp.write(b"data: [DONE]\n\n")
    await resp.write_eof()
    return resp


async def _models(request: web.Request) -> web.Response:
    state = request.app[STATE]
    state.requests += 1
    return web.json_response(
        {"object": "list", "data": [{"id": state.model, "object": "model", "created": 0, "owned_by": "fake"}]}
    )


async def _healthz(_request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def _script(request: web.Request) -> web.Response:
    state = request.app[STATE]
    try:
        script = Script.model_validate(json.loads(await request.read()))
    except ValueError as exc:
        return web.json_response(
            {"error": {"message": str(exc), "type": "invalid_request_error"}}, status=400
        )
    state.apply(script)
    return web.json_response({"queued": len(state.queue)})


async def _stats(request: web.Request) -> web.Response:
    return web.json_response(request.app[STATE].stats())


async def _reset(request: web.Request) -> web.Response:
    request.app[STATE].reset()
    return web.json_response({"status": "reset"})


def create_fake_app(state: FakeState | None = None) -> web.Application:
    app = web.Application()
    app[STATE] = state or FakeState()
    app.router.add_post("/v1/chat/completions", _chat)
    app.router.add_post("/chat/completions", _chat)
    app.router.add_get("/v1/models", _models)
    app.router.add_get("/healthz", _healthz)
    app.router.add_post("/_admin/script", _script)
    app.router.add_get("/_admin/stats", _stats)
    app.router.add_post("/_admin/reset", _reset)
    return app


@dataclass
class RunningFake(RunningServer):
    state: FakeState

    def script(self, *behaviours: Behaviour, replace: bool = True) -> None:
        """Queue behaviours for the next requests (replacing the queue unless ``replace=False``)."""
        self.state.apply(Script(queue=list(behaviours), replace_queue=replace))

    def set_default(self, behaviour: Behaviour) -> None:
        self.state.default = behaviour

    def reset(self) -> None:
        self.state.reset()

    @property
    def chat_requests(self) -> int:
        return self.state.chat_requests


async def start_fake_provider(
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    replies: Sequence[str] = (DEFAULT_REPLY,),
    echo: bool = False,
    default: Behaviour | None = None,
    model: str = "fake-model",
) -> RunningFake:
    """Start a fake provider in the running event loop; ``port=0`` picks a free port."""
    state = FakeState(replies=replies, echo=echo, default=default, model=model)
    runner, bound = await serve(
        create_fake_app(state), host, port, access_log=None, handler_cancellation=True, shutdown_timeout=0.5
    )
    return RunningFake(runner, host, bound, state)


def main(argv: Sequence[str] | None = None) -> int:
    """``stoa fake-model``: serve a fake OpenAI-compatible model until interrupted."""
    parser = argparse.ArgumentParser(
        prog="stoa fake-model", description=__doc__.splitlines()[0] if __doc__ else None
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--model", default="fake-model", help="model id listed by /v1/models")
    parser.add_argument("--reply", action="append", default=None, help="reply text (repeat to cycle)")
    parser.add_argument("--echo", action="store_true", help="reply with the last user message")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds before each response")
    parser.add_argument("--token-delay", type=float, default=0.0, help="seconds between stream chunks")
    parser.add_argument("--status", type=int, default=200, help="HTTP status of every response")
    args = parser.parse_args(argv)
    default = Behaviour(status=args.status, latency=args.latency, token_delay=args.token_delay)
    state = FakeState(
        replies=args.reply or [DEFAULT_REPLY], echo=args.echo, default=default, model=args.model
    )
    with contextlib.suppress(KeyboardInterrupt):
        web.run_app(
            create_fake_app(state),
            host=args.host,
            port=args.port,
            access_log=None,
            print=None,
            handler_cancellation=True,
            shutdown_timeout=1,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
