"""Every field of an Agent, a Conversation and a ModelPolicy takes effect on the real node, as
docs/operator.md "Every field" says (its table names the test of each row here).

One ``helm install`` for the module (bundled mode, ``image.pullPolicy=Never`` and an ``imagePullSecrets``
entry), one ModelPolicy with two targets on the scripted fake (the second needs an API key from a Secret),
three Agents whose fields differ, and small conversations (the fake answers at once): what the fake
received (model, key, system prompt, history), what the store holds (role, target, notes), the pods
(replicas, image, resources, env, pull settings) and the gateways' metrics (priority) are each compared
with the spec.
"""

from __future__ import annotations

import asyncio
import json
import shlex
import time
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import asyncpg
import pytest

from stoa_agents.identity import agent_key, archived_name, memory_schema
from stoa_devenv.netbed import NODE_IP
from stoa_operator.models.kinds import AGENT, MODEL_POLICY, Kind
from tests.e2e.fake_debate import DebateModel, Hold
from tests.e2e.node.bed import Bed, pod_ready, wait_for
from tests.e2e.node.stoa_install import Install, install

JSON = dict[str, Any]
API = "stoa.dev/v1alpha1"
API_KEY = "sk-field-test-1"  # the second target's key, from a Secret: the fake must see it, the first not
TOPIC = "Do the fields of a spec take effect?"
PERSONAS = {
    "fm": "You are Mia, the field-test moderator: brief, fair, never takes a side.",
    "fa": "You are Ada, field-test speaker A. Your position: every field does what it says.",
    "fb": "You are Ben, field-test speaker B. Your position: some fields do nothing at all.",
}
# Who the fake answers as what (fb's Agent role is "member": its participant role "con" wins).
ROLES = {"fm": "moderator", "fa": "pro", "fb": "con"}
RESOURCES = {"requests": {"cpu": "20m", "memory": "96Mi"}, "limits": {"memory": "200Mi"}}


def _policy(base_url: str) -> JSON:
    return {
        "apiVersion": API,
        "kind": "ModelPolicy",
        "metadata": {"name": "fields"},
        "spec": {
            "strategy": "failover",
            "targets": [
                {"name": "first", "baseURL": base_url, "model": "m-first"},
                {
                    "name": "second",
                    "baseURL": base_url,
                    "model": "m-second",
                    "apiKeySecretRef": {"name": "fake-key", "key": "apiKey"},
                },
            ],
            "retry": {"attempts": 1},
        },
    }


def _agents(image: str) -> list[JSON]:
    def agent(name: str, **spec: Any) -> JSON:
        body = {"persona": PERSONAS[name], "modelPolicyRef": {"name": "fields"}, **spec}
        return {"apiVersion": API, "kind": "Agent", "metadata": {"name": name}, "spec": body}

    fa_env = [{"name": "STOA_HISTORY_TURNS", "value": "1"}, {"name": "FIELD_NOTE", "value": "from-spec"}]
    return [
        agent("fm", role="moderator", replicas=1, resources=RESOURCES, image=image,
              memory={"enabled": False}),
        agent("fa", role="pro", model="second", replicas=2, priority="critical", env=fa_env,
              memory={"enabled": True, "retentionDays": 7}),
        agent("fb", role="member", replicas=1, env=[{"name": "STOA_HISTORY_TURNS", "value": "0"}]),
    ]  # fmt: skip


def _conversation(name: str, **spec: Any) -> JSON:
    body = {
        "topic": TOPIC,
        # No role for fm and fa: their Agents' spec.role (fm becomes the moderator); fb's is set here.
        "participants": [{"agentRef": "fm"}, {"agentRef": "fa"}, {"agentRef": "fb", "role": "con"}],
        "maxRounds": 2,
        "maxTurns": 30,
        **spec,
    }
    return {"apiVersion": API, "kind": "Conversation", "metadata": {"name": name}, "spec": body}


@pytest.fixture(scope="module")
def model() -> Iterator[DebateModel]:
    fake = DebateModel({n: (ROLES[n], p) for n, p in PERSONAS.items()}, host=NODE_IP).start()
    yield fake
    fake.stop()


