"""A release's life on the real node: upgraded from the previous chart version while a conversation runs,
two tenants with a database and a vhost each, and ``helm uninstall``.

The module's release starts as the previous version (its chart, CRDs, examples and Stoa image, from git)
and is upgraded as docs/install.md "Upgrading" says while team-a's turn is held; the tests then check what
the upgrade kept, that each namespace's Conversations land in its own database (tenant B's PostgreSQL is
its own pod, its role, database and vhost made with install.md's commands), and what ``helm uninstall``
stops, keeps and removes (install.md "Uninstalling").
"""

from __future__ import annotations

import asyncio
import base64
import re
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import pytest
import yaml

from stoa_agents.identity import archived_name
from stoa_devenv.imageload import load_into_containerd
from stoa_devenv.imagespec import chart_image_values
from stoa_devenv.netbed import NODE_IP
from tests.e2e.fake_debate import DebateModel, Hold
from tests.e2e.node.bed import REPO, Bed, pod_ready, wait_for
from tests.e2e.node.previous import Previous, previous_image, previous_release
from tests.e2e.node.stoa_install import CHART, OPERATOR_ENV, Install, examples

JSON = dict[str, Any]
INSTALL_MD = REPO / "docs" / "install.md"
TENANT_PASSWORD = "CHANGE-ME"  # install.md's placeholder: this PostgreSQL and vhost exist for the test only
KINDS = "conversations.stoa.dev,agents.stoa.dev,modelpolicies.stoa.dev"


def _block(marker: str) -> list[str]:
    """The lines of the code block of docs/install.md that starts with the comment ``marker``."""
    text = INSTALL_MD.read_text()
    found = re.search(r"```\w*\n[#-]+ " + re.escape(marker) + r"\n(.*?)```", text, re.DOTALL)
    assert found, f"docs/install.md has no code block marked {marker}"
    return [line for line in found.group(1).splitlines() if line.strip()]


@dataclass
class Lifecycle:
    inst: Install
    tenant: str  # namespace B: its own PostgreSQL and vhost
    tenant_dsn: str  # tenant B's DSN from the host (its Service's ClusterIP)
    previous: Previous
    upgrade: JSON  # what the upgrade did (checked by the upgrade test)


def _values(inst: Install, tenant: str) -> JSON:
    return {
        "bundled": {"enabled": True, "agentNamespaces": [inst.ns], "model": {"enabled": False}},
        "operator": {
            "watchNamespaces": [inst.ns, tenant],
            "extraEnv": [{"name": k, "value": v} for k, v in OPERATOR_ENV.items()],
        },
    }


def _helm(
    inst: Install, action: str, chart: Path, *, values: JSON, images: dict[str, str], tmp: Path
) -> None:
    values_file = tmp / f"values-{action}.yaml"
    values_file.write_text(yaml.safe_dump(values))
    sets = [f"--set={k}={v}" for k, v in chart_image_values(images).items()]
    inst.bed.helm(action, inst.release, str(chart), "-n", inst.release_ns, "-f", str(values_file), *sets,
             "--wait", "--timeout", "6m")  # fmt: skip


def _wait_phase(inst: Install, name: str, namespace: str | None = None, budget: float = 180) -> JSON:
    ns = namespace or inst.ns

    def ended() -> JSON | None:
        status: JSON = inst.bed.get("conversations.stoa.dev", name, "-n", ns).get("status") or {}
        return status if status.get("phase") in ("Succeeded", "Failed") else None

    status = wait_for(ended, budget, f"Conversation {ns}/{name} to end", every=0.5)
    assert status["phase"] == "Succeeded", status
    return status


TENANT_POSTGRES = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: tenant-postgres}
spec:
  replicas: 1
  selector: {matchLabels: {app: tenant-postgres}}
  template:
    metadata: {labels: {app: tenant-postgres}}
    spec:
      enableServiceLinks: false
      securityContext: {runAsNonRoot: true, runAsUser: 999, runAsGroup: 999, fsGroup: 999}
      containers:
        - name: postgres
          image: IMAGE
          imagePullPolicy: IfNotPresent
          env:
            - {name: POSTGRES_USER, value: admin}
            - {name: POSTGRES_PASSWORD, value: admin-pw}
            - {name: POSTGRES_DB, value: postgres}
            - {name: PGDATA, value: /var/lib/postgresql/data/pgdata}
          ports: [{containerPort: 5432}]
          readinessProbe:
            exec: {command: [pg_isready, -h, 127.0.0.1, -U, admin]}
            periodSeconds: 2
          securityContext:
            readOnlyRootFilesystem: true
            allowPrivilegeEscalation: false
            capabilities: {drop: [ALL]}
          volumeMounts:
            - {name: data, mountPath: /var/lib/postgresql/data}
            - {name: run, mountPath: /var/run/postgresql}
            - {name: tmp, mountPath: /tmp}
      volumes: [{name: data, emptyDir: {}}, {name: run, emptyDir: {}}, {name: tmp, emptyDir: {}}]
