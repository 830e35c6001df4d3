"""A real Kubernetes control plane: etcd + kube-apiserver + kube-controller-manager.

Token authentication with an admin token, RBAC authorization, generated service-account keys; the
controller-manager gives Deployments their ReplicaSets and Pods, namespaces their default ServiceAccount,
and runs ownerReference garbage collection.

Alone (``for_node=False``) it listens on 127.0.0.1 and runs no pods. For the test bed's node
(``stoa_devenv.node``) it listens on the bridge address pods reach, publishes itself as the ``kubernetes``
Service, authorizes kubelets with the Node authorizer and holds a token per node component.
"""

from __future__ import annotations

import json
import secrets
import shutil
import ssl
import subprocess
import tempfile
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stoa_devenv import pki as pki_keys
from stoa_devenv.errors import ComponentFailedError
from stoa_devenv.netbed import NODE_IP, SERVICE_CIDR
from stoa_devenv.procs import exited, free_port, log_tail, spawn_logged, stop_group, wait_until
from stoa_devenv.tools import etcd_binary, k8s_bindir, kubectl_binary

# Identities of the node's components: (user, groups). Their default RBAC bindings exist in every cluster
# (system:node-proxier, system:kube-scheduler, ...); the Node authorizer admits the kubelet.
NODE_NAME = "stoa-node"
COMPONENT_USERS = {
    "kubelet": (f"system:node:{NODE_NAME}", "system:nodes"),
    "kube-proxy": ("system:kube-proxy", ""),
    "kube-scheduler": ("system:kube-scheduler", ""),
    "coredns": ("system:stoa-coredns", ""),
}


