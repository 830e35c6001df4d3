"""Agent SLOs and probes through the operator on a real apiserver, with real agent processes.

The Agent's replicas run as local ``stoa agent`` processes in the Agent's namespace (same PostgreSQL and
RabbitMQ as the operator); the model is the fake provider, failing on purpose. The operator must: run
the probe (a real one-turn conversation), set ProbeFailing from its result, write status.slo from the
turn records (no Prometheus anywhere), show the budget in ``kubectl get agents``, create the SLO
PrometheusRule when that CRD exists, and time a probe out when no replica answers.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from stoa_agents.bus.broker import Bus
from stoa_agents.control import conversation_status, start_conversation
from stoa_agents.envcontract import Wiring, agent_env, literal_env
from stoa_agents.local.fleet import Fleet
from stoa_agents.store.db import open_pool
from stoa_api.agent import AgentSpec
from stoa_api.conversation import ConversationSpec
from stoa_devenv.cluster import ControlPlane
from stoa_devenv.postgres import PostgresServer
from stoa_devenv.procs import free_port, port_open, wait_until
from stoa_devenv.rabbitmq import RabbitMQServer
from tests.e2e.operator.harness import Cluster, OperatorProcess, cond, kubectl, wait_object

PROMETHEUS_RULE_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "prometheusrules.monitoring.coreos.com"},
    "spec": {
        "group": "monitoring.coreos.com",
        "names": {"kind": "PrometheusRule", "plural": "prometheusrules", "singular": "prometheusrule"},
        "scope": "Namespaced",
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
                        },
                    }
                },
            }
        ],
    },
}


@pytest.fixture(scope="module")
def prometheus_rule_crd(control_plane: ControlPlane) -> None:
    """The prometheus-operator's PrometheusRule kind (schema reduced to what the test needs)."""
    kubectl(control_plane, "apply", "--server-side", "-f", "-", stdin=yaml.safe_dump(PROMETHEUS_RULE_CRD))
    kubectl(control_plane, "wait", "--for=condition=Established", "crd/prometheusrules.monitoring.coreos.com")