---
apiVersion: v1
kind: Service
metadata: {name: tenant-postgres}
spec:
  selector: {app: tenant-postgres}
  ports: [{port: 5432, targetPort: 5432}]
"""


def _own_postgres(bed: Bed, namespace: str) -> str:
    """A PostgreSQL of the tenant's own (not the chart's): the bundled image as a Deployment and Service
    in its namespace, ready; returns its Service's ClusterIP."""
    bed.kubectl(
        "apply", "-n", namespace, "-f", "-", stdin=TENANT_POSTGRES.replace("IMAGE", bed.images["postgres"])
    )
    wait_for(lambda: [p for p in bed.pods(namespace, "app=tenant-postgres") if pod_ready(p)], 120,
             "tenant B's PostgreSQL Ready")  # fmt: skip
    return str(bed.get("service", "tenant-postgres", "-n", namespace)["spec"]["clusterIP"])


def _make_tenant(bed: Bed, inst: Install, tenant: str) -> str:
    """Tenant B's role, database and vhost with docs/install.md's commands, and its connection Secret."""
    ip = _own_postgres(bed, tenant)
    (pg_pod,) = [p["metadata"]["name"] for p in bed.pods(tenant, "app=tenant-postgres")]
    sql = "\n".join(_block("stoa-tenant-sql")) + "\n"
    bed.kubectl("exec", "-i", "-n", tenant, pg_pod, "--", "psql", "-v", "ON_ERROR_STOP=1", "-U", "admin",
                "-d", "postgres", "-f", "-", stdin=sql)  # fmt: skip
    (mq_pod,) = [
        p["metadata"]["name"] for p in bed.pods(inst.release_ns, "app.kubernetes.io/component=rabbitmq")
    ]
    for line in _block("stoa-tenant-rabbitmq"):
        bed.kubectl("exec", "-n", inst.release_ns, mq_pod, "--", "sh", "-c", line)
    user, db, vhost = "stoa_team_b", "stoa_team_b", "stoa-team-b"  # the names install.md uses
    bundled = bed.get("secret", "stoa-connections", "-n", inst.ns)["data"]["rabbitmqUrl"]
    mq_host = urlsplit(base64.b64decode(bundled).decode()).hostname  # the bundled RabbitMQ's Service
    bed.kubectl(
        "create", "secret", "generic", "stoa-connections", "-n", tenant,
        f"--from-literal=rabbitmqUrl=amqp://stoa-team-b:{TENANT_PASSWORD}@{mq_host}:5672/{vhost}",
        f"--from-literal=postgresDsn=postgresql://{user}:{TENANT_PASSWORD}@tenant-postgres.{tenant}.svc:5432/{db}",
    )  # fmt: skip
    return f"postgresql://{user}:{TENANT_PASSWORD}@{ip}:5432/{db}"


def _fetch(dsn: str, query: str, *args: object) -> list[JSON]:
    async def run() -> list[JSON]:
        conn = await asyncpg.connect(dsn, timeout=10)
        try:
            return [dict(r) for r in await conn.fetch(query, *args)]
        finally:
            await conn.close()

    return asyncio.run(run())


@pytest.fixture(scope="module")
def model() -> Iterator[DebateModel]:
    agents = {d["metadata"]["name"]: (d["spec"]["role"], d["spec"]["persona"])
              for d in examples("", "x", rounds=1) if d["kind"] == "Agent"}  # fmt: skip
    fake = DebateModel(agents, host=NODE_IP).start()
    yield fake
    fake.stop()


