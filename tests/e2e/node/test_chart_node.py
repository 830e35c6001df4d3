"""The chart on the real node, as a ``helm install`` user runs it (bundled mode): operator, gateway,
agents, RabbitMQ and PostgreSQL as real pods, Running and Ready under the kubelet, non-root on read-only
root filesystems, configured only by what Stoa sets (no Service link variables), with Services named
``stoa-gateway``, ``stoa-model`` and ``stoa-metrics`` in the agents' namespace.

Then the debate of examples/debate/ on it, losing the ACTIVE replica of ``team-a`` in the middle of its
2nd turn (the model holds that request), two ways:

- ``kill``: its container is SIGKILLed through containerd (a crash): the kubelet restarts it in the same
  pod, the hot standby gets the redelivered message and stores the turn;
- ``force-delete``: ``kubectl delete pod --force --grace-period=0``: the pod object goes at once, the
  kubelet kills the container, the standby takes over and the ReplicaSet makes a new pod.

Either way every turn is stored once, in order (an exactly-once audit of the store), and Agent status names
the old and new active pods. Then a ModelPolicy whose primary target fails, with an Agent that has
``fallbackPolicies``: the debate succeeds through the fallback. And ``helm upgrade`` to another image tag
rolls the operator while a conversation runs, without losing it. The chart's ``stoa api`` serves a
debate, started and followed with ``stoa conversations``, to a token with the chart's editor role.
"""

from __future__ import annotations

import functools
import json
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import pytest

from stoa_devenv.imagespec import chart_image_values
from stoa_devenv.netbed import NODE_IP
from tests.e2e.fake_debate import DebateModel, Hold
from tests.e2e.node.bed import Bed, pod_ready, restarts, wait_for
from tests.e2e.node.stoa_install import CHART, USER_SERVICES, Install, examples, install

VICTIM = "team-a"
HELD_TURN = 2  # team-a's 2nd request to the model (turn 5) is held while its replica is lost
DEBATE_BUDGET_SECONDS = 180
AGENT_KEYS = ("activePod", "previousPod", "takeovers", "readyReplicas", "standbyReplicas", "turnsHandled")
JSON = dict[str, Any]


@pytest.fixture(scope="module")
def model() -> Iterator[DebateModel]:
    """One scripted model for the module, on the node's address so pods reach it."""
    agents = {d["metadata"]["name"]: (d["spec"]["role"], d["spec"]["persona"])
              for d in examples("", "x") if d["kind"] == "Agent"}  # fmt: skip
    fake = DebateModel(agents, host=NODE_IP).start()
    yield fake
    fake.stop()


@pytest.fixture(scope="module")
def stoa(bed: Bed, tmp_path_factory: pytest.TempPathFactory, model: DebateModel) -> Iterator[Install]:
    yield from install(bed, tmp_path_factory.mktemp("chart"))


def _agents_ready(stoa: Install, model: DebateModel) -> list[JSON]:
    """Apply the example ModelPolicy and Agents (no Conversation) and wait for gateway and agents."""
    docs = [d for d in examples(model.base_url, "unused") if d["kind"] != "Conversation"]
    stoa.apply(docs)
    stoa.wait_ready(
        ["stoa-gateway", *(f"agent-{d['metadata']['name']}" for d in docs if d["kind"] == "Agent")]
    )
    return docs


def _conversation(model: DebateModel, name: str) -> JSON:
    return next(d for d in examples(model.base_url, name) if d["kind"] == "Conversation")


def _wait_succeeded(stoa: Install, name: str) -> JSON:
    def succeeded() -> JSON | None:
        status: JSON = stoa.cr("conversations", name).get("status") or {}
        assert status.get("phase") != "Failed", status
        return status if status.get("phase") == "Succeeded" else None

    return wait_for(succeeded, DEBATE_BUDGET_SECONDS, f"Conversation {name} Succeeded", every=0.5)


