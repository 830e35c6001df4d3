"""The whole product on the real control plane: ``helm install`` the chart, let the node agent run the
operator pod it creates, apply ``examples/debate/`` (its ModelPolicy pointed at a scripted fake model), and
run every pod the controller-manager makes (operator, 2 gateways, 3 agents x 2 replicas) as local
processes. The debate must finish ``Succeeded`` with every turn stored once, in order — also when the
ACTIVE replica of ``team-a`` goes away in the middle of its turn, in two ways (``mode``):

- ``delete``: ``kubectl delete pod``. SIGTERM lets the victim finish its turn; the hot standby takes over
  with the next message.
- ``kill9``: the container process is SIGKILLed while it holds the turn's message unacked (a crash). The
  standby gets the redelivered message and redoes the turn; the node agent restarts the process in the
  same pod (``restartPolicy: Always``), which comes back as a standby.

Either way Agent status names the standby. The timeline is printed (``-s`` or on failure) and described in
docs/e2e.md.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import signal
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pytest
import yaml

from stoa_devenv.cluster import ControlPlane
from stoa_devenv.postgres import PostgresServer
from stoa_devenv.rabbitmq import RabbitMQServer
from tests.e2e.debate.cluster import REPO, Connections, fetch, helm, kubectl, private_connections, wait_for
from tests.e2e.debate.fake_debate import DebateModel, Hold
from tests.e2e.debate.timeline import GROUP, Timeline, pod_ready, pod_restarts
from tests.e2e.nodeagent.agent import NodeAgent
from tests.e2e.nodeagent.fixtures import NodeAgentFactory
from tests.e2e.kube import JSON, Kube, KubeError

CHART = REPO / "charts" / "stoa"
EXAMPLES = REPO / "examples" / "debate"
CONVERSATION = "ai-jobs-debate"
VICTIM_AGENT = "team-a"
HELD_TURN = 2  # team-a's 2nd request to the model (turn 5) is held while its pod is deleted
DEBATE_BUDGET_SECONDS = 150
Mode = Literal["delete", "kill9"]
OPERATOR_ENV = {
    # Snappier status for a test that watches it (defaults: 30 s drift timer, 10 s conversation sync).
    "STOA_OPERATOR_RESYNC_SECONDS": "2",
    "STOA_OPERATOR_CONVERSATION_SYNC_SECONDS": "1",
    "STOA_OPERATOR_RETRY_SECONDS": "2",
}


def _examples() -> list[JSON]:
    docs: list[JSON] = []
    for path in sorted(EXAMPLES.glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def _with_model(docs: list[JSON], base_url: str) -> list[JSON]:
    """The applied copy: every ModelPolicy target points at the fake model on loopback. Everything else,
    the Agents' ``spec.env`` runtime knobs (``STOA_HISTORY_TURNS``) included, is applied as written."""
    for doc in docs:
        if doc["kind"] == "ModelPolicy":
            for target in doc["spec"]["targets"]:
                target["baseURL"] = base_url
    return docs


def _secret(name: str, namespace: str, conn: Connections) -> JSON:
    data = {"rabbitmqUrl": conn.rabbitmq_url, "postgresDsn": conn.postgres_dsn}
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace},
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
    }


def _deployment_ready(kube: Kube, namespace: str, name: str, replicas: int) -> bool:
    deployment = kube.get_or_none(f"/apis/apps/v1/namespaces/{namespace}/deployments/{name}")
    status = (deployment or {}).get("status") or {}
    return (
        int(status.get("availableReplicas") or 0) >= replicas
        and int(status.get("readyReplicas") or 0) >= replicas
    )


def _cr(kube: Kube, namespace: str, plural: str, name: str) -> JSON:
    return kube.get(f"{GROUP}/namespaces/{namespace}/{plural}/{name}")


def _dump(plane: ControlPlane, node: NodeAgent, namespaces: list[str], timeline: Timeline | None) -> None:
    """Everything needed to debug a failure: timeline, operator/agent logs, events, custom resources."""
    if timeline is not None:
        print(f"--- timeline\n{timeline.render()}")
    for namespace in namespaces:
        for pod in node.pod_names(namespace):
            with_log = node.logs(pod, namespace).splitlines()[-60:]
            print(f"--- logs {namespace}/{pod}\n" + "\n".join(with_log))
        for args in (
            ("get", "events", "--sort-by=.lastTimestamp"),
            ("get", "stoa,deploy,pods", "-o", "wide"),
        ):
            try:
                print(
                    f"--- kubectl -n {namespace} {' '.join(args)}\n{kubectl(plane, '-n', namespace, *args)}"
                )
            except AssertionError as err:
                print(err)
    print(f"--- node agent\n{node.describe(tail=40)}")