@pytest.fixture(scope="module")
def life(bed: Bed, model: DebateModel, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lifecycle]:
    tmp = tmp_path_factory.mktemp("lifecycle")
    previous = previous_release()
    old_image = previous_image(previous)
    load_into_containerd(bed.bed.containerd_socket, [old_image])
    suffix = uuid.uuid4().hex[:6]
    inst = Install(bed, f"stoa-{suffix}", f"stoa-sys-{suffix}", f"life-a-{suffix}")
    tenant = f"life-b-{suffix}"
    for namespace in (inst.release_ns, inst.ns, tenant):
        bed.kubectl("create", "namespace", namespace)
    try:
        # The previous version: its CRDs (Helm installs crds/ only when they are absent), chart and image.
        bed.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(previous.chart / "crds"))
        values = _values(inst, tenant)
        _helm(
            inst,
            "install",
            previous.chart,
            values=values,
            images={**bed.images, "stoa": old_image.ref},
            tmp=tmp,
        )
        docs = examples(model.base_url, "upgrade", rounds=3, directory=previous.examples)
        inst.apply([d for d in docs if d["kind"] != "Conversation"])
        inst.wait_ready(["stoa-gateway", "agent-moderator", "agent-team-a", "agent-team-b"])
        hold = model.hold = Hold("team-a", 2)
        inst.apply([d for d in docs if d["kind"] == "Conversation"])
        try:
            assert hold.held.wait(90), "team-a never asked for its 2nd turn under the previous version"
            # docs/install.md "Upgrading", with team-a's turn in flight.
            started = time.monotonic()
            bed.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CHART / "crds"))
            _helm(inst, "upgrade", CHART, values=values, images=bed.images, tmp=tmp)
            upgraded_in = time.monotonic() - started
        finally:
            hold.release()
            model.hold = None
        status = _wait_phase(inst, "upgrade")
        record = {"status": status, "seconds": upgraded_in, "from": previous.version}
        yield Lifecycle(inst, tenant, _make_tenant(bed, inst, tenant), previous, record)
    except BaseException:
        bed.dump([inst.release_ns, inst.ns, tenant])
        raise
    finally:
        bed.helm("uninstall", inst.release, "-n", inst.release_ns, "--wait", "--timeout", "4m", check=False)
        for namespace in (inst.release_ns, inst.ns, tenant):
            bed.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


def test_upgrade_from_the_previous_chart_version_keeps_the_running_conversation(
    bed: Bed, life: Lifecycle
) -> None:
    inst = life.inst
    status = life.upgrade["status"]
    conversation = inst.cr("conversations", "upgrade")
    turns = inst.fetch(
        "SELECT seq, speaker, pod FROM stoa.turns WHERE conversation_id = $1 ORDER BY seq",
        uuid.UUID(conversation["metadata"]["uid"]),
    )
    # Every turn once, in order, across the upgrade: 3 rounds with a moderator.
    assert [t["seq"] for t in turns] == list(range(1, 11)) == list(range(1, status["turns"] + 1))
    assert [t["speaker"] for t in turns] == ["moderator", "team-a", "team-b"] * 3 + ["moderator"]
    # The release runs the new chart, and the new image in the operator and in every pod it builds.
    history = bed.helm("history", inst.release, "-n", inst.release_ns, "-o", "yaml")
    charts = [entry["chart"] for entry in yaml.safe_load(history)]
    current = yaml.safe_load((CHART / "Chart.yaml").read_text())["version"]
    assert charts == [f"stoa-{life.previous.version}", f"stoa-{current}"]

    def rolled() -> list[JSON] | None:
        pods = [*bed.pods(inst.release_ns, "app.kubernetes.io/component=operator"), *bed.pods(inst.ns)]
        current_pods = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
        done = all(
            p["spec"]["containers"][0]["image"] == bed.images["stoa"] and pod_ready(p) for p in current_pods
        )
        return current_pods if done and len(current_pods) == 1 + 2 * 4 else None

    wait_for(rolled, 180, "the operator, 3 agents x 2 and 2 gateways on the new image")
    # What 0.1.0 stored that 0.2.0 removed is gone from the resource (the API server prunes it).
    participants = conversation["spec"]["participants"]
    assert all("team" not in p for p in participants), participants
    crd = bed.get("crd", "conversations.stoa.dev")
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    assert "team" not in schema["properties"]["spec"]["properties"]["participants"]["items"]["properties"]
    served = next(
        c for c in inst.cr("modelpolicies", "debate-small")["status"]["conditions"] if c["type"] == "Served"
    )
    assert served["status"] == "True"
    print(f"--- upgrade from {life.previous.version} ({life.previous.revision[:12]}): helm upgrade took "
          f"{life.upgrade['seconds']:.1f}s; {len(turns)} turns, none lost or repeated")  # fmt: skip


