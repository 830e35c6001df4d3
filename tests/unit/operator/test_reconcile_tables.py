"""The reconciles against fakes of their adapters: observed -> desired (what is applied) -> status.

The e2e tests run the same functions against a real API server; these tables pin every branch cheaply.
"""

from __future__ import annotations

from typing import Any

import pytest

from stoa_api.status import AgentShare, AgentStatus, ConversationStatus
from stoa_gateway.policy import ModelPolicySpec, policy_hash
from stoa_operator.reconcile.agent import reconcile_agent
from stoa_operator.reconcile.context import Context, finish
from stoa_operator.reconcile.conversation import reconcile_conversation
from stoa_operator.reconcile.modelpolicy import reconcile_model_policy
from stoa_operator.settings import OperatorSettings
from tests.unit.operator.fakes import FakeKube, FakeRuntime

NS = "team"
API = "stoa.dev/v1alpha1"
NOW = "2026-01-01T00:00:00Z"


def _ctx(kube: FakeKube, runtime: FakeRuntime, probe: dict[str, Any] | None = None) -> Context:
    return Context(
        kube=kube,
        runtime=runtime,
        settings=OperatorSettings(agent_image="stoa:1", gateway_image="stoa:1"),
        clock=lambda: NOW,
        gateway_probe=lambda _url, _timeout: probe,
    )


def _conditions(status: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}


def _agent(**spec: Any) -> dict[str, Any]:
    base = {"role": "pro", "persona": "Argue for.", "modelPolicyRef": {"name": "models"}}
    return {
        "apiVersion": API,
        "kind": "Agent",
        "metadata": {"name": "ada", "namespace": NS, "uid": "uid-ada", "generation": 2},
        "spec": base | spec,
    }


def _policy(name: str = "models", **spec: Any) -> dict[str, Any]:
    base = {"targets": [{"name": "a", "baseURL": "http://a/v1", "model": "m"}]}
    return {
        "apiVersion": API,
        "kind": "ModelPolicy",
        "metadata": {"name": name, "namespace": NS, "uid": f"uid-{name}", "generation": 1},
        "spec": base | spec,
    }


def _conversation(uid: str = "4a1c4d43-0000-4000-8000-000000000001") -> dict[str, Any]:
    return {
        "apiVersion": API,
        "kind": "Conversation",
        "metadata": {"name": "debate", "namespace": NS, "uid": uid, "generation": 1},
        "spec": {"topic": "AI", "participants": [{"agentRef": "ada"}], "maxTurns": 4},
    }


CONNECTIONS = {"rabbitmqUrl": "amqp://mq/", "postgresDsn": "postgresql://db/x"}
RUNTIME_AGENT = AgentStatus(
    active_pod="agent-ada-1",
    previous_pod="agent-ada-0",
    takeovers=1,
    turns_handled=7,
    tokens_in=700,
    tokens_out=210,
    cost_usd=0.00042,
    unpriced_turns=1,
)