@pytest.fixture(scope="module")
def stoa(bed: Bed, tmp_path_factory: pytest.TempPathFactory, model: DebateModel) -> Iterator[Install]:
    values = {"image": {"pullPolicy": "Never"}, "imagePullSecrets": [{"name": "regcred"}]}
    for inst in install(bed, tmp_path_factory.mktemp("fields"), values=values):
        config = json.dumps({"auths": {"registry.example:5000": {"auth": "dXNlcjpwYXNz"}}})
        bed.kubectl("create", "secret", "docker-registry", "regcred", "-n", inst.ns,
                    "--from-file=.dockerconfigjson=/dev/stdin", stdin=config)  # fmt: skip
        bed.kubectl(
            "create", "secret", "generic", "fake-key", "-n", inst.ns, f"--from-literal=apiKey={API_KEY}"
        )
        repository = bed.images["stoa"].rsplit(":", 1)[0]
        image = f"{repository}:field-image"  # spec.image: the same bits under another name
        bed.tag_image(bed.images["stoa"], image)
        inst.apply([_policy(model.base_url), *_agents(image)])
        for name, replicas in (("fm", 1), ("fa", 2), ("fb", 1)):
            inst.wait_ready([f"agent-{name}"], replicas=replicas)
        inst.wait_ready(["stoa-gateway"])
        yield inst


def _run(stoa: Install, doc: JSON, budget: float = 120) -> JSON:
    """Apply a Conversation and wait until it ends; returns its status."""
    stoa.apply([doc])
    name = doc["metadata"]["name"]

    def ended() -> JSON | None:
        status: JSON = stoa.cr("conversations", name).get("status") or {}
        return status if status.get("phase") in ("Succeeded", "Failed") else None

    status = wait_for(ended, budget, f"Conversation {name} to end", every=0.5)
    assert status["phase"] == "Succeeded", status
    return status


def _turns(stoa: Install, name: str) -> list[JSON]:
    uid = uuid.UUID(stoa.cr("conversations", name)["metadata"]["uid"])
    return stoa.fetch(
        "SELECT seq, speaker, role, target, content, pod FROM stoa.turns WHERE conversation_id = $1"
        " ORDER BY seq",
        uid,
    )


def _requests(model: DebateModel, agent: str, since: int) -> list[JSON]:
    """Chat requests the fake received from ``agent`` (by its persona) since index ``since``."""
    seen = list(model.state.last)[since:]
    return [
        r for r in seen if r["path"].endswith("/chat/completions") and model.state.speaker(r["body"]) == agent
    ]


def _said(request: JSON) -> int:
    """How many earlier turns of others the prompt shows (``<speaker> said: ...`` messages)."""
    return sum(1 for m in request["body"]["messages"] if " said: " in str(m.get("content")))


def _priority_calls(bed: Bed, stoa: Install, priority: str) -> float:
    """Calls of that priority the gateway replicas counted (policy fields), from their /metrics."""
    total = 0.0
    for pod in bed.pods(stoa.ns, "app.kubernetes.io/name=stoa-gateway"):
        if not pod_ready(pod):
            continue
        url = f"http://{pod['status']['podIP']}:8080/metrics"
        with urllib.request.urlopen(url, timeout=10) as response:
            text = response.read().decode()
        for line in text.splitlines():
            wanted = ('policy="fields"', f'priority="{priority}"')
            if line.startswith("stoa_gateway_priority_requests_total{") and all(w in line for w in wanted):
                total += float(line.rsplit(" ", 1)[1])
    return total