def _audit(stoa: Install, name: str, status: JSON) -> list[JSON]:
    """Every turn stored once, in order: contiguous seqs, unique message ids, round robin, a verdict, and
    the status agrees with the store."""
    conversation = stoa.cr("conversations", name)
    turns = stoa.fetch(
        "SELECT seq, speaker, pod, message_id, content FROM stoa.turns"
        " WHERE conversation_id = $1 ORDER BY seq",
        uuid.UUID(conversation["metadata"]["uid"]),
    )
    seqs = [int(t["seq"]) for t in turns]
    assert seqs == list(range(1, len(turns) + 1)), f"missing or duplicated turns: {seqs}"
    assert len({t["message_id"] for t in turns}) == len(turns)
    assert status["turns"] == len(turns), (status, len(turns))
    spec = conversation["spec"]
    assert len(turns) == min(spec["maxTurns"], spec["maxRounds"] * 3 + 1)
    order = ["moderator", "team-a", "team-b"]
    assert [t["speaker"] for t in turns] == [order[(s - 1) % 3] for s in seqs]
    assert "VERDICT: END" in turns[-1]["content"]
    return turns


def test_chart_pods_run_on_the_real_node(bed: Bed, stoa: Install, model: DebateModel) -> None:
    _agents_ready(stoa, model)
    for namespace in (stoa.release_ns, stoa.ns):
        all_ready = functools.partial(stoa.all_pods_ready, namespace)
        pods = wait_for(all_ready, 120, f"every pod of {namespace} Ready")
        for pod in pods:
            name, spec = pod["metadata"]["name"], pod["spec"]
            assert spec["nodeName"] == "stoa-node"
            assert spec.get("enableServiceLinks") is False, f"{name} gets Service link variables"
            for container in spec["containers"]:
                context = {**spec.get("securityContext", {}), **container.get("securityContext", {})}
                assert context.get("runAsNonRoot") is True, name
                assert context.get("readOnlyRootFilesystem") is True, name
                uid = bed.kubectl("exec", "-n", namespace, name, "-c", container["name"], "--", "id", "-u")
                assert uid.strip() != "0", f"{name}/{container['name']} runs as root"
    names = {s["metadata"]["name"] for s in bed.get("services", "-n", stoa.ns)["items"]}
    assert {"stoa-gateway", *USER_SERVICES} <= names
    components = {
        p["metadata"]["labels"].get("app.kubernetes.io/component") for p in bed.pods(stoa.release_ns)
    }
    assert {"operator", "rabbitmq", "postgres"} <= components


def _active_pod(stoa: Install, agent: str) -> str:
    rows = stoa.fetch("SELECT pod FROM stoa.agent_activity WHERE agent = $1", f"{stoa.ns}/{agent}")
    assert rows, "the runtime recorded no active replica"
    return str(rows[0]["pod"])


def _agent_status_with(stoa: Install, active: str) -> JSON | None:
    status: JSON = stoa.cr("agents", VICTIM).get("status") or {}
    return status if status.get("activePod") == active else None