@pytest.mark.parametrize(
    ("observed", "applied", "ready", "message"),
    [
        (
            [],
            [],
            ("False", "MissingReference"),
            "ModelPolicy models not found; Secret stoa-connections not found",
        ),
        (["policy"], [], ("False", "MissingReference"), "Secret stoa-connections not found"),
        (["policy", "secret"], ["ServiceAccount", "Service", "Deployment"], ("False", "Unavailable"), ""),
        (
            ["policy", "secret", "rolled-out"],
            ["ServiceAccount", "Service", "Deployment"],
            ("True", "Available"),
            "",
        ),
    ],
)
def test_agent_table(observed: list[str], applied: list[str], ready: tuple[str, str], message: str) -> None:
    kube, runtime = FakeKube(), FakeRuntime(agents={(NS, "ada"): RUNTIME_AGENT})
    if "policy" in observed:
        kube.add(_policy())
    if "secret" in observed:
        kube.secret(NS, "stoa-connections", CONNECTIONS)
    if "rolled-out" in observed:
        deployment = {"name": "agent-ada", "namespace": NS}
        kube.add({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": deployment, "spec": {}})
        kube.set_status(
            "apps/v1",
            "Deployment",
            NS,
            "agent-ada",
            {"observedGeneration": 9, "updatedReplicas": 2, "readyReplicas": 2, "availableReplicas": 2},
        )
    kube.add(_agent())
    outcome = reconcile_agent(_ctx(kube, runtime), kube.body(API, "Agent", NS, "ada"))
    assert [m["kind"] for m in kube.applied] == applied  # blocked: nothing (re)applied
    assert outcome.written
    status = kube.body(API, "Agent", NS, "ada")["status"]
    assert _conditions(status)["Ready"] == ready
    assert status["observedGeneration"] == 2
    assert status["queue"] == "stoa.agent.team.ada"
    if message:
        assert next(c for c in status["conditions"] if c["type"] == "Ready")["message"] == message
        assert "activePod" not in status  # the runtime is not read while blocked
    else:
        # The runtime's part exactly as the runtime reported it.
        for key, value in RUNTIME_AGENT.model_dump(by_alias=True, exclude_unset=True).items():
            assert status[key] == value
        assert _conditions(status)["RuntimeSynced"] == ("True", "Synced")
    if "rolled-out" in observed:
        assert (status["readyReplicas"], status["standbyReplicas"]) == (2, 1)


def test_agent_deployment_carries_the_fallbacks_and_no_service_links() -> None:
    kube = FakeKube()
    kube.add(_policy())
    kube.add(_policy("cheap"))
    kube.secret(NS, "stoa-connections", CONNECTIONS)
    kube.add(_agent(fallbackPolicies=[{"name": "cheap"}]))
    reconcile_agent(_ctx(kube, FakeRuntime()), kube.body(API, "Agent", NS, "ada"))
    deployment = kube.get("apps/v1", "Deployment", NS, "agent-ada")
    assert deployment is not None
    pod = deployment["spec"]["template"]["spec"]
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    assert env["STOA_MODEL_FALLBACKS"] == "cheap"
    assert env["STOA_MODEL_BASE_URL"] == "http://stoa-gateway.team.svc:8080/v1"
    assert pod["enableServiceLinks"] is False


def test_agent_runtime_unavailable_keeps_the_last_runtime_fields_and_says_why() -> None:
    kube, runtime = FakeKube(), FakeRuntime(agents={(NS, "ada"): RUNTIME_AGENT})
    kube.add(_policy())
    kube.secret(NS, "stoa-connections", CONNECTIONS)
    kube.add(_agent())
    ctx = _ctx(kube, runtime)
    reconcile_agent(ctx, kube.body(API, "Agent", NS, "ada"))
    runtime.unavailable = "PostgreSQL unreachable: connection refused"
    outcome = reconcile_agent(ctx, kube.body(API, "Agent", NS, "ada"))
    status = kube.body(API, "Agent", NS, "ada")["status"]
    assert outcome.written
    assert _conditions(status)["RuntimeSynced"] == ("False", "RuntimeUnavailable")
    assert status["activePod"] == "agent-ada-1"  # merge patch: not overwritten with nothing
    assert status["costUSD"] == RUNTIME_AGENT.cost_usd


def test_status_is_written_only_when_it_changed() -> None:
    kube, runtime = FakeKube(), FakeRuntime(agents={(NS, "ada"): RUNTIME_AGENT})
    kube.add(_policy())
    kube.secret(NS, "stoa-connections", CONNECTIONS)
    kube.add(_agent())
    ctx = _ctx(kube, runtime)
    assert reconcile_agent(ctx, kube.body(API, "Agent", NS, "ada")).written
    assert not reconcile_agent(ctx, kube.body(API, "Agent", NS, "ada")).written
    assert len(kube.statuses) == 1


def test_a_status_of_another_kind_or_an_undeclared_field_cannot_be_written() -> None:
    ctx = _ctx(FakeKube(), FakeRuntime())
    with pytest.raises(TypeError, match="Agent status written as ConversationStatus"):
        finish(ctx, _agent(), [], ConversationStatus())
    with pytest.raises(ValueError, match="Extra inputs are not permitted"):
        AgentStatus.model_validate({"activePod": "x", "activeSince": "2026-01-01T00:00:00Z"})


RUNNING = ConversationStatus(
    conversation_id="4a1c4d43-0000-4000-8000-000000000001",
    runtime_name="team/debate",
    phase="Running",
    reason="",
    turns=3,
    last_speaker="ada",
    tokens_in=300,
    tokens_out=90,
    cost_usd=0.0003,
    unpriced_turns=0,
    agents={"ada": AgentShare(turns=3, tokens_in=300, tokens_out=90, cost_usd=0.0003)},
    started_at="2026-01-01T00:00:00Z",
)


def _running(**changes: Any) -> ConversationStatus:
    return ConversationStatus.model_validate({**RUNNING.model_dump(exclude_unset=True), **changes})


def _served(kube: FakeKube, name: str = "models", status: str = "True") -> None:
    """The ModelPolicy as its reconcile leaves it once every ready gateway replica serves it (or not)."""
    kube.add(_policy(name))
    reason = {"True": "Served", "False": "Loading", "none": "NoReadyReplica"}[status]
    condition = {"type": "Served", "status": "True" if status == "True" else "False", "reason": reason,
                 "message": f"{reason} ...", "observedGeneration": 1, "lastTransitionTime": NOW}  # fmt: skip
    kube.set_status(API, "ModelPolicy", NS, name, {"conditions": [condition]})


@pytest.mark.parametrize(
    ("observed", "runtime_status", "ready", "degraded", "phase"),
    [
        ([], None, ("False", "MissingReference"), ("True", "MissingReference"), "Pending"),
        (["agent"], None, ("False", "MissingReference"), ("True", "MissingReference"), "Pending"),
        # Not started while a ready gateway replica does not serve the agent's policy yet (it would answer
        # 404 unknown model), nor before the policy was reconciled at its generation.
        (
            ["agent", "secret", "unreconciled"],
            None,
            ("False", "WaitingForModel"),
            ("False", "AsExpected"),
            "Pending",
        ),
        (
            ["agent", "secret", "loading"],
            None,
            ("False", "WaitingForModel"),
            ("False", "AsExpected"),
            "Pending",
        ),
        (["agent", "secret", "served"], RUNNING, ("True", "Running"), ("False", "AsExpected"), "Running"),
        # No gateway replica ready at all: agents wait for it (it starts with the current config).
        (["agent", "secret", "no-replica"], RUNNING, ("True", "Running"), ("False", "AsExpected"), "Running"),
        (
            ["agent", "secret", "served"],
            _running(phase="Failed", reason="model down", failure_reason="model down"),
            ("False", "Failed"),
            ("True", "ConversationFailed"),
            "Failed",
        ),
    ],
)
def test_conversation_table(
    observed: list[str],
    runtime_status: ConversationStatus | None,
    ready: tuple[str, str],
    degraded: tuple[str, str],
    phase: str,
) -> None:
    kube = FakeKube()
    runtime = FakeRuntime()
    if runtime_status is not None:
        runtime.conversations[(NS, "debate")] = runtime_status
    if "agent" in observed:
        kube.add(_agent())
    if "secret" in observed:
        kube.secret(NS, "stoa-connections", CONNECTIONS)
    if "unreconciled" in observed:
        kube.add(_policy())
    for marker, served in (("served", "True"), ("loading", "False"), ("no-replica", "none")):
        if marker in observed:
            _served(kube, status=served)
    kube.add(_conversation())
    reconcile_conversation(_ctx(kube, runtime), kube.body(API, "Conversation", NS, "debate"))
    status = kube.body(API, "Conversation", NS, "debate")["status"]
    conditions = _conditions(status)
    assert (conditions["Ready"], conditions["Degraded"]) == (ready, degraded)
    assert status.get("phase", "Pending") == phase
    assert status["runtimeName"] == "team/debate"
    assert status["transcript"] == (
        "kubectl exec -n team deploy/agent-ada -- sh -c"
        " 'stoa transcript team/debate --postgres-url \"$STOA_POSTGRES_DSN\"'"
    )
    if ready[0] == "True" or phase == "Failed":
        expected = runtime_status.model_dump(mode="json", by_alias=True, exclude_unset=True)  # type: ignore[union-attr]
        for key, value in expected.items():
            assert status[key] == value, key
    if phase == "Failed":
        assert status["failureReason"] == "model down"
    if runtime_status is None:
        assert runtime.calls == []  # nothing started before every reference exists and is served
    if "loading" in observed or "unreconciled" in observed:
        message = next(c for c in status["conditions"] if c["type"] == "Ready")["message"]
        assert "ModelPolicy models" in message, message


def test_conversation_participants_default_to_their_agents_role() -> None:
    kube, runtime = FakeKube(), FakeRuntime()
    kube.add(_agent(role="con"))
    kube.secret(NS, "stoa-connections", CONNECTIONS)
    _served(kube)
    kube.add(_conversation())
    reconcile_conversation(_ctx(kube, runtime), kube.body(API, "Conversation", NS, "debate"))
    (participant,) = runtime.started[(NS, "debate")].participants
    assert participant.role == "con"  # the Conversation set none: the Agent's spec.role


def test_two_moderators_by_default_are_reported_not_started() -> None:
    kube, runtime = FakeKube(), FakeRuntime()
    kube.add(_agent(role="moderator"))
    ben = _agent(role="moderator")
    ben["metadata"] = {**ben["metadata"], "name": "ben", "uid": "uid-ben"}
    kube.add(ben)
    kube.secret(NS, "stoa-connections", CONNECTIONS)
    _served(kube)
    conversation = _conversation()
    conversation["spec"]["participants"] = [{"agentRef": "ada", "role": "moderator"}, {"agentRef": "ben"}]
    kube.add(conversation)
    outcome = reconcile_conversation(_ctx(kube, runtime), kube.body(API, "Conversation", NS, "debate"))
    status = kube.body(API, "Conversation", NS, "debate")["status"]
    assert _conditions(status)["Degraded"] == ("True", "RoleConflict")
    message = next(c for c in status["conditions"] if c["type"] == "Degraded")["message"]
    assert "ben from its Agent's spec.role" in message
    assert "set their participant role" in message
    assert runtime.calls == []
    assert outcome.retry_in is not None


def test_a_stale_body_of_a_deleted_resource_starts_nothing() -> None:
    """After delete + re-create with the same name, a late reconcile of the old object must not start it
    (the runtime would archive the new resource's conversation to make room)."""
    kube, runtime = FakeKube(), FakeRuntime()
    kube.add(_agent())
    kube.secret(NS, "stoa-connections", CONNECTIONS)
    _served(kube)
    kube.add(_conversation(uid="4a1c4d43-0000-4000-8000-00000000000e"))  # the current resource
    stale = _conversation()  # the deleted one's body, another uid
    outcome = reconcile_conversation(_ctx(kube, runtime), stale)
    assert runtime.calls == []
    assert not outcome.written


def test_conversation_runtime_unavailable_is_reported_and_retried() -> None:
    kube, runtime = FakeKube(), FakeRuntime(unavailable="RabbitMQ unreachable: refused")
    kube.add(_agent())
    kube.secret(NS, "stoa-connections", CONNECTIONS)
    _served(kube)
    kube.add(_conversation())
    outcome = reconcile_conversation(_ctx(kube, runtime), kube.body(API, "Conversation", NS, "debate"))
    status = kube.body(API, "Conversation", NS, "debate")["status"]
    assert _conditions(status)["Ready"] == ("False", "RuntimeUnavailable")
    assert outcome.retry_in is not None
    assert status["phase"] == "Pending"


@pytest.mark.parametrize(
    ("secret", "probe", "degraded", "circuit"),
    [
        (False, None, ("True", "SecretNotFound"), "unknown"),
        (True, None, ("False", "AsExpected"), "unknown"),
        (
            True,
            {"policies": {"models": {"targets": {"a": {"circuit": "open"}}}}},
            ("False", "AsExpected"),
            "open",
        ),
    ],
)
def test_model_policy_table(
    secret: bool, probe: dict[str, Any] | None, degraded: tuple[str, str], circuit: str
) -> None:
    kube = FakeKube()
    spec = {
        "targets": [
            {
                "name": "a",
                "baseURL": "http://a/v1",
                "model": "m",
                "apiKeySecretRef": {"name": "k", "key": "key"},
            }
        ]
    }
    kube.add(_policy() | {"spec": spec})
    if secret:
        kube.secret(NS, "k", {"key": "sk-1"})
    kube.add(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": "stoa-gateway-x",
                "namespace": NS,
                "labels": {
                    "app.kubernetes.io/name": "stoa-gateway",
                    "app.kubernetes.io/instance": "stoa-gateway",
                },
            },
            "status": {"phase": "Running", "podIP": "10.244.0.7"},
        }
    )
    outcome = reconcile_model_policy(
        _ctx(kube, FakeRuntime(), probe), kube.body(API, "ModelPolicy", NS, "models")
    )
    assert {m["kind"] for m in kube.applied} == {"ServiceAccount", "ConfigMap", "Service", "Deployment"}
    status = kube.body(API, "ModelPolicy", NS, "models")["status"]
    assert _conditions(status)["Degraded"] == degraded
    assert status["endpoint"] == "http://stoa-gateway.team.svc:8080/v1"
    seen = 0 if probe is None else 1
    opened = int(circuit == "open")
    assert status["targets"] == [{"name": "a", "circuit": circuit, "openReplicas": opened, "replicas": seen}]
    assert status["circuits"] == f"a={circuit}"
    # No replica is Ready (so none serves it): the gateway Deployment's change brings the next reconcile.
    assert _conditions(status)["Served"] == ("False", "NoReadyReplica")
    assert (outcome.retry_in is not None) is (not secret)


