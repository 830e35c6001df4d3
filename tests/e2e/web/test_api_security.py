"""``stoa api`` security against the real API server: every way in without the right token or rights is
refused with the status and message a user can act on, before any body is read, and nothing is written.

The API runs as its chart ServiceAccount (it can review tokens and access, nothing on stoa.dev), callers
are ServiceAccounts with the chart's viewer/editor ClusterRoles bound (or not) in the team namespace.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from stoa_web.gateways import Gateways
from stoa_web.kube import Kube, load_credentials
from stoa_web.settings import ApiSettings
from tests.e2e.web import harness
from tests.e2e.web.conftest import Users, conversation_body
from tests.e2e.web.harness import API_ROLE, ApiServer

GROUP, VERSION = "stoa.dev", "v1alpha1"


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def call(
    http: aiohttp.ClientSession,
    api: ApiServer,
    method: str,
    path: str,
    token: str | None = None,
    **kwargs: Any,
) -> tuple[int, dict[str, Any], dict[str, str]]:
    headers = dict(kwargs.pop("headers", {}))
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    async with http.request(method, api.url + path, headers=headers, **kwargs) as resp:
        text = await resp.text()
        try:
            body = json.loads(text) if text else {}
        except ValueError:
            body = {"raw": text}
        return resp.status, body, dict(resp.headers)


def problem(body: dict[str, Any], status: int) -> str:
    """The API's error shape, checked; returns the message."""
    assert body.get("status") == status, body
    assert isinstance(body.get("reason"), str), body
    assert body["reason"], body
    assert isinstance(body.get("message"), str), body
    assert body["message"], body
    return str(body["message"])


def exists(admin: client.ApiClient, ns: str, name: str) -> bool:
    try:
        client.CustomObjectsApi(admin).get_namespaced_custom_object(GROUP, VERSION, ns, "conversations", name)
    except ApiException as exc:
        if exc.status == 404:
            return False
        raise
    return True


async def test_no_anonymous_access(
    http: aiohttp.ClientSession, api_server: ApiServer, team: str, admin: client.ApiClient
) -> None:
    base = f"/v1/namespaces/{team}/conversations"
    status, body, headers = await call(http, api_server, "GET", base)
    assert status == 401
    assert "bearer token is required" in problem(body, 401)
    assert headers["WWW-Authenticate"].startswith("Bearer")
    for authorization in ("Bearer not-a-token", "Basic dXNlcjpwYXNz", "Bearer", "bearer  "):
        status, body, _ = await call(http, api_server, "GET", base, headers={"Authorization": authorization})
        assert status == 401, authorization
        problem(body, 401)
    status, body, _ = await call(http, api_server, "GET", "/openapi.json")
    assert status == 401
    # A real token with one character of its signature changed.
    harness.service_account(admin, team, "someone")
    real = harness.token(admin, team, "someone")
    assert (await call(http, api_server, "GET", "/v1/whoami", real))[0] == 200
    forged = real[:-2] + ("A" if real[-2] != "A" else "B") + real[-1]
    status, body, _ = await call(http, api_server, "GET", "/v1/whoami", forged)
    assert status == 401
    assert "does not accept this token" in problem(body, 401)
    # What needs no token holds no data: health, and the console's static files.
    assert (await call(http, api_server, "GET", "/healthz"))[0] == 200
    async with http.get(api_server.url + "/") as resp:
        assert resp.status == 200
        assert "default-src 'self'" in resp.headers["Content-Security-Policy"]
        assert resp.headers["X-Frame-Options"] == "DENY"


async def test_denied_reads_name_the_verb_and_object(
    http: aiohttp.ClientSession, api_server: ApiServer, team: str, users: Users
) -> None:
    base = f"/v1/namespaces/{team}"
    who = users.names["nobody"]
    denied = {
        f"{base}/conversations": f"may not list conversations.stoa.dev in namespace '{team}'",
        f"{base}/conversations/talk": f"may not get conversations.stoa.dev 'talk' in namespace '{team}'",
        f"{base}/conversations/talk/turns": "may not get conversations.stoa.dev 'talk'",
        f"{base}/conversations/talk/events": "may not get conversations.stoa.dev 'talk'",
        f"{base}/agents": "may not list agents.stoa.dev",
        f"{base}/agents/team-a": "may not get agents.stoa.dev 'team-a'",
        f"{base}/modelpolicies": "may not list modelpolicies.stoa.dev",
        f"{base}/modelpolicies/debate": "may not get modelpolicies.stoa.dev 'debate'",
    }
    for path, words in denied.items():
        status, body, _ = await call(http, api_server, "GET", path, users.nobody)
        assert status == 403, (path, body)
        message = problem(body, 403)
        assert f"user '{who}'" in message, message
        assert words in message, message
    # May get one Conversation, not list them; the transcript needs the same get.
    status, body, _ = await call(http, api_server, "GET", f"{base}/conversations", users.getter)
    assert status == 403
    assert "may not list conversations" in problem(body, 403)
    status, body, _ = await call(http, api_server, "GET", f"{base}/conversations/absent/turns", users.getter)
    assert status == 404  # allowed to ask; the API server says it does not exist
    assert "not found" in problem(body, 404)
    assert (await call(http, api_server, "GET", f"{base}/agents", users.viewer))[0] == 200