@pytest.mark.parametrize("mode", ["kill", "force-delete"])
def test_debate_survives_losing_the_active_replica_mid_turn(
    mode: Literal["kill", "force-delete"], bed: Bed, stoa: Install, model: DebateModel
) -> None:
    _agents_ready(stoa, model)
    hold = model.hold = Hold(VICTIM, HELD_TURN)
    name = f"debate-{mode}"
    before_pods = {p["metadata"]["name"] for p in bed.pods(stoa.ns, f"stoa.dev/agent={VICTIM}")}
    takeovers_before = int((stoa.cr("agents", VICTIM).get("status") or {}).get("takeovers") or 0)
    stoa.apply([_conversation(model, name)])
    try:
        assert hold.held.wait(90), f"{VICTIM} never asked the model for its turn {HELD_TURN}"
        victim = _active_pod(stoa, VICTIM)
        assert victim in before_pods
        wait_for(lambda: _agent_status_with(stoa, victim), 30, f"Agent status activePod={victim}")
        pod = bed.get("pod", victim, "-n", stoa.ns)
        if mode == "kill":
            bed.kill_container(bed.container_id(pod, "agent"))
        else:
            bed.kubectl("delete", "pod", victim, "-n", stoa.ns, "--force", "--grace-period=0")
        assert hold.followed.wait(60), f"no replica of {VICTIM} asked the model for the turn again"
        status = _wait_succeeded(stoa, name)
    finally:
        hold.release()
    turns = _audit(stoa, name, status)
    team_a = [t for t in turns if t["speaker"] == VICTIM]
    held = team_a[HELD_TURN - 1]
    # The victim stored team-a's turns before the held one; the held turn (once) and every later one come
    # from the standby that was running before the loss.
    assert {t["pod"] for t in team_a if t["seq"] < held["seq"]} == {victim}, team_a
    after = {t["pod"] for t in team_a if t["seq"] >= held["seq"]}
    assert len(after) == 1, team_a
    assert victim not in after, team_a
    standby = after.pop()
    assert standby in before_pods
    agent = wait_for(lambda: _agent_status_with(stoa, standby), 30, f"Agent status activePod={standby}")
    assert agent["previousPod"] == victim
    assert int(agent["takeovers"]) >= takeovers_before + 1
    print(f"--- {mode}: Agent {VICTIM} status " + " ".join(f"{k}={agent.get(k)}" for k in AGENT_KEYS))
    print(f"--- {mode}: turns " + " ".join(f"{t['seq']}:{t['speaker']}@{t['pod'][-5:]}" for t in turns))
    if mode == "kill":

        def restarted() -> JSON | None:
            current = bed.get("pod", victim, "-n", stoa.ns)
            return current if restarts(current) >= 1 and pod_ready(current) else None

        wait_for(restarted, 90, f"{victim} restarted by the kubelet and Ready again")
    else:
        stoa.wait_ready([f"agent-{VICTIM}"])
        assert victim not in {p["metadata"]["name"] for p in bed.pods(stoa.ns, f"stoa.dev/agent={VICTIM}")}


def _fallback_docs(model: DebateModel, name: str) -> list[JSON]:
    """A ModelPolicy ``broken`` whose only target refuses connections, Agents on it with
    ``fallbackPolicies: [debate-small]`` (one replica each), and a Conversation between them."""
    examples_docs = examples(model.base_url, name)
    broken = {
        "apiVersion": "stoa.dev/v1alpha1",
        "kind": "ModelPolicy",
        "metadata": {"name": "broken"},
        "spec": {
            "strategy": "failover",
            "targets": [
                {"name": "gone", "baseURL": f"http://{NODE_IP}:9/v1", "model": "gone", "timeoutSeconds": 5}
            ],
            "retry": {"attempts": 1},
        },
    }
    docs: list[JSON] = [broken]
    for doc in examples_docs:
        if doc["kind"] == "Agent":
            doc["metadata"]["name"] = f"fb-{doc['metadata']['name']}"
            doc["spec"].update(modelPolicyRef={"name": "broken"}, fallbackPolicies=[{"name": "debate-small"}],
                               replicas=1)  # fmt: skip
        elif doc["kind"] == "Conversation":
            for participant in doc["spec"]["participants"]:
                participant["agentRef"] = f"fb-{participant['agentRef']}"
            doc["spec"]["moderator"] = f"fb-{doc['spec']['moderator']}"
            doc["spec"]["maxRounds"] = 2
        docs.append(doc)
    return docs