@dataclass
class ControlPlane:
    base: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="stoa-k8s-")))
    etcd_port: int = field(default_factory=free_port)
    etcd_peer_port: int = field(default_factory=free_port)
    api_port: int = field(default_factory=free_port)
    token: str = field(default_factory=lambda: secrets.token_hex(16))
    pids: dict[str, int] = field(default_factory=dict)
    for_node: bool = False
    component_tokens: dict[str, str] = field(
        default_factory=lambda: {name: secrets.token_hex(16) for name in COMPONENT_USERS}
    )

    @property
    def address(self) -> str:
        return NODE_IP if self.for_node else "127.0.0.1"

    @property
    def server(self) -> str:
        return f"https://{self.address}:{self.api_port}"

    @property
    def kubeconfig(self) -> Path:
        return self.base / "kubeconfig"

    def _spawn(self, name: str, cmd: list[str]) -> None:
        self.pids[name] = spawn_logged(cmd, self.base / f"{name}.log", self.base)

    def _alive(self, name: str) -> bool:
        """True while the process runs; raises with its log tail once it has exited."""
        if exited(self.pids[name]):
            raise ComponentFailedError(f"{name} exited{log_tail(self.base / f'{name}.log')}")
        return True

    def start(self) -> ControlPlane:
        bindir = k8s_bindir()
        pki = self.base / "pki"
        pki.mkdir(parents=True, exist_ok=True)
        self._keys(pki)
        self._spawn(
            "etcd",
            [
                str(etcd_binary()),
                "--data-dir",
                str(self.base / "etcd"),
                "--unsafe-no-fsync",
                "--listen-client-urls",
                f"http://127.0.0.1:{self.etcd_port}",
                "--advertise-client-urls",
                f"http://127.0.0.1:{self.etcd_port}",
                "--listen-peer-urls",
                f"http://127.0.0.1:{self.etcd_peer_port}",
                "--initial-advertise-peer-urls",
                f"http://127.0.0.1:{self.etcd_peer_port}",
                "--initial-cluster",
                f"default=http://127.0.0.1:{self.etcd_peer_port}",
            ],
        )
        wait_until(lambda: self._alive("etcd") and self._etcd_healthy(), 30, "etcd", self.base / "etcd.log")
        self._spawn("kube-apiserver", [str(bindir / "kube-apiserver"), *self._apiserver_flags(pki)])
        wait_until(
            lambda: self._alive("kube-apiserver") and self._api_ready(),
            90,
            "kube-apiserver",
            self.base / "kube-apiserver.log",
        )
        self._write_kubeconfig()
        self._spawn(
            "kube-controller-manager",
            [
                str(bindir / "kube-controller-manager"),
                f"--kubeconfig={self.kubeconfig}",
                "--leader-elect=false",
                "--secure-port=0",
                f"--service-account-private-key-file={pki / 'sa.key'}",
                f"--root-ca-file={pki / 'apiserver.crt'}",
                "--use-service-account-credentials=false",
                "--concurrent-deployment-syncs=10",
                "--concurrent-replicaset-syncs=10",
                "--concurrent-gc-syncs=20",
            ],
        )
        wait_until(
            lambda: self._alive("kube-controller-manager") and self._default_sa(),
            90,
            "kube-controller-manager (default ServiceAccount)",
            self.base / "kube-controller-manager.log",
        )
        return self

    def _apiserver_flags(self, pki: Path) -> list[str]:
        flags = [
            f"--etcd-servers=http://127.0.0.1:{self.etcd_port}",
            f"--bind-address={self.address}",
            f"--secure-port={self.api_port}",
            f"--cert-dir={pki}",
            f"--advertise-address={self.address}",
            "--service-account-issuer=https://kubernetes.default.svc",
            f"--service-account-key-file={pki / 'sa.pub'}",
            f"--service-account-signing-key-file={pki / 'sa.key'}",
            f"--token-auth-file={pki / 'tokens.csv'}",
            "--allow-privileged=true",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--enable-priority-and-fairness=false",
        ]
        if not self.for_node:
            return [*flags, "--authorization-mode=RBAC", "--endpoint-reconciler-type=none"]
        cert, key = pki_keys.client_certificate(
            pki, "kubelet-client", "/O=system:masters/CN=kube-apiserver-kubelet-client"
        )
        return [
            *flags,
            "--authorization-mode=Node,RBAC",
            "--enable-admission-plugins=NodeRestriction",
            "--kubelet-preferred-address-types=InternalIP",
            f"--kubelet-client-certificate={cert}",
            f"--kubelet-client-key={key}",
        ]

    def _keys(self, pki: Path) -> None:
        pki_keys.service_account_keys(pki)
        rows = [f'{self.token},stoa-admin,stoa-admin,"system:masters"']
        if self.for_node:
            rows += [
                f'{self.component_tokens[name]},{user},{user},"{groups}"'
                for name, (user, groups) in COMPONENT_USERS.items()
            ]
        (pki / "tokens.csv").write_text("\n".join(rows) + "\n")

    def _etcd_healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.etcd_port}/health", timeout=1) as resp:
                return bool(json.loads(resp.read()).get("health") == "true")
        except OSError:
            return False

    def get(self, path: str) -> tuple[int, bytes]:
        """GET an API path with the admin token (TLS verification off: self-signed local apiserver)."""
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        # Readiness probe only: the apiserver writes its self-signed certificate while it starts.
        req = urllib.request.Request(  # noqa: S310 (our own loopback https URL)
            self.server + path, headers={"Authorization": f"Bearer {self.token}"}
        )
        try:
            with urllib.request.urlopen(req, timeout=2, context=ctx) as resp:  # noqa: S310 (loopback https)
                return int(resp.status), resp.read()
        except urllib.error.HTTPError as err:
            return int(err.code), err.read()
        except OSError:
            return 0, b""

    def apply(self, objects: list[dict[str, Any]]) -> None:
        """Server-side apply of manifests with the admin kubeconfig (kubectl)."""
        result = subprocess.run(
            [str(kubectl_binary()), f"--kubeconfig={self.kubeconfig}", "apply", "--server-side",
             "--field-manager=stoa-test-bed", "-f", "-"],
            input=json.dumps({"apiVersion": "v1", "kind": "List", "items": objects}),
            capture_output=True,
            text=True,
            check=False,
        )  # fmt: skip
        if result.returncode != 0:
            raise ComponentFailedError(f"kubectl apply failed: {result.stderr.strip()}")

    def _api_ready(self) -> bool:
        return self.get("/readyz")[0] == 200

    def _default_sa(self) -> bool:
        return self.get("/api/v1/namespaces/default/serviceaccounts/default")[0] == 200

    def _write_kubeconfig(self) -> None:
        write_kubeconfig(
            self.kubeconfig, self.server, self.base / "pki" / "apiserver.crt", "stoa-admin", self.token
        )

    def component_kubeconfig(self, name: str) -> Path:
        """A kubeconfig for one node component (``COMPONENT_USERS``), written on first use."""
        path = self.base / f"{name}.kubeconfig"
        if not path.exists():
            user = COMPONENT_USERS[name][0]
            write_kubeconfig(
                path, self.server, self.base / "pki" / "apiserver.crt", user, self.component_tokens[name]
            )
        return path

    def stop(self) -> None:
        """SIGTERM each component's process group (controller-manager first), SIGKILL after 10 s."""
        for name in ("kube-controller-manager", "kube-apiserver", "etcd"):
            pid = self.pids.pop(name, None)
            if pid is not None:
                stop_group(pid)

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.base, ignore_errors=True)


def write_kubeconfig(path: Path, server: str, ca: Path, user: str, token: str) -> None:
    """A token kubeconfig for ``server`` that verifies its certificate with ``ca``."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "stoa-local", "cluster": {"server": server, "certificate-authority": str(ca)}}],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": "stoa-local", "context": {"cluster": "stoa-local", "user": user}}],
        "current-context": "stoa-local",
    }
    path.write_text(json.dumps(config, indent=2))
    path.chmod(0o600)