@pytest.fixture
def connections(postgres: PostgresServer, rabbitmq: RabbitMQServer) -> Connections:
    return private_connections(postgres, rabbitmq)


@pytest.fixture
def namespaces(control_plane: ControlPlane) -> Iterator[tuple[str, str]]:
    """(release namespace, debate namespace), deleted afterwards."""
    suffix = uuid.uuid4().hex[:6]
    names = (f"stoa-sys-{suffix}", f"debate-{suffix}")
    kube = Kube.from_kubeconfig(control_plane.kubeconfig)
    for name in names:
        kube.create("/api/v1/namespaces", {"metadata": {"name": name}})
    yield names
    for name in names:
        kubectl(control_plane, "delete", "namespace", name, "--wait=false")


@dataclass
class DebateRun:
    """One run of the scenario; each method is one phase and records what it saw on the timeline."""

    plane: ControlPlane
    node: NodeAgent
    model: DebateModel
    hold: Hold
    conn: Connections
    release_ns: str
    ns: str
    docs: list[JSON]
    timeline: Timeline
    mode: Mode
    release: str = ""
    replicas_before: list[str] = field(default_factory=list)
    victim: str = ""
    debate_started: float = 0.0
    debate_seconds: float = 0.0

    @property
    def kube(self) -> Kube:
        return self.timeline.kube

    def agent_status(self) -> JSON:
        status: JSON = _cr(self.kube, self.ns, "agents", VICTIM_AGENT).get("status") or {}
        return status

    def agent_status_with(self, active_pod: str) -> JSON | None:
        status = self.agent_status()
        return status if status.get("activePod") == active_pod else None

    def install(self, tmp_path: Path) -> None:
        """CRDs (crds/ is the source of truth; a unit test keeps charts/stoa/crds identical), the connection
        Secret in both namespaces, then ``helm install`` without the chart's crds/."""
        plane, kube = self.plane, self.kube
        kubectl(plane, "apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds"))
        kubectl(plane, "wait", "--for=condition=Established", "--timeout=60s", "crd", "--all")
        for namespace in (self.release_ns, self.ns):
            kube.create(
                f"/api/v1/namespaces/{namespace}/secrets", _secret("stoa-connections", namespace, self.conn)
            )
        values = {
            "image": {"tag": "e2e"},
            "connections": {"secretName": "stoa-connections"},
            "operator": {
                "watchNamespaces": [self.ns],
                "extraEnv": [{"name": k, "value": v} for k, v in OPERATOR_ENV.items()],
            },
        }
        values_file = tmp_path / "values.yaml"
        values_file.write_text(yaml.safe_dump(values))
        self.release = f"stoa-e2e-{self.release_ns.rsplit('-', 1)[1]}"
        helm(
            plane,
            "install",
            self.release,
            str(CHART),
            "-n",
            self.release_ns,
            "--skip-crds",
            "-f",
            str(values_file),
        )
        self.timeline.start()
        self.timeline.mark(f"helm install {self.release} done")
        operator = wait_for(lambda: self.node.pod_names(self.release_ns), 60, "the operator pod on the node")[
            0
        ]
        self.timeline.mark(f"operator pod {operator} running on the node agent")

    def apply_examples(self) -> None:
        """All of examples/debate/ at once, as a user's ``kubectl apply -f`` does: the Conversation may start
        before the gateway serves (agents wait for an endpoint that refuses connections). Then wait until
        every gateway and agent replica is Ready; the debate cannot pass team-a's held 2nd turn meanwhile."""
        self.debate_started = time.monotonic()
        kubectl(self.plane, "apply", "-n", self.ns, "-f", "-", stdin=yaml.safe_dump_all(self.docs))
        self.timeline.mark("applied examples/debate/ (ModelPolicy, Agents and Conversation at once)")
        agents = [d for d in self.docs if d["kind"] == "Agent"]
        names = ["stoa-gateway", *(f"agent-{d['metadata']['name']}" for d in agents)]
        for name in names:
            ready = functools.partial(_deployment_ready, self.kube, self.ns, name, 2)
            wait_for(ready, 150, f"2 ready replicas of {name}")
        self.timeline.mark("gateway 2/2 and agents 2/2 ready")
        pods = self.kube.get(
            f"/api/v1/namespaces/{self.ns}/pods", labelSelector=f"stoa.dev/agent={VICTIM_AGENT}"
        )
        self.replicas_before = sorted(p["metadata"]["name"] for p in pods["items"])

    def lose_active_mid_turn(self) -> None:
        """team-a's 2nd turn is in flight (held at the model): find its ACTIVE replica, then lose it."""
        hold, timeline = self.hold, self.timeline
        assert hold.held.wait(90), f"{VICTIM_AGENT} never asked the model for its turn {HELD_TURN}"
        timeline.mark(f"{VICTIM_AGENT} asks the model for its 2nd turn (held)", hold.held_at)
        activity = fetch(
            self.conn.postgres_dsn,
            "SELECT pod FROM stoa.agent_activity WHERE agent = $1",
            f"{self.ns}/{VICTIM_AGENT}",  # the runtime's agent key is namespace-scoped
        )
        assert activity, "the runtime recorded no active replica"
        self.victim = str(activity[0]["pod"])
        assert self.victim in self.replicas_before
        status = wait_for(
            lambda: self.agent_status_with(self.victim),
            30,
            f"Agent status activePod={self.victim}",
        )
        timeline.mark(f"before: Agent {VICTIM_AGENT} status {_agent_summary(status)}")
        if self.mode == "delete":
            self._delete_victim()
        else:
            self._kill_victim()

    def _delete_victim(self) -> None:
        """``kubectl delete pod``; once the node agent has sent SIGTERM, the model answers the victim."""
        hold, timeline = self.hold, self.timeline
        kubectl(self.plane, "-n", self.ns, "delete", "pod", self.victim, "--wait=false")
        timeline.mark(f"kubectl delete pod {self.victim} (the active replica, mid-turn)")
        wait_for(lambda: self.node.pod_terminating(self.victim, self.ns), 10, "SIGTERM to the victim")
        timeline.mark(f"node agent sent SIGTERM to {self.victim}")
        time.sleep(0.5)
        hold.release()
        timeline.mark("model answers the held request")

    def _kill_victim(self) -> None:
        """SIGKILL the victim's process while its request is held. The standby must redo and store the turn
        while that request is still held; it is answered only afterwards, to a client that is gone."""
        hold, timeline = self.hold, self.timeline
        pid = self.node.kill_pod_process(self.victim, self.ns, sig=signal.SIGKILL)
        timeline.mark(f"kill -9 {self.victim} (pid {pid}, the active replica, holding the turn unacked)")
        assert hold.followed.wait(30), f"no replica of {VICTIM_AGENT} asked the model for the turn again"
        timeline.mark(
            f"{VICTIM_AGENT} asks the model for its 2nd turn again (answered at once)", hold.followed_at
        )

        def stored() -> bool:
            query = "SELECT seq FROM stoa.turns WHERE speaker = $1"
            return len(fetch(self.conn.postgres_dsn, query, VICTIM_AGENT)) >= HELD_TURN

        wait_for(stored, 30, f"{VICTIM_AGENT}'s turn {HELD_TURN} stored while the killed request is held")
        assert not hold.released.is_set()
        hold.release()
        timeline.mark("model answers the killed process's held request (its client is gone)")

    def wait_succeeded(self) -> JSON:
        def succeeded() -> JSON | None:
            status: JSON = _cr(self.kube, self.ns, "conversations", CONVERSATION).get("status") or {}
            assert status.get("phase") != "Failed", status
            return status if status.get("phase") == "Succeeded" else None

        status = wait_for(succeeded, DEBATE_BUDGET_SECONDS, "Conversation phase Succeeded")
        self.debate_seconds = time.monotonic() - self.debate_started
        self.timeline.mark("Conversation Succeeded")
        return status

    def stored_turns(self, uid: str) -> list[dict[str, Any]]:
        return fetch(
            self.conn.postgres_dsn,
            "SELECT seq, speaker, pod, message_id, content, extract(epoch FROM created_at)::float8 AS at"
            " FROM stoa.turns WHERE conversation_id = $1 ORDER BY seq",
            uuid.UUID(uid),
        )

    def check_takeover(self, turns: list[dict[str, Any]]) -> JSON:
        """Which replica stored which of team-a's turns, and the Agent status that follows.

        ``delete``: the victim stored its turns up to the held one (finished during its graceful stop), the
        former hot standby every later one. ``kill9``: the victim stored the turns before the held one; the
        held turn, stored exactly once, and every later one come from the former standby. The victim's
        restarted process keeps the pod name, so ``pod`` cannot tell the two processes of the victim apart;
        what it shows is that the victim pod stored nothing from the held turn on, i.e. neither the killed
        process (its request was answered only after the standby had stored the turn) nor its successor
        (a standby) did.
        """
        team_a = [t for t in turns if t["speaker"] == VICTIM_AGENT]
        held = team_a[HELD_TURN - 1]
        last_by_victim = held["seq"] if self.mode == "delete" else held["seq"] - 1
        assert {t["pod"] for t in team_a if t["seq"] <= last_by_victim} == {self.victim}, team_a
        after = [t for t in team_a if t["seq"] > last_by_victim]
        standbys = {t["pod"] for t in after}
        assert len(standbys) == 1, team_a
        standby = standbys.pop()
        assert standby != self.victim
        assert standby in self.replicas_before, f"{standby} is not the standby that ran before {self.mode}"
        if self.mode == "delete":
            self.timeline.mark(
                f"turn {held['seq']} stored by {self.victim} (finished during its graceful stop)",
                _wall_to_monotonic(float(held["at"])),
            )
            self.timeline.mark(
                f"turn {after[0]['seq']} stored by {standby} (the standby took over)",
                _wall_to_monotonic(float(after[0]["at"])),
            )
        else:
            assert [t["pod"] for t in turns if t["seq"] == held["seq"]] == [standby]
            self.timeline.mark(
                f"turn {held['seq']} stored by {standby} (the standby redid the killed process's turn)",
                _wall_to_monotonic(float(held["at"])),
            )
        # The model is called at least once per turn, the turn is stored once: the killed process's
        # request was answered too (the fake counts it), so team-a asked once more than it spoke.
        extra = 0 if self.mode == "delete" else 1
        assert self.hold.seen == len(team_a) + extra, (self.hold.seen, len(team_a))
        status = wait_for(
            lambda: self.agent_status_with(standby),
            30,
            f"Agent status activePod={standby}",
        )
        self.timeline.mark(f"after: Agent {VICTIM_AGENT} status {_agent_summary(status)}")
        # kill9: previousPod is the victim's name, which its restarted process also carries. That process
        # is a standby (it registered on the queue after the standby, which RabbitMQ promoted at once) and a
        # standby never records activity, so the row still says "standby took over from the victim". Had
        # the same pod name become active again (replicas: 1), the runtime would count no takeover and set
        # previousPod to the pod itself (stoa_agents/store/repo.py record_activity): the crash would not
        # show in Agent status at all. examples/debate runs 2 replicas, so a standby takes over here.
        assert status["previousPod"] == self.victim
        assert status["takeovers"] >= 1
        return status

    def check_victim_restarted(self) -> None:
        """kill9: the node agent restarted the victim's container in the same pod, and it is Ready again."""

        def restarted() -> JSON | None:
            pod = self.kube.get_or_none(f"/api/v1/namespaces/{self.ns}/pods/{self.victim}") or {}
            return pod if pod_restarts(pod) >= 1 and pod_ready(pod) else None

        wait_for(restarted, 60, f"pod {self.victim} restarted and Ready")
        self.timeline.mark(f"pod {self.victim} Ready again after its restart (a standby now)")