async def test_denied_writes_change_nothing(
    http: aiohttp.ClientSession, api_server: ApiServer, team: str, users: Users, admin: client.ApiClient
) -> None:
    base = f"/v1/namespaces/{team}/conversations"
    for token, who in ((users.viewer, "viewer"), (users.nobody, "nobody"), (users.getter, "getter")):
        status, body, _ = await call(http, api_server, "POST", base, token, json=conversation_body("denied"))
        assert status == 403, who
        assert f"may not create conversations.stoa.dev in namespace '{team}'" in problem(body, 403)
    assert not exists(admin, team, "denied")
    status, _, _ = await call(http, api_server, "POST", base, users.editor, json=conversation_body("kept"))
    assert status == 201
    for action in ("suspend", "resume", "stop"):
        status, body, _ = await call(http, api_server, "POST", f"{base}/kept/{action}", users.viewer)
        assert status == 403, action
        assert "may not patch conversations.stoa.dev 'kept'" in problem(body, 403)
    kept = client.CustomObjectsApi(admin).get_namespaced_custom_object(
        GROUP, VERSION, team, "conversations", "kept"
    )
    assert kept["spec"].get("suspend") is False
    assert kept["spec"].get("stop") is False
    assert kept["metadata"]["generation"] == 1


async def test_a_token_from_another_namespace_reaches_only_its_own(
    http: aiohttp.ClientSession, api_server: ApiServer, team: str, users: Users, admin: client.ApiClient
) -> None:
    mine = f"/v1/namespaces/{users.outsider_namespace}/conversations"
    theirs = f"/v1/namespaces/{team}/conversations"
    assert (await call(http, api_server, "GET", mine, users.outsider))[0] == 200
    for method, path, body in (
        ("GET", theirs, None),
        ("GET", f"{theirs}/kept", None),
        ("GET", f"{theirs}/kept/turns", None),
        ("GET", f"{theirs}/kept/events", None),
        ("POST", theirs, conversation_body("intruder")),
        ("POST", f"{theirs}/kept/stop", None),
    ):
        status, reply, _ = await call(http, api_server, method, path, users.outsider, json=body)
        assert status == 403, (method, path, reply)
        assert users.names["outsider"] in problem(reply, 403)
    assert not exists(admin, team, "intruder")


async def test_malformed_and_oversized_requests(
    http: aiohttp.ClientSession, api_server: ApiServer, team: str, users: Users, admin: client.ApiClient
) -> None:
    base = f"/v1/namespaces/{team}/conversations"
    json_headers = {"Content-Type": "application/json"}
    cases: list[tuple[Any, int, str]] = [
        (b"{not json", 400, "not valid JSON"),
        (b"[]", 422, "body"),
        (json.dumps({"name": "x"}).encode(), 422, "spec"),
        (json.dumps({**conversation_body("Bad_Name")}).encode(), 422, "name"),
        (json.dumps({**conversation_body("ok"), "extra": 1}).encode(), 422, "extra"),
        (json.dumps({"name": "p", "spec": {"topic": "t", "participants": []}}).encode(), 422, "participants"),
        (
            json.dumps(
                {
                    "name": "dup",
                    "spec": {"topic": "t", "participants": [{"agentRef": "a"}, {"agentRef": "a"}]},
                }
            ).encode(),
            422,
            "participants listed twice",
        ),
    ]
    for raw, status, words in cases:
        got, body, _ = await call(
            http, api_server, "POST", base, users.editor, data=raw, headers=json_headers
        )
        assert got == status, (raw, body)
        assert words in json.dumps(body), (raw, body)
    # Authorization comes before parsing: who may not create learns nothing about the body.
    got, body, _ = await call(
        http, api_server, "POST", base, users.viewer, data=b"{not json", headers=json_headers
    )
    assert got == 403
    # Oversized: announced (Content-Length) or streamed (chunked), both refused without reading it all.
    big = json.dumps({"name": "big", "spec": {"topic": "x" * 200_000, "participants": [{"agentRef": "a"}]}})
    got, body, _ = await call(
        http, api_server, "POST", base, users.editor, data=big.encode(), headers=json_headers
    )
    assert got == 413
    assert "over the limit of 65536" in problem(body, 413)

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(20):
            yield b" " * 8192

    got, body, _ = await call(
        http, api_server, "POST", base, users.editor, data=chunks(), headers=json_headers
    )
    assert got == 413
    problem(body, 413)
    assert not exists(admin, team, "big")
    # Bad names and parameters in the path or query, and a forged Last-Event-ID.
    got, body, _ = await call(http, api_server, "GET", "/v1/namespaces/Bad_NS/conversations", users.editor)
    assert got == 400
    assert "not a valid Kubernetes name" in problem(body, 400)
    got, body, _ = await call(http, api_server, "GET", f"{base}/kept/turns?limit=0", users.editor)
    assert got == 422
    got, body, _ = await call(
        http, api_server, "GET", f"{base}/kept/events", users.editor, headers={"Last-Event-ID": "eyJ2IjoyfQ"}
    )
    assert got == 400
    assert "Last-Event-ID" in problem(body, 400)
    got, body, _ = await call(http, api_server, "DELETE", f"{base}/kept", users.editor)
    assert got == 405
    got, body, _ = await call(http, api_server, "GET", "/v1/nothing-here", users.editor)
    assert got == 404
    # The API server's own validation (CEL) is relayed too: a stopped conversation stays stopped.
    assert (await call(http, api_server, "POST", f"{base}/kept/stop", users.editor))[0] == 200
    with pytest.raises(ApiException) as refused:
        client.CustomObjectsApi(admin).patch_namespaced_custom_object(
            GROUP, VERSION, team, "conversations", "kept", {"spec": {"stop": False}}
        )
    assert refused.value.status == 422
    assert "cannot be started again" in str(refused.value.body)


