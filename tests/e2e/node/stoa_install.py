"""Stoa installed with ``helm install`` in bundled mode on the real node: the chart's operator, bundled
RabbitMQ and PostgreSQL as real pods (images built from Debian packages, ``stoa_devenv.images``), and a
debate namespace whose Agents run from the Stoa image.

The model is a scripted fake on the node's address (``tests.e2e.fake_debate``), except in the one
test that installs the bundled model image.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import yaml

from stoa_devenv.imagespec import chart_image_values
from tests.e2e.node.bed import REPO, Bed, pod_ready, wait_for

CHART = REPO / "charts" / "stoa"
EXAMPLES = REPO / "examples" / "debate"
OPERATOR_ENV = {
    # Snappier status for tests that watch it (defaults: 30 s drift timer, 10 s conversation sync).
    "STOA_OPERATOR_RESYNC_SECONDS": "2",
    "STOA_OPERATOR_CONVERSATION_SYNC_SECONDS": "1",
    "STOA_OPERATOR_RETRY_SECONDS": "2",
}
# Services a user might own next to Stoa's: with Service links on, each would inject STOA_* variables
# (STOA_MODEL_PORT=tcp://..., STOA_METRICS_SERVICE_HOST=...) into every pod of the namespace.
USER_SERVICES = ("stoa-model", "stoa-metrics")
JSON = dict[str, Any]


@dataclass
class Install:
    bed: Bed
    release: str
    release_ns: str
    ns: str  # where the Agents and Conversations live
    bundled_overrides: JSON = field(default_factory=dict)

    def values(self, **overrides: Any) -> JSON:
        values: JSON = {
            "bundled": {
                "enabled": True,
                "agentNamespaces": [self.ns],
                "model": {"enabled": False},
                **self.bundled_overrides,
            },
            "operator": {
                "watchNamespaces": [self.ns],
                "extraEnv": [{"name": k, "value": v} for k, v in OPERATOR_ENV.items()],
            },
        }
        values.update(overrides)
        return values

    def helm_install(self, tmp: Path, action: str = "install", images: Mapping[str, str] | None = None,
                     **overrides: Any) -> None:  # fmt: skip
        values_file = tmp / f"values-{uuid.uuid4().hex[:6]}.yaml"
        values_file.write_text(yaml.safe_dump(self.values(**overrides)))
        sets = [f"--set={k}={v}" for k, v in chart_image_values(images or self.bed.images).items()]
        self.bed.helm(
            action, self.release, str(CHART), "-n", self.release_ns, "-f", str(values_file), *sets,
            "--wait", "--timeout", "6m",
        )  # fmt: skip

    def postgres_dsn(self) -> str:
        """The bundled database as the connection Secret names it, reached from the host through its
        Service's ClusterIP (the host has no cluster DNS)."""
        secret = self.bed.get("secret", "stoa-connections", "-n", self.ns)
        dsn = base64.b64decode(secret["data"]["postgresDsn"]).decode()
        parts = urlsplit(dsn)
        service = (parts.hostname or "").split(".")[0]
        ip = self.bed.get("service", service, "-n", self.release_ns)["spec"]["clusterIP"]
        netloc = parts.netloc.replace(parts.hostname or "", ip)
        return urlunsplit(parts._replace(netloc=netloc))

    def fetch(self, query: str, *args: object) -> list[dict[str, Any]]:
        async def run() -> list[dict[str, Any]]:
            conn = await asyncpg.connect(self.postgres_dsn(), timeout=10)
            try:
                return [dict(row) for row in await conn.fetch(query, *args)]
            finally:
                await conn.close()

        return asyncio.run(run())

    def cr(self, plural: str, name: str) -> JSON:
        return self.bed.get(f"{plural}.stoa.dev", name, "-n", self.ns)

    def apply(self, docs: list[JSON]) -> None:
        self.bed.kubectl("apply", "-n", self.ns, "-f", "-", stdin=yaml.safe_dump_all(docs))

    def deployment_ready(self, name: str, replicas: int, namespace: str | None = None) -> bool:
        status = self.bed.get("deployment", name, "-n", namespace or self.ns).get("status") or {}
        return (
            int(status.get("readyReplicas") or 0) >= replicas
            and int(status.get("updatedReplicas") or 0) >= replicas
        )

    def wait_ready(self, names: list[str], replicas: int = 2, timeout: float = 240) -> None:
        for name in names:
            ready = functools.partial(self._exists_and_ready, name, replicas)
            wait_for(ready, timeout, f"{replicas} ready replicas of {name}")

    def _exists_and_ready(self, name: str, replicas: int) -> bool:
        found = self.bed.kubectl("get", "deployment", name, "-n", self.ns, "--ignore-not-found", "-o", "name")
        return bool(found.strip()) and self.deployment_ready(name, replicas)

    def all_pods_ready(self, namespace: str) -> list[JSON] | None:
        pods = self.bed.pods(namespace)
        return pods if pods and all(pod_ready(p) for p in pods) else None


def examples(
    model_url: str, conversation: str, *, rounds: int | None = None, directory: Path = EXAMPLES
) -> list[JSON]:
    """examples/debate/ (or that directory of another tree) as applied here: every ModelPolicy target points
    at ``model_url``, the Conversation is named ``conversation`` (with ``rounds`` as its ``maxRounds``
    when given); everything else as shipped."""
    docs: list[JSON] = []
    for path in sorted(directory.glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    for doc in docs:
        if doc["kind"] == "ModelPolicy":
            for target in doc["spec"]["targets"]:
                target["baseURL"] = model_url
        if doc["kind"] == "Conversation":
            doc["metadata"]["name"] = conversation
            if rounds is not None:
                doc["spec"]["maxRounds"] = rounds
    return docs


def user_services() -> list[JSON]:
    return [
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name},
            "spec": {"ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]},
        }
        for name in USER_SERVICES
    ]


def install(
    bed: Bed, tmp: Path, bundled_overrides: JSON | None = None, values: JSON | None = None
) -> Iterator[Install]:
    """Two fresh namespaces, ``helm install`` (bundled mode, plus top-level ``values``) and the user's own
    ``stoa-*`` Services; uninstalled and deleted afterwards."""
    suffix = uuid.uuid4().hex[:6]
    inst = Install(bed, f"stoa-{suffix}", f"stoa-sys-{suffix}", f"debate-{suffix}", bundled_overrides or {})
    for namespace in (inst.release_ns, inst.ns):
        bed.kubectl("create", "namespace", namespace)
    failed = True
    try:
        bed.kubectl("apply", "-n", inst.ns, "-f", "-", stdin=yaml.safe_dump_all(user_services()))
        inst.helm_install(tmp, **(values or {}))
        failed = False
        yield inst
    except BaseException:
        if failed:
            bed.dump([inst.release_ns, inst.ns])
        raise
    finally:
        # Conversations first, while the operator runs (their finalizer stops them), then the release.
        bed.kubectl("delete", "conversations.stoa.dev", "--all", "-n", inst.ns, "--timeout=60s", check=False)
        bed.helm("uninstall", inst.release, "-n", inst.release_ns, "--wait", "--timeout", "2m", check=False)
        for namespace in (inst.release_ns, inst.ns):
            bed.kubectl("delete", "namespace", namespace, "--wait=false", check=False)