class FakeModel:
    """The fake provider as a process (the test body is synchronous), scripted over its admin API."""

    def __init__(self, log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "stoa_testing.fake_provider",
                    "--port",
                    str(self.port),
                    "--status",
                    "503",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        wait_until(lambda: port_open(self.port), 30, "fake model", log)

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    def answer(self) -> None:
        request = urllib.request.Request(  # noqa: S310 (loopback URL we built)
            f"{self.url}/_admin/script",
            data=json.dumps({"default": {"status": 200}, "replies": ["A short answer."]}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=5):  # noqa: S310
            pass

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


@pytest.fixture
def failing_model(tmp_path: Path) -> Iterator[FakeModel]:
    fake = FakeModel(tmp_path / "fake-model.log")
    yield fake
    fake.stop()


def _agent_body(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "stoa.dev/v1alpha1",
        "kind": "Agent",
        "metadata": {"name": name},
        "spec": {
            "role": "member",
            "persona": "You answer in one sentence.",
            "modelPolicyRef": {"name": "obs-models"},
            "slo": {
                "window": "7d",
                "availability": {"objective": 99},
                "latency": {"objective": 95, "thresholdSeconds": 10},
            },
            "probe": {"intervalSeconds": 10, "timeoutSeconds": 5},
        },
    }


def _fleet(name: str, ns: str, spec: AgentSpec, *, model: str, pg: str, mq: str, log_dir: Path) -> Fleet:
    # Local replicas call the fake directly (no gateway runs without a node): its model, not the policy's.
    wiring = Wiring(
        rabbitmq_url=mq, postgres_dsn=pg, model_url=model, default_model="fake-model", namespace=ns,
        metrics_port_number=0,
    )  # fmt: skip
    tuning = {"STOA_MODEL_RETRIES": "0", "STOA_HEARTBEAT_SECONDS": "2", "STOA_MODEL_BACKOFF_SECONDS": "0.05"}
    env = literal_env(agent_env(name, spec, wiring, tuning))
    fleet = Fleet({name: env}, 1, log_dir, restart_delay=0.2)
    fleet.start()
    return fleet


async def _user_turns(pg: str, mq: str, ns: str, agent: str, count: int) -> None:
    """``count`` one-turn user conversations with the agent, waited for."""
    db = await open_pool(pg)
    bus = await Bus.connect(mq, name="stoa-e2e-obs")
    try:
        spec = ConversationSpec.model_validate(
            {"topic": "Say hello.", "participants": [{"agentRef": agent}], "maxTurns": 1}
        )
        names = [f"{ns}/user-{agent}-{i}" for i in range(count)]
        for name in names:
            await start_conversation(db, bus, name, spec)
        for _ in range(300):
            states = [await conversation_status(db, n) for n in names]
            if all(s is not None and s.phase.value in ("Succeeded", "Failed") for s in states):
                assert all(s is not None and s.phase.value == "Succeeded" for s in states), states
                return
            await asyncio.sleep(0.1)
        raise AssertionError(f"user conversations not finished: {states}")
    finally:
        await bus.close()
        await db.close()


def _slo(obj: dict[str, Any]) -> dict[str, Any]:
    return dict((obj.get("status") or {}).get("slo") or {})


def test_probe_and_slo_status_from_turn_records(
    cluster: Cluster,
    *,
    op_kubeconfig: Path,
    control_plane: ControlPlane,
    postgres: PostgresServer,
    rabbitmq: RabbitMQServer,
    operator_factory: list[OperatorProcess],
    prometheus_rule_crd: None,
    failing_model: FakeModel,
    tmp_path: Path,
    api: client.ApiClient,
) -> None:
    ns, name = cluster.ns, f"obs-{uuid.uuid4().hex[:5]}"
    cluster.secret("stoa-connections", {"postgresDsn": postgres.dsn, "rabbitmqUrl": rabbitmq.url})
    body = _agent_body(name)
    spec = AgentSpec.model_validate(body["spec"])
    fleet = _fleet(
        name,
        ns,
        spec,
        model=failing_model.base_url,
        pg=postgres.dsn,
        mq=rabbitmq.url,
        log_dir=tmp_path / "agents",
    )
    try:
        policy = {"targets": [{"name": "fake", "baseURL": failing_model.base_url, "model": "fake-model"}]}
        cluster.create(
            "modelpolicies",
            {"apiVersion": "stoa.dev/v1alpha1", "kind": "ModelPolicy", "metadata": {"name": "obs-models"},
             "spec": policy},
        )  # fmt: skip
        cluster.create("agents", body)
        op = OperatorProcess(op_kubeconfig, [ns], control_plane.base / f"operator-{ns}.log").start()
        operator_factory.append(op)

        # 1. The first probe is answered by a replica whose model fails: ProbeFailing, one bad event.
        failing = wait_object(
            cluster,
            "agents",
            name,
            lambda o: (cond_or_none(o, "ProbeFailing") or {}).get("status") == "True",
            90,
        )
        probing = cond(failing, "ProbeFailing")
        assert probing["reason"] == "ProbeFailed"
        assert "HTTP 503" in probing["message"]
        availability = _slo(failing)["availability"]
        assert availability["badEvents"] >= 1
        assert availability["errorBudgetRemaining"] < 0  # 1 bad of few events: far over a 1% budget
        assert failing["status"]["probe"]["lastResult"] == "Failed"
        assert failing["status"]["prometheusRule"] == f"stoa-slo-agent-{name}"

        # 2. The model recovers; user traffic and the next probe succeed: ProbeFailing clears, SLI rises.
        failing_model.answer()
        asyncio.run(_user_turns(postgres.dsn, rabbitmq.url, ns, name, 20))
        healthy = wait_object(
            cluster,
            "agents",
            name,
            lambda o: (cond_or_none(o, "ProbeFailing") or {}).get("status") == "False",
            60,
        )
        assert cond(healthy, "ProbeFailing")["reason"] == "ProbeSucceeded"
        recovered = wait_object(
            cluster, "agents", name, lambda o: _slo(o)["availability"]["events"] >= 22, 30
        )
        availability = _slo(recovered)["availability"]
        bad = availability["badEvents"]
        assert availability["sli"] == pytest.approx(100 * (1 - bad / availability["events"]), abs=1e-3)
        latency = _slo(recovered)["latency"]
        assert latency["events"] >= 21  # every stored turn (user turns and the successful probe)
        assert latency["badEvents"] == 0  # each took well under 10 s from delivery to commit
        assert latency["errorBudgetRemaining"] == 1
        # The probe never counts in the agent's totals: only the 20 user turns do.
        assert recovered["status"]["turnsHandled"] == 20
        burn = {r["window"]: r["rate"] for r in availability["burnRates"]}
        assert burn["5m"] > 0
        print(f"SLO status of Agent {ns}/{name} after injected failures: {recovered['status']['slo']}")

        # 3. kubectl shows the budget; the PrometheusRule holds the SLO's recordings and alerts.
        table = kubectl(control_plane, "get", "agents", "-n", ns, name).stdout
        assert "BUDGET" in table.splitlines()[0]
        assert recovered["status"]["errorBudgetRemaining"] in table
        rule = client.CustomObjectsApi(api).get_namespaced_custom_object(
            "monitoring.coreos.com", "v1", ns, "prometheusrules", f"stoa-slo-agent-{name}"
        )
        assert rule["metadata"]["ownerReferences"][0]["name"] == name
        alerts = {r.get("alert") for g in rule["spec"]["groups"] for r in g["rules"]}
        assert alerts == {None, "StoaSLOBurnRatePage", "StoaSLOBurnRateTicket"}

        # 4. No replica: the next probe times out (an unavailable agent is a failed turn in the SLI).
        fleet.stop()
        before = _slo(recovered)["availability"]["badEvents"]
        timed_out = wait_object(
            cluster,
            "agents",
            name,
            lambda o: (cond_or_none(o, "ProbeFailing") or {}).get("reason") == "ProbeTimedOut",
            60,
        )
        assert _slo(timed_out)["availability"]["badEvents"] == before + 1
        assert "no answer within 5s" in (timed_out["status"]["probe"]["lastReason"] or "")
    finally:
        fleet.stop()


def cond_or_none(obj: dict[str, Any], type_: str) -> dict[str, Any] | None:
    for item in (obj.get("status") or {}).get("conditions") or []:
        if item.get("type") == type_:
            return dict(item)
    return None
