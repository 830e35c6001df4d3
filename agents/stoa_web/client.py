"""``stoa conversations start|list|follow``: the API's command-line client.

It needs only the API's URL (``--server``) and a bearer token (``--token``, ``--token-file``, or the current
kubeconfig user's token), never kubectl or database access. No ``STOA_*`` variables: every Stoa process
refuses unknown ones of its family, and an agent started from the same shell would. ``follow`` prints
turns and events as they happen and reconnects with ``Last-Event-ID`` when the connection drops, so it
misses nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import textwrap
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

EXIT_OK, EXIT_FAILED, EXIT_ERROR = 0, 1, 2
RECONNECT_SECONDS = (0.5, 1, 2, 4, 8)


class ClientError(Exception):
    """The API answered an error (its Problem message) or could not be reached."""


@dataclass
class Event:
    type: str = "message"
    id: str | None = None
    data: str = ""

    def json(self) -> dict[str, Any]:
        value = json.loads(self.data) if self.data else {}
        return value if isinstance(value, dict) else {}


@dataclass
class SseParser:
    """Server-Sent Events framing (WHATWG): ``feed(line)`` returns an event at each blank line."""

    current: Event = field(default_factory=Event)
    lines: list[str] = field(default_factory=list)

    def feed(self, line: str) -> Event | None:
        if line == "":
            event = Event(self.current.type, self.current.id, "\n".join(self.lines)) if self.lines else None
            self.current, self.lines = Event(), []
            return event
        if line.startswith(":"):
            return None
        key, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if key == "event":
            self.current.type = value
        elif key == "data":
            self.lines.append(value)
        elif key == "id" and "\0" not in value:
            self.current.id = value
        return None


def parse_sse(lines: Iterable[str]) -> list[Event]:
    parser = SseParser()
    return [e for e in (parser.feed(line) for line in lines) if e is not None]


def default_token() -> str | None:
    """The current kubeconfig user's token, if it has one."""
    try:
        from kubernetes import client, config  # noqa: PLC0415 - only when no token was given

        configuration = client.Configuration()
        config.load_kube_config(client_configuration=configuration)
        setting = configuration.auth_settings().get("BearerToken") or {}
        value = str(setting.get("value") or "")
    except Exception:
        return None
    scheme, _, token = value.partition(" ")
    return (token if scheme.lower() == "bearer" else value).strip() or None


class Api:
    def __init__(self, server: str, token: str, session: aiohttp.ClientSession) -> None:
        self.server = server.rstrip("/")
        self.headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
        self.session = session

    async def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        try:
            async with self.session.request(
                method, self.server + path, json=body, headers=self.headers
            ) as resp:
                data = await resp.json(content_type=None)
                if resp.status >= 400:
                    message = data.get("message") if isinstance(data, dict) else None
                    raise ClientError(f"{resp.status} {message or resp.reason}")
                return data if isinstance(data, dict) else {}
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise ClientError(f"cannot reach {self.server}: {exc}") from exc

    async def events(self, path: str, last_id: str | None) -> AsyncIterator[Event]:
        headers = {**self.headers, "Accept": "text/event-stream"}
        if last_id:
            headers["Last-Event-ID"] = last_id
        timeout = aiohttp.ClientTimeout(total=None, sock_read=60)
        async with self.session.get(self.server + path, headers=headers, timeout=timeout) as resp:
            if resp.status == 204:
                return
            if resp.status >= 400:
                data = await resp.json(content_type=None)
                raise ClientError(f"{resp.status} {(data or {}).get('message') or resp.reason}")
            parser = SseParser()
            async for raw in resp.content:
                event = parser.feed(raw.decode().rstrip("\r\n"))
                if event is not None:
                    yield event


def participants(values: list[str]) -> list[dict[str, str]]:
    """``agent[:role]`` -> participant entries (role: pro, con, moderator, member; without one, the
    Agent's own ``spec.role`` applies)."""
    out = []
    for value in values:
        agent, _, role = value.partition(":")
        out.append({"agentRef": agent, "role": role} if role else {"agentRef": agent})
    return out


def _turn(d: dict[str, Any]) -> str:
    head = f"[{d['seq']:>3}] {d['speaker']} ({d['role']})  {d['tokensOut']} tok, pod {d['pod']}"
    text = " ".join(str(d["content"]).split())
    return head + "\n" + textwrap.fill(text, 100, initial_indent="      ", subsequent_indent="      ")