def test_agent_and_conversation_fields_reach_the_model_and_the_store(
    bed: Bed, stoa: Install, model: DebateModel
) -> None:
    since = len(model.state.last)
    critical_before = _priority_calls(bed, stoa, "critical")
    status = _run(stoa, _conversation("fields"))
    turns = _turns(stoa, "fields")
    # maxRounds 2 with a moderator: open, 2 rounds of fa and fb with the moderator between, close.
    assert [t["speaker"] for t in turns] == ["fm", "fa", "fb", "fm", "fa", "fb", "fm"]
    assert status["turns"] == 7
    # role: the Agent's spec.role when the participant sets none (fm is the moderator by it), else the
    # participant's (fb's Agent says member).
    assert {t["speaker"]: t["role"] for t in turns} == {"fm": "moderator", "fa": "pro", "fb": "con"}
    assert "VERDICT: END" in turns[-1]["content"]
    # model: fa pins the target "second" (its model and its key from the Secret), the others get the
    # policy's failover order (first).
    assert {t["speaker"]: t["target"] for t in turns} == {"fm": "first", "fa": "second", "fb": "first"}
    for agent in ("fm", "fa", "fb"):
        requests = _requests(model, agent, since)
        assert len(requests) == sum(1 for t in turns if t["speaker"] == agent)
        for request in requests:
            system = request["body"]["messages"][0]["content"]
            assert PERSONAS[agent] in system
            assert f"Debate topic: {TOPIC}" in system
            expected = ("m-second", f"Bearer {API_KEY}") if agent == "fa" else ("m-first", None)
            assert (request["body"]["model"], request["headers"].get("Authorization")) == expected, agent
    # env STOA_HISTORY_TURNS: fb (0) is shown no earlier turn, fa (1) at most one, fm (default 6) several.
    assert all(_said(r) == 0 for r in _requests(model, "fb", since))
    assert max(_said(r) for r in _requests(model, "fa", since)) == 1
    assert max(_said(r) for r in _requests(model, "fm", since)) > 1
    # memory: fa (enabled) is reminded of its own earlier turn and stored notes; fm (disabled) neither.
    reminded = [r for r in _requests(model, "fa", since)
                if "Use a different example than before" in r["body"]["messages"][-1]["content"]]  # fmt: skip
    assert len(reminded) == 1  # its second turn
    assert not any(
        "different example" in r["body"]["messages"][-1]["content"] for r in _requests(model, "fm", since)
    )
    uid = uuid.UUID(stoa.cr("conversations", "fields")["metadata"]["uid"])
    fa_notes = f"{memory_schema(agent_key(stoa.ns, 'fa'))}.memory"
    notes = stoa.fetch(f"SELECT seq FROM {fa_notes} WHERE conversation_id = $1", uid)  # noqa: S608
    assert len(notes) == 2
    fm_notes = f"{memory_schema(agent_key(stoa.ns, 'fm'))}.memory"
    if stoa.fetch("SELECT to_regclass($1) AS t", fm_notes)[0]["t"] is not None:
        query = f"SELECT count(*) AS n FROM {fm_notes} WHERE conversation_id = $1"  # noqa: S608
        assert stoa.fetch(query, uid)[0]["n"] == 0
    # status.transcript: the command it shows prints the transcript (through an agent pod).
    command = shlex.split(stoa.cr("conversations", "fields")["status"]["transcript"])
    assert command[:2] == ["kubectl", "exec"]
    printed = stoa.bed.kubectl(*command[1:])
    assert f"Conversation {stoa.ns}/fields: phase=Succeeded turns=7" in printed
    assert all(f"] {t['speaker']} ({t['role']})" in printed for t in turns)
    # priority: fa's calls carry critical (X-Stoa-Priority), counted by the gateways.
    assert _priority_calls(bed, stoa, "critical") - critical_before == 2


def test_turn_policy_conversation_priority_and_suspend(bed: Bed, stoa: Install, model: DebateModel) -> None:
    batch_before = _priority_calls(bed, stoa, "batch")
    doc = _conversation("selected", turnPolicy={"type": "moderatorSelected"}, moderator="fm", maxTurns=5,
                        priority="batch", suspend=True)  # fmt: skip
    doc["spec"].pop("maxRounds")
    stoa.apply([doc])
    # suspend: nothing is said while it is suspended.
    suspended = wait_for(lambda: (s := stoa.cr("conversations", "selected").get("status") or {}).get("phase")
                         == "Suspended" and s, 60, "Conversation selected Suspended")  # fmt: skip
    time.sleep(3)
    assert (stoa.cr("conversations", "selected").get("status") or {}).get("turns", 0) == 0, suspended
    status = _run(stoa, {**doc, "spec": {**doc["spec"], "suspend": False}})
    turns = _turns(stoa, "selected")
    # moderatorSelected: the moderator names who speaks (the fake always names fa); round robin would
    # have been fm fa fb fm fa.
    assert [t["speaker"] for t in turns] == ["fm", "fa", "fm", "fa", "fm"]
    assert status["turns"] == 5
    # priority: the Conversation's batch overrides fa's critical on every call of its turns.
    assert _priority_calls(bed, stoa, "batch") - batch_before == 5