def test_agent_fallback_policies_carry_the_debate_when_its_policy_fails(
    bed: Bed, stoa: Install, model: DebateModel
) -> None:
    _agents_ready(stoa, model)  # debate-small, the fallback
    model.hold = None
    name = "debate-fallback"
    docs = _fallback_docs(model, name)
    stoa.apply([d for d in docs if d["kind"] != "Conversation"])
    stoa.wait_ready([f"agent-{d['metadata']['name']}" for d in docs if d["kind"] == "Agent"], replicas=1)

    def served_by_both_gateways() -> JSON | None:
        status: JSON = stoa.cr("modelpolicies", "broken").get("status") or {}
        targets = status.get("targets") or []
        return status if targets and all(int(t.get("replicas") or 0) == 2 for t in targets) else None

    # Both gateway replicas serve the new policy (the kubelet refreshes their ConfigMap volume).
    wait_for(served_by_both_gateways, 120, "ModelPolicy broken loaded by both gateway replicas", every=1)
    served_before = len(model.state.calls)
    stoa.apply([d for d in docs if d["kind"] == "Conversation"])
    status = _wait_succeeded(stoa, name)
    turns = stoa.fetch(
        "SELECT seq, speaker FROM stoa.turns WHERE conversation_id = $1 ORDER BY seq",
        uuid.UUID(stoa.cr("conversations", name)["metadata"]["uid"]),
    )
    assert [int(t["seq"]) for t in turns] == list(range(1, status["turns"] + 1))
    assert {t["speaker"] for t in turns} == {"fb-moderator", "fb-team-a", "fb-team-b"}
    # Every turn was answered by debate-small's target, after the agent's own policy failed.
    assert len(model.state.calls) - served_before >= len(turns)
    pod = bed.pods(stoa.ns, "stoa.dev/agent=fb-team-a")[0]["metadata"]["name"]
    log = bed.kubectl("logs", "-n", stoa.ns, pod, "-c", "agent")
    fallbacks = [line for line in log.splitlines() if "trying fallback" in line]
    assert fallbacks, log[-2000:]
    # The agent's own policy failed at its target (the gateway named it), not for want of the policy.
    assert all("fallback=debate-small" in line and "gone" in line for line in fallbacks), fallbacks
    assert not any("unknown model" in line for line in fallbacks), fallbacks
    print("--- fallback: ModelPolicy broken status", stoa.cr("modelpolicies", "broken").get("status"))
    print("--- fallback: agent log", fallbacks[0])


def test_helm_upgrade_to_a_new_image_tag_rolls_the_operator_without_losing_the_conversation(
    bed: Bed, stoa: Install, model: DebateModel, tmp_path: Path
) -> None:
    _agents_ready(stoa, model)
    hold = model.hold = Hold(VICTIM, HELD_TURN)
    name = "debate-upgrade"
    operator_before = {
        p["metadata"]["name"] for p in bed.pods(stoa.release_ns, "app.kubernetes.io/component=operator")
    }
    stoa.apply([_conversation(model, name)])
    try:
        assert hold.held.wait(90), f"{VICTIM} never asked the model for its turn {HELD_TURN}"
        # The same image under a new tag, as a registry holds a new release.
        repository, _ = bed.images["stoa"].rsplit(":", 1)
        bed.tag_image(bed.images["stoa"], f"{repository}:upgrade")
        started = time.monotonic()
        stoa.helm_install(tmp_path, action="upgrade", images={**bed.images, "stoa": f"{repository}:upgrade"})
        operator = wait_for(
            lambda: [p for p in bed.pods(stoa.release_ns, "app.kubernetes.io/component=operator")
                     if p["metadata"]["name"] not in operator_before and pod_ready(p)],
            120, "the new operator pod Ready",
        )[0]  # fmt: skip
        assert operator["spec"]["containers"][0]["image"].endswith(":upgrade")
        took = time.monotonic() - started
        print(f"--- upgrade: new operator pod {operator['metadata']['name']} Ready after {took:.1f}s")
    finally:
        hold.release()
    status = _wait_succeeded(stoa, name)
    _audit(stoa, name, status)
    assert {
        p["metadata"]["name"] for p in bed.pods(stoa.release_ns, "app.kubernetes.io/component=operator")
    }.isdisjoint(operator_before)


def test_helm_uninstall_keeps_the_crds_and_the_users_resources(
    bed: Bed, stoa: Install, model: DebateModel
) -> None:
    """Uninstalling a second release (operator only) removes its pods and keeps the CRDs, so the Agents of
    the first release stay (CRDs in the chart's crds/ are never deleted by Helm)."""
    _agents_ready(stoa, model)
    release, namespace = f"{stoa.release}-second", f"{stoa.release_ns}-2"
    bed.kubectl("create", "namespace", namespace)
    try:
        images = [f"--set={k}={v}" for k, v in chart_image_values(bed.images).items()]
        watch = f"--set=operator.watchNamespaces={{{namespace}}}"
        bed.helm("install", release, str(CHART), "-n", namespace, watch, *images, "--wait", "--timeout", "3m")
        assert bed.pods(namespace, "app.kubernetes.io/component=operator")
        bed.helm("uninstall", release, "-n", namespace, "--wait", "--timeout", "2m")
        wait_for(lambda: not bed.pods(namespace), 60, f"no pod left in {namespace}")
        crds = bed.kubectl("get", "crds", "-o", "name")
        for kind in ("agents", "modelpolicies", "conversations"):
            assert f"customresourcedefinition.apiextensions.k8s.io/{kind}.stoa.dev" in crds
        assert stoa.cr("agents", VICTIM)["metadata"]["name"] == VICTIM
    finally:
        bed.helm("uninstall", release, "-n", namespace, check=False)
        bed.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