FORMATS: dict[str, Any] = {
    "turn": _turn,
    "phase": lambda d: f"--- phase {d['phase']}" + (f": {d['reason']}" if d.get("reason") else ""),
    "takeover": lambda d: f"--- takeover: {d['agent']} now on {d['toPod']} (was {d['fromPod']})",
    "failover": lambda d: f"--- {d['event']} ({d['policy']}): {d['reason']}",
    "circuit": lambda d: f"--- circuit {d['state']}: {d['policy']}/{d['target']} ({d['reason']})",
    "gap": lambda d: f"--- gap: {d.get('message')}",
    "error": lambda d: f"--- error {d.get('status')}: {d.get('message')}",
    "hello": lambda d: ("--- not shown to you: " + "; ".join(d["omitted"])) if d.get("omitted") else None,
}


def format_event(event: Event) -> str | None:
    formatter = FORMATS.get(event.type)
    return formatter(event.json()) if formatter else None


async def follow(api: Api, namespace: str, name: str) -> int:
    """Print until the stream ends; reconnect with the last id on a dropped connection."""
    path = f"/v1/namespaces/{namespace}/conversations/{name}/events"
    last_id: str | None = None
    attempt = 0
    while True:
        try:
            async for event in api.events(path, last_id):
                attempt = 0
                if event.id:
                    last_id = event.id
                line = format_event(event)
                if line:
                    print(line, flush=True)
                if event.type == "end":
                    return EXIT_OK if event.json().get("phase") == "Succeeded" else EXIT_FAILED
                if event.type == "error":
                    return EXIT_ERROR
            if last_id:  # 204: it had already ended
                return EXIT_OK
        except (aiohttp.ClientError, TimeoutError) as exc:
            delay = RECONNECT_SECONDS[min(attempt, len(RECONNECT_SECONDS) - 1)]
            attempt += 1
            print(
                f"--- connection lost ({exc.__class__.__name__}), reconnecting in {delay}s", file=sys.stderr
            )
            await asyncio.sleep(delay)


def _table(items: list[dict[str, Any]]) -> str:
    rows = [("NAME", "PHASE", "TURNS", "LAST", "COST", "CREATED")]
    for item in items:
        status, meta, spec = item["status"], item["metadata"], item.get("spec") or {}
        rows.append(
            (
                meta["name"],
                status.get("phase") or "",
                f"{status.get('turns', 0)}/{spec.get('maxTurns', '?')}",
                status.get("lastSpeaker") or "",
                f"{float(status.get('costUSD') or 0):.6f}",
                meta.get("creationTimestamp") or "",
            )
        )
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows
    )


async def run(args: argparse.Namespace, token: str) -> int:
    base = f"/v1/namespaces/{args.namespace}/conversations"
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        api = Api(args.server, token, session)
        if args.action == "list":
            print(_table((await api.call("GET", base))["items"]))
            return EXIT_OK
        if args.action == "start":
            spec: dict[str, Any] = {"topic": args.topic, "participants": participants(args.participant)}
            for key, value in (("maxTurns", args.max_turns), ("maxRounds", args.max_rounds)):
                if value is not None:
                    spec[key] = value
            if args.moderator:
                spec["moderator"] = args.moderator
            created = await api.call("POST", base, {"name": args.name, "spec": spec})
            print(f"conversation {args.namespace}/{created['metadata']['name']} created")
            if not args.follow:
                return EXIT_OK
        return await follow(api, args.namespace, args.name)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="stoa conversations", description=__doc__)
    parser.add_argument("--server", required=True, help="the API's URL, e.g. http://127.0.0.1:8080")
    parser.add_argument("--token", help="bearer token (default: the current kubeconfig user's)")
    parser.add_argument("--token-file", type=Path, help="read the bearer token from this file")
    parser.add_argument("-n", "--namespace", default="default")
    sub = parser.add_subparsers(dest="action", required=True)
    sub.add_parser("list", help="list conversations")
    start = sub.add_parser("start", help="create a conversation (a Conversation resource)")
    start.add_argument("name")
    start.add_argument("--topic", required=True)
    start.add_argument(
        "--participant",
        "-p",
        action="append",
        required=True,
        help="agent[:role], role pro|con|moderator|member",
    )
    start.add_argument("--moderator")
    start.add_argument("--max-turns", type=int)
    start.add_argument("--max-rounds", type=int)
    start.add_argument("--follow", "-f", action="store_true", help="then follow it until it ends")
    fol = sub.add_parser("follow", help="print turns and events as they happen, until it ends")
    fol.add_argument("name")
    return parser.parse_args(argv)


def conversations_main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    token = (
        args.token or (args.token_file.read_text().strip() if args.token_file else None) or default_token()
    )
    if not token:
        print(
            "stoa conversations: no token (--token, --token-file, or a kubeconfig user token)",
            file=sys.stderr,
        )
        return EXIT_ERROR
    try:
        return asyncio.run(run(args, token))
    except ClientError as exc:
        print(f"stoa conversations: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return EXIT_ERROR
