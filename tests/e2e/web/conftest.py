"""Fixtures of the ``stoa api`` e2e tests: the API with the chart's RBAC, a team namespace with its runtime
store, and callers (service-account tokens) with different rights."""

from __future__ import annotations

import asyncio
import base64
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from kubernetes import client, config

from stoa_devenv.cluster import ControlPlane
from stoa_devenv.postgres import PostgresServer
from stoa_devenv.procs import free_port
from stoa_devenv.rabbitmq import RabbitMQServer
from tests.e2e.connections import Connections, private_connections
from tests.e2e.operator.harness import install_crds, operator_kubeconfig
from tests.e2e.web import harness
from tests.e2e.web.harness import EDITOR, VIEWER, ApiServer
from tests.e2e.web.stack import Stack


@pytest.fixture(scope="package")
def admin(control_plane: ControlPlane) -> client.ApiClient:
    return config.new_client_from_config(str(control_plane.kubeconfig))


@pytest.fixture(scope="package")
def crds(control_plane: ControlPlane) -> ControlPlane:
    install_crds(control_plane)
    return control_plane


@pytest.fixture(scope="package")
def suffix() -> str:
    return uuid.uuid4().hex[:6]


@pytest.fixture(scope="package")
def api_namespace(admin: client.ApiClient, suffix: str) -> Iterator[str]:
    """The release namespace: the API's ServiceAccount and the chart's ClusterRoles for it and for users."""
    ns = harness.namespace(admin, f"stoa-web-{suffix}")
    for obj in harness.chart_api_objects(ns):
        harness.apply(admin, obj)
    yield ns
    client.CoreV1Api(admin).delete_namespace(ns)


@pytest.fixture(scope="package")
def gateway_port() -> int:
    """Where the team namespace's gateway listens (tests/e2e/web/stack.py)."""
    return free_port()


@pytest.fixture(scope="package")
def api_kubeconfig(
    control_plane: ControlPlane,
    admin: client.ApiClient,
    api_namespace: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Path:
    """The API's own identity: its chart ServiceAccount (a bound token, exactly the chart's RBAC)."""
    (sa,) = [o for o in harness.chart_api_objects(api_namespace) if o["kind"] == "ServiceAccount"]
    bearer = harness.token(admin, api_namespace, sa["metadata"]["name"], seconds=7200)
    return harness.kubeconfig(control_plane, bearer, tmp_path_factory.mktemp("api") / "api-kubeconfig")


@pytest.fixture(scope="package")
def api_server(
    api_kubeconfig: Path, *, crds: ControlPlane, team: str, gateway_port: int
) -> Iterator[ApiServer]:
    """``stoa api`` as its chart ServiceAccount. The team namespace's gateway is on loopback, which an
    EndpointSlice cannot name: the API is told where it is (``STOA_API_GATEWAYS``). Open streams
    re-check the caller every 3 s (default 60 s) so the revocation test is quick."""
    env = {"STOA_API_REAUTH_SECONDS": "3", "STOA_API_GATEWAYS": f"{team}=http://127.0.0.1:{gateway_port}"}
    server = ApiServer(api_kubeconfig, api_kubeconfig.parent / "api.log", env_extra=env).start()
    yield server
    server.stop()
    print(f"--- stoa api log\n{server.log_tail(80)}")


@pytest.fixture(scope="package")
def connections(postgres: PostgresServer, rabbitmq: RabbitMQServer) -> Connections:
    return private_connections(postgres, rabbitmq)


def connection_secret(conn: Connections, namespace: str) -> dict[str, object]:
    data = {"postgresDsn": conn.postgres_dsn, "rabbitmqUrl": conn.rabbitmq_url}
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "stoa-connections", "namespace": namespace},
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
    }


@pytest.fixture(scope="package")
def team(admin: client.ApiClient, suffix: str, connections: Connections) -> Iterator[str]:
    """Where the conversations live, with its connection Secret (a private database and vhost)."""
    ns = harness.namespace(admin, f"team-{suffix}")
    client.CoreV1Api(admin).create_namespaced_secret(ns, connection_secret(connections, ns))
    yield ns
    client.CoreV1Api(admin).delete_namespace(ns)


@dataclass(frozen=True)
class Users:
    editor: str  # stoa editor ClusterRole bound in the team namespace
    viewer: str  # stoa viewer ClusterRole bound in the team namespace
    nobody: str  # a ServiceAccount of the team namespace with no binding
    getter: str  # may get (only get) Conversations of the team namespace; nothing on Agents or policies
    outsider: str  # editor in its own namespace, nothing in the team namespace
    outsider_namespace: str
    names: dict[str, str]  # role -> "system:serviceaccount:<ns>:<name>"


@pytest.fixture(scope="package")
def users(admin: client.ApiClient, team: str, suffix: str) -> Iterator[Users]:
    other = harness.namespace(admin, f"other-{suffix}")
    tokens: dict[str, str] = {}
    names: dict[str, str] = {}
    for who in ("editor", "viewer", "nobody", "getter"):
        harness.service_account(admin, team, who)
        names[who] = f"system:serviceaccount:{team}:{who}"
    harness.bind(admin, team, team, "editor", EDITOR)
    harness.bind(admin, team, team, "viewer", VIEWER)
    harness.role(
        admin,
        team,
        "conversation-getter",
        [{"apiGroups": ["stoa.dev"], "resources": ["conversations"], "verbs": ["get"]}],
    )
    harness.bind_role(admin, team, "getter", "conversation-getter")
    harness.service_account(admin, other, "outsider")
    harness.bind(admin, other, other, "outsider", EDITOR)
    names["outsider"] = f"system:serviceaccount:{other}:outsider"
    for who in ("editor", "viewer", "nobody", "getter"):
        tokens[who] = harness.token(admin, team, who)
    tokens["outsider"] = harness.token(admin, other, "outsider")
    yield Users(
        tokens["editor"],
        tokens["viewer"],
        tokens["nobody"],
        tokens["getter"],
        tokens["outsider"],
        other,
        names,
    )
    client.CoreV1Api(admin).delete_namespace(other)


def conversation_body(
    name: str, agents: tuple[str, str, str] = ("moderator", "team-a", "team-b")
) -> dict[str, object]:
    moderator, pro, con = agents
    return {
        "name": name,
        "spec": {
            "topic": "AI and jobs",
            "participants": [
                {"agentRef": moderator, "role": "moderator"},
                {"agentRef": pro, "role": "pro"},
                {"agentRef": con, "role": "con"},
            ],
            "moderator": moderator,
            "maxTurns": 7,
        },
    }


@pytest.fixture(scope="package")
async def stack(
    control_plane: ControlPlane,
    *,
    crds: ControlPlane,
    admin: client.ApiClient,
    team: str,
    connections: Connections,
    gateway_port: int,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Stack]:
    """Operator, gateway, agents and fake models for the team namespace (tests/e2e/web/stack.py)."""
    op_kubeconfig = await asyncio.to_thread(operator_kubeconfig, control_plane, admin)
    workdir = tmp_path_factory.mktemp("stack")
    running = Stack(
        control_plane, admin, team, connections, op_kubeconfig, workdir, gateway_port=gateway_port
    )
    try:
        await running.start()
    except BaseException:
        print(running.describe())
        await running.stop()
        raise
    yield running
    print(running.describe())
    await running.stop()
