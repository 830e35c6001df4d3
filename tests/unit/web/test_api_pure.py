"""``stoa api``'s pure parts: declared access of every route, review bodies, the OpenAPI document, the
gateway view, endpoint discovery, settings and the CLI's SSE parser."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi import FastAPI

from stoa_web.access import (
    Access,
    Check,
    UserInfo,
    access_of,
    access_review,
    check_for,
    decision_from_review,
    denial_message,
    invalid_path_params,
    user_from_review,
)
from stoa_web.app import build_app
from stoa_web.client import parse_sse, participants
from stoa_web.gateways import endpoint_urls
from stoa_web.guard import bearer_token, check_routes
from stoa_web.routes.resources import gateway_view
from stoa_web.settings import ApiSettings, parse_gateways

REPO = Path(__file__).resolve().parents[3]
OPENAPI = REPO / "docs" / "api" / "openapi.json"
EXPECTED_ACCESS = {
    ("GET", "/v1/whoami"): Access("get", None, None),
    ("GET", "/v1/namespaces/{namespace}/conversations"): Access("list", "conversations", "name"),
    ("POST", "/v1/namespaces/{namespace}/conversations"): Access("create", "conversations", None),
    ("GET", "/v1/namespaces/{namespace}/conversations/{name}"): Access("get", "conversations"),
    ("POST", "/v1/namespaces/{namespace}/conversations/{name}/suspend"): Access("patch", "conversations"),
    ("POST", "/v1/namespaces/{namespace}/conversations/{name}/resume"): Access("patch", "conversations"),
    ("POST", "/v1/namespaces/{namespace}/conversations/{name}/stop"): Access("patch", "conversations"),
    ("GET", "/v1/namespaces/{namespace}/conversations/{name}/turns"): Access("get", "conversations"),
    ("GET", "/v1/namespaces/{namespace}/conversations/{name}/events"): Access("get", "conversations"),
    ("GET", "/v1/namespaces/{namespace}/agents"): Access("list", "agents", None),
    ("GET", "/v1/namespaces/{namespace}/agents/{name}"): Access("get", "agents"),
    ("GET", "/v1/namespaces/{namespace}/modelpolicies"): Access("list", "modelpolicies", None),
    ("GET", "/v1/namespaces/{namespace}/modelpolicies/{name}"): Access("get", "modelpolicies"),
}


@pytest.fixture(scope="module")
def app() -> FastAPI:
    return build_app(ApiSettings())


def test_every_route_declares_the_access_it_needs(app: FastAPI) -> None:
    declared = {}
    for route in app.routes:
        path = getattr(route, "path", "")
        if path.startswith("/v1/"):
            for method in getattr(route, "methods", ()):
                declared[(method, path)] = access_of(route.endpoint)  # type: ignore[attr-defined]
    assert set(declared) == set(EXPECTED_ACCESS)
    for key, access in EXPECTED_ACCESS.items():
        found = declared[key]
        assert found is not None
        assert (found.verb, found.resource) == (access.verb, access.resource), key


def test_an_undeclared_route_stops_the_app_from_starting() -> None:
    app = FastAPI()

    @app.get("/v1/secret")
    async def secret() -> dict[str, str]:
        return {}

    with pytest.raises(RuntimeError, match="without a declared access"):
        check_routes(app.routes)


def test_review_bodies_and_answers() -> None:
    user = user_from_review(
        {
            "status": {
                "authenticated": True,
                "user": {"username": "alice", "uid": "u1", "groups": ["dev"], "extra": {"scopes": ["a"]}},
            }
        }
    )
    assert user == UserInfo("alice", "u1", ("dev",), {"scopes": ("a",)})
    assert user_from_review({"status": {"authenticated": False}}) is None
    assert user_from_review({"status": {"authenticated": True, "user": {}}}) is None
    check = check_for(Access("get", "conversations"), {"namespace": "team", "name": "talk"})
    assert check == Check("get", "conversations", "team", "talk")
    body = access_review(user, check)
    assert body["spec"]["resourceAttributes"] == {
        "namespace": "team",
        "verb": "get",
        "group": "stoa.dev",
        "resource": "conversations",
        "name": "talk",
    }
    assert body["spec"]["user"] == "alice"
    assert body["spec"]["extra"] == {"scopes": ["a"]}
    assert decision_from_review({"status": {"allowed": True}}) == (True, "")
    assert decision_from_review({"status": {"allowed": True, "denied": True}})[0] is False
    assert decision_from_review({"status": {"allowed": False, "reason": "no"}}) == (False, "no")
    assert (
        denial_message(user, check)
        == "user 'alice' may not get conversations.stoa.dev 'talk' in namespace 'team'"
    )
    assert check_for(Access("get", None, None), {}) is None


def test_names_and_tokens_are_checked_before_any_review() -> None:
    assert invalid_path_params({"namespace": "team", "name": "a-b"}) is None
    for bad in ("Team", "a_b", "-a", "a" * 64, "a/b", ""):
        assert invalid_path_params({"namespace": bad}) is not None, bad
    assert bearer_token({"headers": [(b"authorization", b"Bearer abc")]}) == "abc"
    assert bearer_token({"headers": [(b"authorization", b"bearer abc ")]}) == "abc"
    assert bearer_token({"headers": [(b"authorization", b"Basic abc")]}) is None
    assert bearer_token({"headers": [(b"authorization", b"Bearer ")]}) is None
    assert bearer_token({"headers": [(b"authorization", b"Bearer " + b"x" * 20000)]}) is None
    assert bearer_token({"headers": []}) is None


def test_openapi_document_is_generated_from_the_crd_models_and_committed(app: FastAPI) -> None:
    doc = app.openapi()
    schemas = doc["components"]["schemas"]
    for model in ("ConversationSpec", "ConversationStatus", "AgentSpec", "AgentStatus", "ModelPolicySpec"):
        assert model in schemas, model
    assert schemas["ConversationSpec"]["properties"]["maxTurns"]["maximum"] == 200
    events = doc["paths"]["/v1/namespaces/{namespace}/conversations/{name}/events"]["get"]
    assert set(events["responses"]["200"]["content"]["text/event-stream"]["x-stoa-events"]) == {
        "hello",
        "turn",
        "phase",
        "takeover",
        "failover",
        "circuit",
        "gap",
        "end",
        "error",
    }
    assert doc["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    committed = json.loads(OPENAPI.read_text())
    where = OPENAPI.relative_to(REPO)
    assert committed == json.loads(json.dumps(doc)), f"{where} is stale: regenerate it with `make openapi`"


def test_gateway_view_merges_replicas() -> None:
    replies = [
        {
            "policies": {
                "debate": {
                    "spentTodayUSD": 0.5,
                    "targets": {
                        "primary": {"circuit": "closed", "inFlight": 1, "ewmaLatencySeconds": 0.2},
                        "backup": {"circuit": "closed", "lastSuccessTime": "2026-01-01T10:00:01Z"},
                    },
                }
            }
        },
        {
            "policies": {
                "debate": {
                    "spentTodayUSD": 0.25,
                    "targets": {
                        "primary": {
                            "circuit": "open",
                            "inFlight": 2,
                            "ewmaLatencySeconds": 0.9,
                            "lastError": "status 503",
                            "lastErrorTime": "2026-01-01T10:00:02Z",
                        },
                        "backup": {"circuit": "closed", "lastSuccessTime": "2026-01-01T10:00:03Z"},
                    },
                }
            }
        },
    ]
    audit = [
        {
            "ts": "2026-01-01T10:00:02+00:00",
            "event": "breaker_opened",
            "policy": "debate",
            "target": "primary",
        },
        {"ts": "2026-01-01T10:00:01+00:00", "event": "fallback", "policy": "debate", "target": "backup"},
        {"ts": "2026-01-01T10:00:01+00:00", "event": "config_reloaded", "policy": "*"},
        {"ts": "2026-01-01T10:00:01+00:00", "event": "fallback", "policy": "other", "target": "x"},
    ]
    view = gateway_view("debate", ["primary", "backup"], replies, ["http://10.0.0.9:8080"], audit)
    primary, backup = view.targets
    assert (primary.circuit, primary.in_flight, primary.latency_seconds) == ("open", 3, 0.9)
    assert primary.last_error == "status 503"
    assert backup.last_success_time == "2026-01-01T10:00:03Z"
    assert view.spent_today_usd == 0.75
    assert view.replicas == 2
    assert view.unreachable == ["http://10.0.0.9:8080"]
    assert [e.event for e in view.recent] == ["fallback", "breaker_opened"]


def test_gateway_replicas_from_endpoint_slices_and_fixed_urls() -> None:
    slices = [
        {
            "ports": [{"name": "http", "port": 8080}, {"name": "metrics", "port": 9090}],
            "endpoints": [
                {"addresses": ["10.0.0.1"], "conditions": {"ready": True}},
                {"addresses": ["10.0.0.2"], "conditions": {"ready": False}},
                {"addresses": ["fd00::3"]},
            ],
        },
        {"ports": [{"name": "other", "port": 1}], "endpoints": [{"addresses": ["10.0.0.4"]}]},
    ]
    assert endpoint_urls(slices, "http") == ["http://10.0.0.1:8080", "http://[fd00::3]:8080"]
    assert parse_gateways("team=http://127.0.0.1:1,http://127.0.0.1:2/;b=https://x") == {
        "team": ["http://127.0.0.1:1", "http://127.0.0.1:2"],
        "b": ["https://x"],
    }
    for bad in ("team", "=http://x", "team=ftp://x", "team="):
        with pytest.raises(ValueError, match="gateways entry"):
            parse_gateways(bad)


def test_cli_parses_server_sent_events() -> None:
    lines = [
        "retry: 2000",
        "",
        "event: hello",
        'data: {"a": 1}',
        "",
        ": keepalive",
        "",
        "event: turn",
        "id: abc",
        'data: {"seq": 1,',
        'data: "x": 2}',
        "",
        "data: plain",
        "",
    ]
    events = parse_sse(lines)
    assert [(e.type, e.id) for e in events] == [("hello", None), ("turn", "abc"), ("message", None)]
    assert events[1].json() == {"seq": 1, "x": 2}


def test_a_participant_without_a_role_takes_its_agents() -> None:
    """`stoa conversations start -p ada -p ben:con`: no role for ada, so its Agent's spec.role applies."""
    assert participants(["ada", "ben:con"]) == [{"agentRef": "ada"}, {"agentRef": "ben", "role": "con"}]