def test_the_api_on_the_node_serves_a_debate_to_a_token_with_rights(
    bed: Bed, stoa: Install, model: DebateModel
) -> None:
    """The chart's ``stoa api`` as a pod on the node: reached through its Service, it authenticates and
    authorizes each call with the API server, finds the gateway replicas through their EndpointSlices and
    reaches them on the pod network, and ``stoa conversations`` (its CLI) starts a debate and follows it
    to the end through the event stream."""
    _agents_ready(stoa, model)
    api_name = f"{stoa.release}-api"
    wait_for(lambda: stoa.deployment_ready(api_name, 1, stoa.release_ns), 180, f"{api_name} Ready")
    ip = bed.get("service", api_name, "-n", stoa.release_ns)["spec"]["clusterIP"]
    server = f"http://{ip}:80"
    for who, role in (("editor", f"{stoa.release}-editor"), ("nobody", None)):
        bed.kubectl("create", "serviceaccount", who, "-n", stoa.ns)
        if role:
            bed.kubectl("create", "rolebinding", who, "-n", stoa.ns, f"--clusterrole={role}",
                        f"--serviceaccount={stoa.ns}:{who}")  # fmt: skip
    editor = bed.kubectl("create", "token", "editor", "-n", stoa.ns).strip()
    nobody = bed.kubectl("create", "token", "nobody", "-n", stoa.ns).strip()

    def call(path: str, token: str) -> tuple[int, JSON]:
        request = urllib.request.Request(  # noqa: S310 - the API's ClusterIP
            server + path, headers={"Authorization": f"Bearer {token}"}
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
                return int(response.status), json.loads(response.read())
        except urllib.error.HTTPError as err:
            return int(err.code), json.loads(err.read() or b"{}")

    status, me = call("/v1/whoami", editor)
    assert status == 200, me
    assert me["username"] == f"system:serviceaccount:{stoa.ns}:editor"
    status, body = call(f"/v1/namespaces/{stoa.ns}/conversations", nobody)
    assert status == 403, body
    assert "may not list conversations.stoa.dev" in body["message"]

    def gateway_seen() -> JSON | None:
        code, policies = call(f"/v1/namespaces/{stoa.ns}/modelpolicies", editor)
        # Another test of this module leaves a policy "broken" beside it: pick the debate's by name.
        items = policies.get("items", []) if code == 200 else []
        mine = [p for p in items if p["metadata"]["name"] == "debate-small"]
        view = mine[0].get("gateway") if mine else None
        return view if view and view["replicas"] == 2 and not view["unreachable"] else None

    view = wait_for(gateway_seen, 60, "the API's live view of both gateway replicas")
    assert {t["name"] for t in view["targets"]} == {"smollm2"}
    name = "api-debate"
    cli = subprocess.run(
        [sys.executable, "-m", "stoa_cli.main", "conversations", "--server", server, "--token", editor,
         "-n", stoa.ns, "start", name, "--topic", "AI and jobs", "-p", "moderator:moderator",
         "-p", "team-a:pro", "-p", "team-b:con", "--moderator", "moderator", "--max-rounds", "1", "--follow"],
        capture_output=True, text=True, timeout=DEBATE_BUDGET_SECONDS, check=False,
    )  # fmt: skip
    assert cli.returncode == 0, cli.stdout + cli.stderr
    assert [int(s) for s in re.findall(r"^\[\s*(\d+)\] ", cli.stdout, re.MULTILINE)] == [1, 2, 3, 4]
    assert "--- phase Succeeded" in cli.stdout
    _wait_succeeded(stoa, name)  # the operator's copy of the phase follows within its sync interval
    with urllib.request.urlopen(server + "/", timeout=10) as console:  # noqa: S310
        assert console.status == 200
        assert "default-src 'self'" in console.headers["Content-Security-Policy"]