async def test_writes_reach_the_api_server_as_the_caller(
    http: aiohttp.ClientSession,
    *,
    api_server: ApiServer,
    team: str,
    users: Users,
    admin: client.ApiClient,
    api_namespace: str,
) -> None:
    """The API's own identity may not create a Conversation at all, so a create through the API that
    succeeds was made with the caller's token (no impersonation rights either)."""
    authz = client.AuthorizationV1Api(admin)
    api_user = f"system:serviceaccount:{api_namespace}:{API_ROLE}"
    for verb, resource, group in (
        ("create", "conversations", GROUP),
        ("patch", "conversations", GROUP),
        ("get", "conversations", GROUP),
        ("impersonate", "users", ""),
        ("impersonate", "serviceaccounts", ""),
        ("list", "secrets", ""),
    ):
        review = authz.create_subject_access_review(
            {
                "spec": {
                    "user": api_user,
                    "groups": ["system:serviceaccounts", "system:authenticated"],
                    "resourceAttributes": {
                        "namespace": team,
                        "verb": verb,
                        "resource": resource,
                        "group": group,
                    },
                }
            }
        )
        assert review.status.allowed is False, (verb, resource)
    status, body, _ = await call(
        http,
        api_server,
        "POST",
        f"/v1/namespaces/{team}/conversations",
        users.editor,
        json=conversation_body("mine"),
    )
    assert status == 201, body
    assert body["metadata"]["name"] == "mine"
    assert body["spec"]["topic"] == "AI and jobs"
    # The API server refused what the caller may not do even where the API's check passed: a name clash.
    status, body, _ = await call(
        http,
        api_server,
        "POST",
        f"/v1/namespaces/{team}/conversations",
        users.editor,
        json=conversation_body("mine"),
    )
    assert status == 409
    assert "already exists" in problem(body, 409)
    assert api_server.metric("stoa_api_denied_total", status="403") > 0


async def test_gateway_replicas_are_found_through_endpoint_slices(
    api_kubeconfig: Path, *, admin: client.ApiClient, users: Users
) -> None:
    """In a cluster the API finds a namespace's gateway replicas in the EndpointSlices of the
    ``stoa-gateway`` Service, with its own identity (the chart's ``list endpointslices``). Only the lookup is
    tested here: the addresses are not contacted."""
    ns = users.outsider_namespace
    slice_ = {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"name": "stoa-gateway-abc", "labels": {"kubernetes.io/service-name": "stoa-gateway"}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": [
            {"addresses": ["10.1.2.3"], "conditions": {"ready": True}},
            {"addresses": ["10.1.2.4"], "conditions": {"ready": False}},
        ],
    }
    other = {**slice_, "metadata": {"name": "unrelated", "labels": {"kubernetes.io/service-name": "web"}}}
    discovery = client.DiscoveryV1Api(admin)
    discovery.create_namespaced_endpoint_slice(ns, slice_)
    discovery.create_namespaced_endpoint_slice(ns, other)
    kube = Kube(load_credentials(str(api_kubeconfig)))
    await kube.start()
    gateways = Gateways(kube, ApiSettings())
    try:
        assert await gateways.replicas(ns) == ["http://10.1.2.3:8080"]
    finally:
        await kube.close()
