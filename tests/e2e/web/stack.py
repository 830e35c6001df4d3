"""The product around ``stoa api`` for its stream, CLI and browser tests, from real parts on one machine:

- the operator (subprocess, its generated RBAC) reconciling ``examples/debate/`` in the team namespace;
- the gateway the operator configured: its ConfigMap's ``gateway.yaml`` served by ``stoa gateway`` on
  loopback (``gateway_port``; the API is told with ``STOA_API_GATEWAYS``, as the EndpointSlices of a
  Service cannot name loopback addresses);
- the agents: ``examples/debate`` Agents as local processes (2 replicas each, restarted when they die,
  ``stoa_agents.local.fleet``), with the environment the operator's builder gives their pods;
- two scripted fake models behind the policy's two targets (``primary``, then ``backup``).

There is no kubelet here (the real node is another issue's), so Pods of the operator's Deployments are
not run; everything they would run, runs as local processes with the same configuration.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

from stoa_agents.envcontract import Wiring, agent_env, literal_env
from stoa_agents.local.fleet import Fleet
from stoa_api.agent import AgentSpec
from stoa_devenv.cluster import ControlPlane
from stoa_devenv.procs import free_port
from stoa_operator.builders.common import GATEWAY_CONFIG_KEY, GATEWAY_NAME
from stoa_testing.fake_provider import Behaviour, Script
from tests.e2e.connections import Connections
from tests.e2e.fake_debate import DebateModel
from tests.e2e.operator.harness import OperatorProcess

REPO = Path(__file__).resolve().parents[3]
EXAMPLES = REPO / "examples" / "debate"
GROUP, VERSION = "stoa.dev", "v1alpha1"
POLICY = "debate-small"
AGENTS = ("moderator", "team-a", "team-b")
TURN_LATENCY = 0.35  # seconds per model answer: turns arrive one by one, as a person would watch them


def wait_for(check: Any, timeout: float, what: str, interval: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


async def await_for(check: Any, within: float, what: str, interval: float = 0.2) -> Any:
    deadline = time.monotonic() + within
    last = None
    while time.monotonic() < deadline:
        last = check()
        if inspect.isawaitable(last):
            last = await last
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"timed out after {within}s waiting for {what} (last: {last!r})")


def example_agents() -> list[dict[str, Any]]:
    """examples/debate/agents.yaml, without ``STOA_*`` env entries (the CRD refuses them)."""
    docs = [d for d in yaml.safe_load_all((EXAMPLES / "agents.yaml").read_text()) if d]
    for doc in docs:
        env = doc["spec"].get("env") or []
        doc["spec"]["env"] = [e for e in env if not str(e["name"]).startswith("STOA_")]
    return docs


def model_policy(primary: str, backup: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ModelPolicy",
        "metadata": {"name": POLICY},
        "spec": {
            "strategy": "failover",
            "targets": [
                {"name": "primary", "baseURL": primary, "model": "smollm2-135m", "timeoutSeconds": 10},
                {"name": "backup", "baseURL": backup, "model": "smollm2-135m", "timeoutSeconds": 10},
            ],
            "retry": {"attempts": 2, "baseBackoffSeconds": 0.05},
            # A short window: successes of earlier tests do not dilute the failures a test makes now.
            "circuitBreaker": {
                "minRequests": 2,
                "errorRateThreshold": 0.5,
                "windowSeconds": 5,
                "openSeconds": 5,
            },
        },
    }


@dataclass
class Stack:
    plane: ControlPlane
    admin: client.ApiClient
    ns: str
    conn: Connections
    op_kubeconfig: Path
    workdir: Path
    primary: DebateModel | None = None
    backup: DebateModel | None = None
    operator: OperatorProcess | None = None
    gateway_port: int = field(default_factory=free_port)
    gateway: subprocess.Popen[bytes] | None = None
    fleet: Fleet | None = None
    supervisor: asyncio.Task[None] | None = None
    latency: float = TURN_LATENCY

    @property
    def custom(self) -> client.CustomObjectsApi:
        return client.CustomObjectsApi(self.admin)

    @property
    def gateway_url(self) -> str:
        return f"http://127.0.0.1:{self.gateway_port}"

    @property
    def audit_path(self) -> Path:
        return self.workdir / "gateway-audit.jsonl"

    def create(self, plural: str, body: dict[str, Any]) -> None:
        try:
            self.custom.create_namespaced_custom_object(GROUP, VERSION, self.ns, plural, body)
        except ApiException as exc:
            if exc.status != 409:
                raise

    def get(self, plural: str, name: str) -> dict[str, Any] | None:
        try:
            found: dict[str, Any] = self.custom.get_namespaced_custom_object(
                GROUP, VERSION, self.ns, plural, name
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return found

    async def start(self) -> Stack:
        agents = example_agents()
        personas = {d["metadata"]["name"]: (d["spec"]["role"], d["spec"]["persona"]) for d in agents}
        self.primary = DebateModel(personas)
        self.backup = DebateModel(personas)
        # One debate whichever target answers: the backup continues the primary's count of arguments
        # (each target keeps its own behaviour: only the primary is made to fail).
        self.backup.state.counts = self.primary.state.counts
        self.backup.state._lock = self.primary.state._lock
        self.primary.start()
        self.backup.start()
        self.pace(TURN_LATENCY)
        self.create("modelpolicies", model_policy(self.primary.base_url, self.backup.base_url))
        for doc in agents:
            self.create("agents", doc)
        self.operator = OperatorProcess(
            self.op_kubeconfig,
            [self.ns],
            self.workdir / "operator.log",
            env_extra={"STOA_OPERATOR_RESYNC_SECONDS": "1", "STOA_OPERATOR_CONVERSATION_SYNC_SECONDS": "1"},
        ).start()
        config_path = self.workdir / "gateway.yaml"
        config_path.write_text(await asyncio.to_thread(self._gateway_config))
        self._start_gateway(config_path)
        self.fleet = Fleet(self._agent_envs(agents), 2, self.workdir / "agents", restart_delay=0.2)
        self.fleet.start()
        self.supervisor = asyncio.create_task(self._supervise())
        return self

    def _gateway_config(self) -> str:
        """The gateway config the operator rendered for this namespace (its ConfigMap), once it has it."""
        core = client.CoreV1Api(self.admin)

        def rendered() -> str | None:
            try:
                data = core.read_namespaced_config_map(GATEWAY_NAME, self.ns).data or {}
            except ApiException:
                return None
            text = data.get(GATEWAY_CONFIG_KEY)
            return text if text and POLICY in text else None

        text: str = wait_for(rendered, 60, f"ConfigMap {GATEWAY_NAME} with {POLICY}")
        return text

    def _start_gateway(self, config_path: Path) -> None:
        log = (self.workdir / "gateway.log").open("ab")
        self.gateway = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "stoa_cli.main",
                "gateway",
                "--config",
                str(config_path),
                "--host",
                "127.0.0.1",
                "--port",
                str(self.gateway_port),
                "--audit-log",
                str(self.audit_path),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()

        def ready() -> bool:
            try:
                with urllib.request.urlopen(f"{self.gateway_url}/readyz", timeout=1) as resp:  # noqa: S310
                    return bool(resp.status == 200)
            except OSError:
                return False

        wait_for(ready, 30, "the gateway")

    def _agent_envs(self, agents: list[dict[str, Any]]) -> dict[str, dict[str, str]]:
        envs = {}
        for doc in agents:
            name = doc["metadata"]["name"]
            spec = AgentSpec.model_validate(doc["spec"])
            wiring = Wiring(
                rabbitmq_url=self.conn.rabbitmq_url,
                postgres_dsn=self.conn.postgres_dsn,
                gateway_url=f"{self.gateway_url}/v1",
                namespace=self.ns,
                metrics_port_number=0,
            )
            tuning = {
                "STOA_HEARTBEAT_SECONDS": "2",
                "STOA_MODEL_BACKOFF_SECONDS": "0.05",
                "STOA_RELAY_INTERVAL_SECONDS": "2",
            }
            envs[name] = literal_env(agent_env(name, spec, wiring, tuning))
        return envs

    async def _supervise(self) -> None:
        assert self.fleet is not None
        while True:
            self.fleet.supervise()
            await asyncio.sleep(0.1)

    def pace(self, seconds: float) -> None:
        """Each model answer takes ``seconds`` (both targets)."""
        self.latency = seconds
        for model in (self.primary, self.backup):
            assert model is not None
            model.state.apply(Script(default=Behaviour(latency=seconds)))

    def fail_primary(self) -> None:
        """The primary target answers 503 from now on (its circuit opens after 2 failures)."""
        assert self.primary is not None
        self.primary.state.apply(Script(default=Behaviour(status=503, error_message="primary overloaded")))

    def heal_primary(self) -> None:
        assert self.primary is not None
        self.primary.state.apply(Script(default=Behaviour(latency=self.latency)))

    def kill(self, pod: str) -> bool:
        """SIGKILL one agent replica (a crash); the fleet restarts it as a new pod, a standby."""
        assert self.fleet is not None
        return self.fleet.kill(pod)

    def audit(self) -> list[dict[str, Any]]:
        if not self.audit_path.exists():
            return []
        return [json.loads(line) for line in self.audit_path.read_text().splitlines() if line]

    async def stop(self) -> None:
        if self.supervisor is not None:
            self.supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.supervisor
        if self.fleet is not None:
            await asyncio.to_thread(self.fleet.stop, 15.0)
        if self.gateway is not None and self.gateway.poll() is None:
            os.killpg(self.gateway.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.gateway.wait(10)
        if self.operator is not None:
            await asyncio.to_thread(self.operator.stop)
        for model in (self.primary, self.backup):
            if model is not None:
                model.stop()

    def describe(self) -> str:
        parts = []
        for name in ("operator.log", "gateway.log"):
            path = self.workdir / name
            if path.exists():
                parts.append(f"--- {name}\n" + "\n".join(path.read_text(errors="replace").splitlines()[-40:]))
        if self.fleet is not None:
            for replica in self.fleet.members.values():
                if replica.log.exists():
                    tail = replica.log.read_text(errors="replace").splitlines()[-12:]
                    parts.append(f"--- {replica.pod}\n" + "\n".join(tail))
        return "\n".join(parts)