AGENT_KEYS = ("activePod", "previousPod", "takeovers", "readyReplicas", "standbyReplicas", "turnsHandled")


def _agent_summary(status: JSON) -> str:
    return " ".join(f"{k}={status.get(k)}" for k in AGENT_KEYS)


def _wall_to_monotonic(epoch: float) -> float:
    return time.monotonic() - (time.time() - epoch)


@pytest.mark.parametrize("mode", ["delete", "kill9"])
def test_debate_survives_losing_the_active_replica_mid_turn(
    mode: Mode,
    *,
    control_plane: ControlPlane,
    node_agent_factory: NodeAgentFactory,
    connections: Connections,
    namespaces: tuple[str, str],
    tmp_path: Path,
) -> None:
    started = time.monotonic()
    release_ns, ns = namespaces
    docs = _examples()
    agents = {
        d["metadata"]["name"]: (d["spec"]["role"], d["spec"]["persona"]) for d in docs if d["kind"] == "Agent"
    }
    hold = Hold(VICTIM_AGENT, HELD_TURN)
    model = DebateModel(agents, hold).start()
    node = node_agent_factory(namespaces=[release_ns, ns])
    kube = Kube.from_kubeconfig(control_plane.kubeconfig)
    timeline = Timeline(kube, ns, CONVERSATION, VICTIM_AGENT, started=started)
    run = DebateRun(
        control_plane,
        node,
        model,
        hold,
        connections,
        release_ns,
        ns,
        _with_model(docs, model.base_url),
        timeline,
        mode,
    )
    try:
        run.install(tmp_path)
        run.apply_examples()
        run.lose_active_mid_turn()
        status = run.wait_succeeded()

        # Status and the store agree, turn for turn: contiguous seqs, no duplicate, round robin, a verdict.
        conversation = _cr(kube, ns, "conversations", CONVERSATION)
        turns = run.stored_turns(conversation["metadata"]["uid"])
        seqs = [int(t["seq"]) for t in turns]
        assert seqs == list(range(1, len(turns) + 1)), f"missing or duplicated turns: {seqs}"
        assert len({t["message_id"] for t in turns}) == len(turns)
        assert status["turns"] == len(turns), (status, len(turns))
        spec = conversation["spec"]
        assert len(turns) == min(spec["maxTurns"], spec["maxRounds"] * 3 + 1)
        order = ["moderator", "team-a", "team-b"]
        assert [t["speaker"] for t in turns] == [order[(s - 1) % 3] for s in seqs]
        assert "VERDICT: END" in turns[-1]["content"]
        assert status.get("observedGeneration") == conversation["metadata"]["generation"]

        agent_status = run.check_takeover(turns)
        if mode == "kill9":
            run.check_victim_restarted()
        total = time.monotonic() - started
        timeline.stop()
        summary = {
            "conversation.status": {
                k: status.get(k) for k in ("phase", "turns", "lastSpeaker", "startedAt", "finishedAt")
            },
            "conversation.Ready": next(c for c in status["conditions"] if c["type"] == "Ready"),
            f"agent {VICTIM_AGENT}.status": {k: agent_status.get(k) for k in AGENT_KEYS},
        }
        print(f"--- timeline\n{timeline.render()}")
        print(f"--- final status\n{yaml.safe_dump(summary, sort_keys=False)}")
        print(f"--- durations: debate {run.debate_seconds:.1f}s, e2e {total:.1f}s, {len(turns)} turns")
    except BaseException:
        timeline.stop()
        _dump(control_plane, node, [release_ns, ns], timeline)
        raise
    finally:
        timeline.stop()
        model.stop()
        if run.release:
            _uninstall(control_plane, kube, run.release, release_ns, ns)


def _uninstall(plane: ControlPlane, kube: Kube, release: str, release_ns: str, ns: str) -> None:
    """Delete the Conversation while the operator runs (its finalizer stops the conversation), then
    uninstall: the operator must not outlive the test, and no finalizer may keep the namespace."""
    path = f"{GROUP}/namespaces/{ns}/conversations/{CONVERSATION}"
    with contextlib.suppress(KubeError):
        kube.delete(path)
    with contextlib.suppress(AssertionError):
        wait_for(lambda: kube.get_or_none(path) is None, 30, "the Conversation deleted by its finalizer")
    if kube.get_or_none(path) is not None:  # the operator is broken: release the namespace anyway
        print(f"NOTE Conversation {ns}/{CONVERSATION} kept its finalizer; removing it")
        kube.patch(path, {"metadata": {"finalizers": []}}, kind="merge-patch")
    helm(plane, "uninstall", release, "-n", release_ns, "--wait", "--timeout", "60s")
