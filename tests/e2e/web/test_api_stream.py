"""Conversation event streams on the real product (tests/e2e/web/stack.py): a debate started through the
API streams every turn once across a dropped connection, with the takeover and failovers of its run;
clients that vanish leave nothing behind; a caller whose access is revoked is cut off."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import asyncpg
import pytest
from kubernetes import client

from stoa_web.client import Event, SseParser
from tests.e2e.connections import Connections
from tests.e2e.web import harness
from tests.e2e.web.conftest import Users, conversation_body
from tests.e2e.web.harness import VIEWER, ApiServer
from tests.e2e.web.stack import Stack, await_for


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, sock_read=30)) as session:
        yield session


def auth(token: str, **extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", **extra}


@dataclass
class Reader:
    """One SSE connection: events as they come (parsed as the CLI parses them)."""

    resp: aiohttp.ClientResponse
    parser: SseParser = field(default_factory=SseParser)

    async def next(self, within: float = 60) -> Event:
        while True:
            raw = await asyncio.wait_for(self.resp.content.readline(), within)
            if not raw:
                raise EOFError("stream ended")
            event = self.parser.feed(raw.decode().rstrip("\r\n"))
            if event is not None:
                return event


@contextlib.asynccontextmanager
async def events(
    http: aiohttp.ClientSession, api: ApiServer, ns: str, name: str, token: str, *, last_id: str | None = None
) -> AsyncIterator[Reader]:
    headers = auth(token, Accept="text/event-stream")
    if last_id:
        headers["Last-Event-ID"] = last_id
    async with http.get(f"{api.url}/v1/namespaces/{ns}/conversations/{name}/events", headers=headers) as resp:
        assert resp.status == 200, await resp.text()
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        yield Reader(resp)


async def create(
    http: aiohttp.ClientSession, api: ApiServer, ns: str, token: str, body: dict[str, Any]
) -> None:
    async with http.post(
        f"{api.url}/v1/namespaces/{ns}/conversations", json=body, headers=auth(token)
    ) as resp:
        assert resp.status == 201, await resp.text()


async def active_pod(conn: Connections, ns: str, agent: str) -> str | None:
    db = await asyncpg.connect(conn.postgres_dsn)
    try:
        pod = await db.fetchval("SELECT pod FROM stoa.agent_activity WHERE agent = $1", f"{ns}/{agent}")
    finally:
        await db.close()
    return str(pod) if pod else None


async def test_a_debate_streams_every_turn_once_across_a_dropped_connection(
    http: aiohttp.ClientSession, *, api_server: ApiServer, stack: Stack, team: str, users: Users
) -> None:
    name = f"live-{uuid.uuid4().hex[:5]}"
    body = conversation_body(name)
    body["spec"] = {**body["spec"], "maxTurns": 13, "maxRounds": 4}  # type: ignore[dict-item]
    await create(http, api_server, team, users.editor, body)
    seen: list[Event] = []
    last_id = None
    async with events(http, api_server, team, name, users.editor) as reader:
        hello = await reader.next()
        assert hello.type == "hello"
        assert hello.json()["omitted"] == []
        assert hello.json()["runtimeName"] == f"{team}/{name}"
        while len([e for e in seen if e.type == "turn"]) < 3:
            event = await reader.next()
            seen.append(event)
            last_id = event.id or last_id
    # Connection dropped after turn 3. Meanwhile: team-b's active replica is killed, the primary fails.
    victim = await await_for(lambda: active_pod(stack.conn, team, "team-b"), 30, "team-b active")
    assert stack.kill(victim)
    stack.fail_primary()
    try:
        async with events(http, api_server, team, name, users.editor, last_id=last_id) as reader:
            assert (await reader.next()).type == "hello"
            while True:
                event = await reader.next(90)
                seen.append(event)
                if event.type in ("end", "error"):
                    break
    finally:
        stack.heal_primary()
    assert seen[-1].type == "end", seen[-1]
    assert seen[-1].json()["phase"] == "Succeeded", seen[-1]
    turns = [e.json() for e in seen if e.type == "turn"]
    assert [t["seq"] for t in turns] == list(range(1, 14)), "\n".join(
        f"{e.type} {e.data[:200]}" for e in seen
    )
    # Exactly what the store holds, page by page.
    stored: list[dict[str, Any]] = []
    after = 0
    while True:
        async with http.get(
            f"{api_server.url}/v1/namespaces/{team}/conversations/{name}/turns",
            params={"after": str(after), "limit": "4"},
            headers=auth(users.viewer),
        ) as resp:
            assert resp.status == 200
            page = await resp.json()
        stored += page["items"]
        if page["nextAfter"] is None:
            break
        after = page["nextAfter"]
    assert [(t["seq"], t["content"], t["pod"]) for t in stored] == [
        (t["seq"], t["content"], t["pod"]) for t in turns
    ]
    phases = [e.json()["phase"] for e in seen if e.type == "phase"]
    assert phases[-1] == "Succeeded"
    takeovers = [e.json() for e in seen if e.type == "takeover"]
    assert any(t["agent"] == "team-b" and t["fromPod"] == victim for t in takeovers), takeovers
    failovers = [e.json() for e in seen if e.type == "failover"]
    assert failovers, ([e.type for e in seen], stack.audit()[-5:])
    assert all(f["conversation"] == f"{team}/{name}" for f in failovers)
    assert any(f["event"] == "fallback" and "primary" in f["reason"] for f in failovers)
    circuits = [e.json() for e in seen if e.type == "circuit"]
    assert any(c["target"] == "primary" and c["state"] == "open" for c in circuits), circuits
    # Every event after the drop came once: nothing of the first connection was sent again.
    ids = [e.id for e in seen if e.id]
    assert len(ids) == len(set(ids))
    # A reconnect after the end is told there is nothing more (EventSource then stops).
    async with http.get(
        f"{api_server.url}/v1/namespaces/{team}/conversations/{name}/events",
        headers=auth(users.editor, **{"Last-Event-ID": ids[-1]}),
    ) as resp:
        assert resp.status == 204


async def test_clients_that_disconnect_leave_nothing_behind(
    http: aiohttp.ClientSession, *, api_server: ApiServer, stack: Stack, team: str, users: Users
) -> None:
    name = f"idle-{uuid.uuid4().hex[:5]}"
    body = conversation_body(name)
    body["spec"] = {**body["spec"], "suspend": True}  # type: ignore[dict-item]
    await create(http, api_server, team, users.editor, body)
    ended_before = api_server.metric("stoa_api_event_streams_ended_total", why="client")
    url = f"{api_server.url}/v1/namespaces/{team}/conversations/{name}/events"
    responses = []
    for _ in range(12):
        resp = await http.get(url, headers=auth(users.viewer, Accept="text/event-stream"))
        assert resp.status == 200
        await resp.content.readline()  # the stream is open
        responses.append(resp)
    await await_for(lambda: api_server.metric("stoa_api_event_streams") >= 12, 10, "12 open streams")
    for i, resp in enumerate(responses):
        if i % 2:
            resp.close()  # drop the TCP connection mid-stream
        else:
            resp.release()
    await await_for(lambda: api_server.metric("stoa_api_event_streams") == 0, 20, "no open stream")
    assert api_server.metric("stoa_api_event_streams_ended_total", why="client") - ended_before == 12
    # No database connection stays busy or inside a transaction for the streams that went away.
    db = await asyncpg.connect(stack.conn.postgres_dsn)
    try:
        rows = await db.fetch(
            "SELECT state FROM pg_stat_activity"
            " WHERE application_name = 'stoa-api' AND datname = current_database()"
        )
    finally:
        await db.close()
    assert len(rows) <= 8
    assert all(r["state"] == "idle" for r in rows), rows
    async with http.get(
        f"{api_server.url}/v1/namespaces/{team}/conversations", headers=auth(users.viewer)
    ) as resp:
        assert resp.status == 200


async def test_a_stream_ends_when_access_is_revoked(
    http: aiohttp.ClientSession, *, api_server: ApiServer, admin: client.ApiClient, team: str, users: Users
) -> None:
    name = f"held-{uuid.uuid4().hex[:5]}"
    body = conversation_body(name)
    body["spec"] = {**body["spec"], "suspend": True}  # type: ignore[dict-item]
    await create(http, api_server, team, users.editor, body)
    harness.service_account(admin, team, "temp")
    binding = harness.bind(admin, team, team, "temp", VIEWER)
    token = harness.token(admin, team, "temp")
    # The getter may read the conversation but neither its agents nor its policy: told, not shown.
    async with events(http, api_server, team, name, users.getter) as reader:
        omitted = (await reader.next()).json()["omitted"]
        assert any("takeovers of team-a" in o for o in omitted), omitted
    async with events(http, api_server, team, name, token) as reader:
        assert (await reader.next()).type == "hello"
        # Pending until the operator saw its ModelPolicy served (it holds a start until then), then held.
        phases: list[str] = []
        while phases[-1:] != ["Suspended"] and len(phases) < 5:
            event = await reader.next()
            assert event.type == "phase", event
            phases.append(event.json()["phase"])
        assert phases[-1] == "Suspended", phases
        assert set(phases[:-1]) <= {"Pending"}, phases
        client.RbacAuthorizationV1Api(admin).delete_namespaced_role_binding(binding, team)
        event = await reader.next(30)  # re-checked every 3 s, past the 5 s review cache
        assert event.type == "error", event
        assert event.json()["status"] == 403
        assert "may no longer get conversations.stoa.dev" in event.json()["message"]
        with pytest.raises(EOFError):
            await reader.next(10)
    assert api_server.metric("stoa_api_event_streams_ended_total", why="unauthorized") >= 1