def test_each_namespace_uses_its_own_connection_secret(bed: Bed, life: Lifecycle, model: DebateModel) -> None:
    """Two tenants: A on the bundled database, B on its own PostgreSQL (role and database made with
    install.md's commands) and its own vhost. No row of one lands in the other."""
    inst = life.inst
    b_docs = examples(model.base_url, "tenant-b", rounds=1)
    bed.kubectl("apply", "-n", life.tenant, "-f", "-", stdin=yaml.safe_dump_all(b_docs))
    inst.apply(examples(model.base_url, "tenant-a", rounds=1))
    a_status = _wait_phase(inst, "tenant-a")
    b_status = _wait_phase(inst, "tenant-b", namespace=life.tenant)
    a_uid = inst.cr("conversations", "tenant-a")["metadata"]["uid"]
    b_uid = bed.get("conversations.stoa.dev", "tenant-b", "-n", life.tenant)["metadata"]["uid"]
    a_dsn, b_dsn = inst.postgres_dsn(), life.tenant_dsn

    def names(dsn: str) -> set[str]:
        return {r["name"] for r in _fetch(dsn, "SELECT name FROM stoa.conversations")}

    assert f"{inst.ns}/tenant-a" in names(a_dsn)
    assert names(b_dsn) == {f"{life.tenant}/tenant-b"}  # B's database holds B's conversation only
    assert not any(n.startswith(f"{life.tenant}/") for n in names(a_dsn))
    assert (
        _fetch(b_dsn, "SELECT count(*) AS n FROM stoa.turns WHERE conversation_id = $1", uuid.UUID(b_uid))[0][
            "n"
        ]
        == b_status["turns"]
        == 4
    )
    assert (
        _fetch(a_dsn, "SELECT count(*) AS n FROM stoa.turns WHERE conversation_id = $1", uuid.UUID(a_uid))[0][
            "n"
        ]
        == a_status["turns"]
        == 4
    )
    assert (
        _fetch(b_dsn, "SELECT count(*) AS n FROM stoa.turns WHERE conversation_id = $1", uuid.UUID(a_uid))[0][
            "n"
        ]
        == 0
    )
    agents_b = {r["agent"] for r in _fetch(b_dsn, "SELECT agent FROM stoa.agent_activity")}
    assert agents_b == {f"{life.tenant}/{a}" for a in ("moderator", "team-a", "team-b")}
    assert not any(
        r["agent"].startswith(f"{life.tenant}/")
        for r in _fetch(a_dsn, "SELECT agent FROM stoa.agent_activity")
    )
    # B ran with install.md's privileges only: CONNECT and CREATE on its database, no role attributes.
    attributes = "SELECT rolsuper, rolcreatedb, rolcreaterole, rolbypassrls FROM pg_roles"
    (role,) = _fetch(b_dsn, f"{attributes} WHERE rolname = current_user")
    assert not any(role.values()), role


def test_helm_uninstall_stops_everything_and_keeps_what_it_says(
    bed: Bed, life: Lifecycle, model: DebateModel
) -> None:
    """install.md "Uninstalling": the drain hook stops B's running conversation (kept in B's own database,
    archived), every agent and gateway pod goes, no Stoa object is left, and the CRDs delete at once."""
    inst = life.inst
    hold = model.hold = Hold("team-a", 1)
    try:
        docs = examples(model.base_url, "running", rounds=2)
        bed.kubectl("apply", "-n", life.tenant, "-f", "-", stdin=yaml.safe_dump_all(docs))
        assert hold.held.wait(90), "tenant B's team-a never asked for its turn"
        uid = bed.get("conversations.stoa.dev", "running", "-n", life.tenant)["metadata"]["uid"]
        started = time.monotonic()
        out = bed.helm("uninstall", inst.release, "-n", inst.release_ns, "--wait", "--timeout", "5m")
        took = time.monotonic() - started
    finally:
        hold.release()
        model.hold = None
    # Stopped by the operator (the hook ran while it did), transcript kept in B's database, name freed.
    rows = _fetch(
        life.tenant_dsn,
        "SELECT name, phase, reason, turns FROM stoa.conversations WHERE id = $1",
        uuid.UUID(uid),
    )
    assert [(r["name"], r["phase"], r["reason"]) for r in rows] == [
        (archived_name(f"{life.tenant}/running", uid), "Failed", "Conversation resource deleted")
    ]
    assert rows[0]["turns"] >= 1
    # Nothing Stoa runs is left: no Stoa object, no agent or gateway pod (B's own PostgreSQL stays).
    for namespace in (inst.ns, life.tenant):
        assert bed.get(KINDS, "-n", namespace)["items"] == [], namespace
        left = [
            p["metadata"]["name"]
            for p in bed.pods(namespace)
            if not p["metadata"]["name"].startswith("tenant-postgres")
        ]
        assert left == [], left
    assert bed.pods(inst.release_ns) == [] or all(
        p["metadata"].get("deletionTimestamp") for p in bed.pods(inst.release_ns)
    )
    assert [p["metadata"]["name"] for p in bed.pods(life.tenant, "app=tenant-postgres")]
    # With no Stoa object left, deleting the CRDs completes at once (a later helm install recreates them).
    crds = ["agents.stoa.dev", "modelpolicies.stoa.dev", "conversations.stoa.dev"]
    bed.kubectl("delete", "crd", *crds, "--timeout=60s")
    print(f"--- helm uninstall took {took:.1f}s: {out.strip()}")