def _gateway_pod(name: str, ip: str, ready: bool) -> dict[str, Any]:
    labels = {"app.kubernetes.io/name": "stoa-gateway", "app.kubernetes.io/instance": "stoa-gateway"}
    conditions = [{"type": "Ready", "status": "True" if ready else "False"}]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": NS, "labels": labels},
        "status": {"phase": "Running", "podIP": ip, "conditions": conditions},
    }


@pytest.mark.parametrize(
    ("pods", "ready", "served", "count"),
    [
        # Both Ready replicas loaded the current spec.
        (
            [("g1", True, "current"), ("g2", True, "current")],
            ("True", "Available"),
            ("True", "Served"),
            "2/2",
        ),
        # The kubelet has not refreshed g2's ConfigMap yet: it serves the old spec (a call there would get
        # the old targets, or 404 unknown model for a new policy). Not Ready, although 2/2 are available.
        ([("g1", True, "current"), ("g2", True, "old")], ("False", "Loading"), ("False", "Loading"), "1/2"),
        ([("g1", True, "current"), ("g2", True, None)], ("False", "Loading"), ("False", "Loading"), "1/2"),
        (
            [("g1", True, "current"), ("g2", True, "silent")],
            ("False", "Loading"),
            ("False", "Loading"),
            "1/2",
        ),
        # A replica that is not Ready gets no calls (not in the Service's endpoints): it does not count.
        ([("g1", True, "current"), ("g2", False, "old")], ("True", "Available"), ("True", "Served"), "1/1"),
    ],
)
def test_model_policy_is_ready_only_when_every_ready_gateway_replica_serves_its_spec(
    pods: list[tuple[str, bool, str | None]], ready: tuple[str, str], served: tuple[str, str], count: str
) -> None:
    kube = FakeKube()
    kube.add(_policy())
    body = kube.body(API, "ModelPolicy", NS, "models")
    current = policy_hash(ModelPolicySpec.model_validate(body["spec"]))
    old = policy_hash(
        ModelPolicySpec.model_validate(
            _policy(targets=[{"name": "a", "baseURL": "http://old/v1", "model": "m"}])["spec"]
        )
    )
    replies: dict[str, dict[str, Any] | None] = {}
    for index, (name, is_ready, serves) in enumerate(pods):
        ip = f"10.244.0.{10 + index}"
        kube.add(_gateway_pod(name, ip, is_ready))
        policies: dict[str, Any] = (
            {}
            if serves is None
            else {"models": {"targets": {}, "specHash": {"current": current, "old": old}.get(serves)}}
        )
        replies[ip] = None if serves == "silent" else {"policies": policies}
    kube.add(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "stoa-gateway", "namespace": NS},
            "spec": {},
        }
    )
    rolled_out = {"observedGeneration": 9, "updatedReplicas": 2, "readyReplicas": 2, "availableReplicas": 2}
    kube.set_status("apps/v1", "Deployment", NS, "stoa-gateway", rolled_out)
    ctx = _ctx(kube, FakeRuntime())
    ctx.gateway_probe = lambda url, _timeout: replies[url.split("//")[1].split(":")[0]]
    outcome = reconcile_model_policy(ctx, kube.body(API, "ModelPolicy", NS, "models"))
    status = kube.body(API, "ModelPolicy", NS, "models")["status"]
    conditions = _conditions(status)
    assert (conditions["Ready"], conditions["Served"]) == (ready, served)
    assert status["served"] == count
    assert status["specHash"] == current
    assert (outcome.retry_in is None) is (served[0] == "True")  # Loading: looked at again soon
    if served[0] == "False":
        assert "g2" in outcome.retry_reason
    if served[0] == "False":
        message = next(c for c in status["conditions"] if c["type"] == "Served")["message"]
        assert "g2" in message, message