def test_stop_ends_a_running_conversation(stoa: Install, model: DebateModel) -> None:
    hold = model.hold = Hold("fa", 1)
    hold.seen = 0
    try:
        stoa.apply([_conversation("stopped")])
        assert hold.held.wait(60), "fa never asked the model for its turn"
        stoa.apply([_conversation("stopped", stop=True)])

        def failed() -> JSON | None:
            status: JSON = stoa.cr("conversations", "stopped").get("status") or {}
            return status if status.get("phase") == "Failed" else None

        status = wait_for(failed, 60, "Conversation stopped Failed")
    finally:
        hold.release()
        model.hold = None
    assert status["reason"] == "Stopped by request"
    time.sleep(2)  # the held turn comes back after the stop: it is discarded, not stored
    assert [t["speaker"] for t in _turns(stoa, "stopped")] == ["fm"]


def test_deleting_keeps_or_purges_the_transcript_and_frees_the_name(stoa: Install) -> None:
    """transcriptRetention keep: the transcript stays, archived under <ns>/<name>@<uid8>, and the same
    manifest applied again starts a new conversation (re-running the demo); purge: nothing stays."""
    kept = _conversation("rerun")
    _run(stoa, kept)
    first_uid = stoa.cr("conversations", "rerun")["metadata"]["uid"]
    stoa.bed.kubectl("delete", "conversation", "rerun", "-n", stoa.ns, "--timeout=60s")
    archived = archived_name(f"{stoa.ns}/rerun", first_uid)
    rows = stoa.fetch("SELECT id, phase, turns FROM stoa.conversations WHERE name = $1", archived)
    assert [(str(r["id"]), r["phase"], r["turns"]) for r in rows] == [(first_uid, "Succeeded", 7)]
    assert (
        stoa.fetch("SELECT count(*) AS n FROM stoa.turns WHERE conversation_id = $1", uuid.UUID(first_uid))[
            0
        ]["n"]
        == 7
    )
    again = _run(stoa, kept)  # the same manifest again
    assert again["conversationId"] != first_uid
    assert again["turns"] == 7

    purged = _conversation("purged", transcriptRetention="purge")
    _run(stoa, purged)
    uid = uuid.UUID(stoa.cr("conversations", "purged")["metadata"]["uid"])
    stoa.bed.kubectl("delete", "conversation", "purged", "-n", stoa.ns, "--timeout=60s")
    assert stoa.fetch("SELECT count(*) AS n FROM stoa.conversations WHERE id = $1", uid)[0]["n"] == 0
    assert stoa.fetch("SELECT count(*) AS n FROM stoa.turns WHERE conversation_id = $1", uid)[0]["n"] == 0
    notes = f"{memory_schema(agent_key(stoa.ns, 'fa'))}.memory"
    assert stoa.fetch(f"SELECT count(*) AS n FROM {notes} WHERE conversation_id = $1", uid)[0]["n"] == 0  # noqa: S608


def test_pod_fields_and_the_charts_image_settings(bed: Bed, stoa: Install) -> None:
    pods = {name: bed.pods(stoa.ns, f"stoa.dev/agent={name}") for name in ("fm", "fa", "fb")}
    assert {name: len(p) for name, p in pods.items()} == {"fm": 1, "fa": 2, "fb": 1}  # replicas
    (fm,) = pods["fm"]
    (container,) = fm["spec"]["containers"]
    assert container["image"].endswith(":field-image")  # spec.image
    assert pod_ready(fm)
    assert container["resources"] == RESOURCES  # spec.resources
    fa = pods["fa"][0]["metadata"]["name"]
    env = bed.kubectl(
        "exec", "-n", stoa.ns, fa, "-c", "agent", "--", "printenv", "FIELD_NOTE", "STOA_MEMORY_RETENTION_DAYS"
    )
    assert env.split() == ["from-spec", "7"]  # spec.env (not a setting: passed as is), memory.retentionDays
    # The chart's image.pullPolicy and imagePullSecrets on every pod the operator built.
    gateways = bed.pods(stoa.ns, "app.kubernetes.io/name=stoa-gateway")
    for pod in [*gateways, *(p for group in pods.values() for p in group)]:
        assert pod["spec"]["imagePullSecrets"] == [{"name": "regcred"}], pod["metadata"]["name"]
        assert pod["spec"]["containers"][0]["imagePullPolicy"] == "Never", pod["metadata"]["name"]
    repository = bed.images["stoa"].rsplit(":", 1)[0]
    assert all(p["spec"]["containers"][0]["image"] == bed.images["stoa"] for p in gateways)
    assert all(
        p["spec"]["containers"][0]["image"].startswith(repository) for group in pods.values() for p in group
    )

    # memory.retentionDays: a replica that starts deletes fa's notes older than 7 days, keeps newer ones.
    notes = f"{memory_schema(agent_key(stoa.ns, 'fa'))}.memory"
    old, recent = uuid.uuid4(), uuid.uuid4()

    async def insert() -> None:
        conn = await asyncpg.connect(stoa.postgres_dsn(), timeout=10)
        try:
            for cid, days in ((old, 8), (recent, 6)):
                await conn.execute(
                    f"INSERT INTO {notes} (conversation_id, seq, note, created_at)"  # noqa: S608
                    " VALUES ($1, 1, 'retention probe', now() - make_interval(days => $2))",
                    cid, days,
                )  # fmt: skip
        finally:
            await conn.close()

    asyncio.run(insert())
    bed.kubectl("delete", "pod", fa, "-n", stoa.ns, "--wait=false")
    stoa.wait_ready(["agent-fa"], replicas=2)

    def swept() -> list[JSON] | None:
        left = stoa.fetch(f"SELECT conversation_id FROM {notes} WHERE note = 'retention probe'")  # noqa: S608
        return left if len(left) == 1 else None

    left = wait_for(swept, 60, "the new fa replica's retention sweep")
    assert left[0]["conversation_id"] == recent


def _table(text: str) -> list[dict[str, str]]:
    """``kubectl get`` output as rows of {column: cell}, cut at the header's column starts (cells may be
    empty)."""
    header, *lines = text.splitlines()
    names = header.split()
    starts = [header.index(f" {n} ") + 1 if i else 0 for i, n in enumerate(names[:-1])] + [
        header.rindex(names[-1])
    ]
    bounds = [*starts[1:], None]
    return [{n: line[a:b].strip() for n, a, b in zip(names, starts, bounds, strict=True)} for line in lines]


def _columns(kind: Kind) -> list[str]:
    return ["NAME", *(c["name"].upper() for c in kind.printer_columns if not c.get("priority"))]


def test_model_policy_is_served_and_the_printer_columns_show_it(bed: Bed, stoa: Install) -> None:
    policy = stoa.cr("modelpolicies", "fields")
    status = policy["status"]
    served = next(c for c in status["conditions"] if c["type"] == "Served")
    assert (served["status"], status["served"]) == ("True", "2/2")
    assert status["circuits"] == "first=closed,second=closed"
    text = bed.kubectl("get", "modelpolicies", "-n", stoa.ns)
    assert text.splitlines()[0].split() == _columns(MODEL_POLICY)
    (row,) = _table(text)
    assert (row["READY"], row["SERVED"], row["CIRCUITS"]) == ("True", "2/2", "first=closed,second=closed")
    text = bed.kubectl("get", "agents", "-n", stoa.ns)
    assert text.splitlines()[0].split() == _columns(AGENT)
    fa = next(r for r in _table(text) if r["NAME"] == "fa")
    assert (fa["READY"], fa["ROLE"], fa["REPLICAS"], fa["AVAILABLE"], fa["STANDBY"]) == (
        "True",
        "pro",
        "2",
        "2",
        "1",
    )
    assert fa["ACTIVE"].startswith("agent-fa-")
    explain = " ".join(bed.kubectl("explain", "agents.spec.model").split())
    assert "Pin one target of `modelPolicyRef` by its name" in explain
