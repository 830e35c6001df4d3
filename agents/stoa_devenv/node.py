"""A real Kubernetes node on this machine: containerd + kubelet, kube-proxy, kube-scheduler and CoreDNS,
joined to a ``ControlPlane(for_node=True)``.

Pods run as real containers (runc) from images loaded into the node's containerd, on the test bed's
bridge (``stoa_devenv.netbed``); Services are routed by kube-proxy (iptables mode) and named by CoreDNS
(``<svc>.<ns>.svc.cluster.local``, nothing else resolves: the test bed has no upstream DNS).

Needs root. ``stop`` removes every process, container, mount, cgroup, chain and interface it made, and
restores the kernel settings the kubelet changes.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from stoa_devenv import netbed
from stoa_devenv.cluster import NODE_NAME, ControlPlane
from stoa_devenv.containerd import ContainerdPaths, proxy_env, remove_all_containers, write_configs
from stoa_devenv.errors import ComponentFailedError, ComponentMissingError
from stoa_devenv.hostclean import kill_cgroup_tree, kill_matching, remove_cgroup_tree, unmount_under
from stoa_devenv.imageload import cached_refs, prune_containerd
from stoa_devenv.procs import (
    apt_install,
    exited,
    free_port,
    is_root,
    log_tail,
    spawn_logged,
    stop_group,
    wait_until,
)
from stoa_devenv.tools import CACHE, coredns_binary, node_bindir

# What the kubelet sets at start (protectKernelDefaults: false); restored by ``stop``.
KUBELET_SYSCTLS = (
    "vm/overcommit_memory",
    "vm/panic_on_oom",
    "kernel/panic",
    "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
)
DEBIAN_PACKAGES = {
    "containerd": "containerd",
    "runc": "runc",
    "ctr": "containerd",
    "iptables": "iptables",
    "ip": "iproute2",
    "openssl": "openssl",
}
CNI_BIN_DIR = "/usr/lib/cni"
SANDBOX_IMAGE = "stoa.local/pause:1"


def kubelet_config(base: Path, socket: Path, healthz_port: int, ca: Path) -> dict[str, Any]:
    """KubeletConfiguration for this machine (pure): cgroupfs on cgroup v1, no swap check, webhook
    authn/authz, cluster DNS, everything under ``base``, no image GC or disk eviction of loaded images."""
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": netbed.NODE_IP,
        "port": 10250,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": healthz_port,
        "cgroupDriver": "cgroupfs",
        "failCgroupV1": False,
        "failSwapOn": False,
        "containerRuntimeEndpoint": f"unix://{socket}",
        "imageServiceEndpoint": f"unix://{socket}",
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(ca)},
        },
        "authorization": {"mode": "Webhook"},
        "clusterDNS": [netbed.DNS_SERVICE_IP],
        "clusterDomain": "cluster.local",
        "resolvConf": str(base / "resolv.conf"),
        "podLogsDir": str(base / "pod-logs"),
        "makeIPTablesUtilChains": False,
        "evictionHard": {
            "memory.available": "100Mi",
            "nodefs.available": "1%",
            "nodefs.inodesFree": "1%",
            "imagefs.available": "1%",
        },
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "serializeImagePulls": False,
        "shutdownGracePeriod": "0s",
        # ConfigMap and Secret volumes refresh within ~10 s instead of the default minute (the gateway
        # hot-reloads its ModelPolicy file; tests wait for it).
        "syncFrequency": "10s",
        "maxPods": 110,
    }


def kube_proxy_config(kubeconfig: Path, healthz_port: int, metrics_port: int) -> dict[str, Any]:
    """KubeProxyConfiguration (pure): iptables mode, NodePorts on the bridge address only, no conntrack
    or localnet sysctl changes on the host."""
    return {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "mode": "iptables",
        "clientConnection": {"kubeconfig": str(kubeconfig)},
        "hostnameOverride": NODE_NAME,
        "clusterCIDR": netbed.POD_CIDR,
        "bindAddress": netbed.NODE_IP,
        "healthzBindAddress": f"127.0.0.1:{healthz_port}",
        "metricsBindAddress": f"127.0.0.1:{metrics_port}",
        "nodePortAddresses": [f"{netbed.NODE_IP}/32"],
        "conntrack": {"maxPerCore": 0, "min": 0, "tcpEstablishedTimeout": "0s", "tcpCloseWaitTimeout": "0s"},
        "iptables": {"localhostNodePorts": False, "masqueradeAll": False, "minSyncPeriod": "0s"},
    }


def corefile(kubeconfig: Path, ready_port: int) -> str:
    """CoreDNS: cluster names from the API server; every other name is NXDOMAIN (no upstream) (pure)."""
    return f""".:53 {{
    bind {netbed.NODE_IP}
    errors
    template ANY ANY {{
        rcode NXDOMAIN
    }}
}}
cluster.local:53 10.in-addr.arpa:53 {{
    bind {netbed.NODE_IP}
    errors
    ready 127.0.0.1:{ready_port}
    kubernetes cluster.local 10.in-addr.arpa {{
        kubeconfig {kubeconfig}
        pods insecure
        ttl 5
    }}
}}
"""


def dns_objects() -> list[dict[str, Any]]:
    """The ``kube-dns`` Service (no selector) and its EndpointSlice to CoreDNS on the node, and the RBAC
    CoreDNS needs to read the cluster (pure)."""
    user = "system:stoa-coredns"
    return [
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": "stoa:coredns"},
            "rules": [
                {
                    "apiGroups": [""],
                    "resources": ["services", "pods", "namespaces"],
                    "verbs": ["list", "watch"],
                },
                {
                    "apiGroups": ["discovery.k8s.io"],
                    "resources": ["endpointslices"],
                    "verbs": ["list", "watch"],
                },
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": "stoa:coredns"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "stoa:coredns",
            },
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "kube-dns", "namespace": "kube-system", "labels": {"k8s-app": "kube-dns"}},
            "spec": {
                "clusterIP": netbed.DNS_SERVICE_IP,
                "ports": [
                    {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
                    {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53},
                ],
            },
        },
        {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": "kube-dns-node",
                "namespace": "kube-system",
                "labels": {"kubernetes.io/service-name": "kube-dns"},
            },
            "addressType": "IPv4",
            "endpoints": [{"addresses": [netbed.NODE_IP], "conditions": {"ready": True}}],
            "ports": [
                {"name": "dns", "port": 53, "protocol": "UDP"},
                {"name": "dns-tcp", "port": 53, "protocol": "TCP"},
            ],
        },
    ]


def _read_sysctl(name: str) -> str | None:
    try:
        return Path("/proc/sys", name).read_text().strip()
    except OSError:
        return None


@dataclass
class Node:
    """The node of ``plane`` (started with ``for_node=True``). ``base`` holds everything of this run."""

    plane: ControlPlane
    base: Path = field(default_factory=Path)
    persist: Path = field(default_factory=lambda: CACHE / "node")
    pids: dict[str, int] = field(default_factory=dict)
    sysctls: dict[str, str] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.base == Path():
            self.base = self.plane.base / "node"

    @property
    def containerd(self) -> ContainerdPaths:
        return ContainerdPaths(
            root=self.persist / "containerd",
            state=self.base / "containerd",
            cni_conf_dir=self.base / "cni" / "net.d",
            cni_data_dir=self.base / "cni" / "ipam",
        )

    @property
    def kubelet_root(self) -> Path:
        return self.base / "kubelet"

    def start(self) -> Node:
        """Start containerd, kubelet, kube-scheduler, kube-proxy and CoreDNS; return once the node is Ready
        and cluster DNS answers. Images are loaded into ``containerd.socket`` afterwards (``import_image``
        or ``stoa_devenv.images``); pods whose image is missing fail with ErrImagePull, never a pull."""
        require_node_tools()
        bindir = node_bindir()
        coredns = coredns_binary()
        self.base.mkdir(parents=True, exist_ok=True)
        self._start_containerd()
        self._start_scheduler(bindir)
        self._start_kubelet(bindir)
        self._start_kube_proxy(bindir)
        self._start_coredns(coredns)
        netbed.install_guards()  # ours first again, ahead of the jumps kube-proxy inserted
        return self

    # -- components --------------------------------------------------------------------------------

    def _spawn(self, name: str, cmd: list[str], env: dict[str, str] | None = None) -> None:
        self.pids[name] = spawn_logged(cmd, self.base / f"{name}.log", self.base, env)

    def _alive(self, name: str) -> bool:
        if exited(self.pids[name]):
            raise ComponentFailedError(f"{name} exited{log_tail(self.base / f'{name}.log')}")
        return True

    def _start_containerd(self) -> None:
        paths = self.containerd
        config = self.base / "containerd.toml"
        write_configs(paths, config, SANDBOX_IMAGE)
        self._spawn("containerd", ["containerd", "--config", str(config)], env=proxy_env())
        wait_until(
            lambda: self._alive("containerd") and paths.socket.exists() and _ctr_ok(paths.socket),
            30,
            "containerd",
            self.base / "containerd.log",
        )
        remove_all_containers(paths.socket)  # a crashed earlier run's pods
        # Nothing runs now: drop the images the image cache no longer holds (the root would only grow).
        prune_containerd(paths.socket, {*cached_refs(), SANDBOX_IMAGE})

    def _start_scheduler(self, bindir: Path) -> None:
        kubeconfig = self.plane.component_kubeconfig("kube-scheduler")
        port = self.ports.setdefault("kube-scheduler", free_port())
        self._spawn(
            "kube-scheduler",
            [
                str(bindir / "kube-scheduler"),
                f"--kubeconfig={kubeconfig}",
                f"--authentication-kubeconfig={kubeconfig}",
                f"--authorization-kubeconfig={kubeconfig}",
                "--leader-elect=false",
                "--bind-address=127.0.0.1",
                f"--secure-port={port}",
            ],
        )

    def _start_kubelet(self, bindir: Path) -> None:
        self.sysctls = {name: value for name in KUBELET_SYSCTLS if (value := _read_sysctl(name)) is not None}
        (self.base / "resolv.conf").write_text(f"nameserver {netbed.NODE_IP}\noptions ndots:5\n")
        (self.base / "pod-logs").mkdir(exist_ok=True)
        self.kubelet_root.mkdir(exist_ok=True)
        port = self.ports.setdefault("kubelet-healthz", free_port())
        config = self.base / "kubelet.yaml"
        config.write_text(
            yaml.safe_dump(
                kubelet_config(self.base, self.containerd.socket, port, self.plane.base / "pki" / "ca.crt")
            )
        )
        self._spawn(
            "kubelet",
            [
                str(bindir / "kubelet"),
                f"--config={config}",
                f"--kubeconfig={self.plane.component_kubeconfig('kubelet')}",
                f"--root-dir={self.kubelet_root}",
                f"--cert-dir={self.base / 'kubelet-pki'}",
                f"--hostname-override={NODE_NAME}",
                f"--node-ip={netbed.NODE_IP}",
                "--v=1",
            ],
        )
        wait_until(
            lambda: self._alive("kubelet") and self._node_ready(),
            90,
            "kubelet (node Ready)",
            self.base / "kubelet.log",
        )

    def _start_kube_proxy(self, bindir: Path) -> None:
        config = self.base / "kube-proxy.yaml"
        healthz = self.ports.setdefault("kube-proxy-healthz", free_port())
        metrics = self.ports.setdefault("kube-proxy-metrics", free_port())
        config.write_text(
            yaml.safe_dump(kube_proxy_config(self.plane.component_kubeconfig("kube-proxy"), healthz, metrics))
        )
        self._spawn("kube-proxy", [str(bindir / "kube-proxy"), f"--config={config}", "--v=1"])
        wait_until(
            lambda: self._alive("kube-proxy") and _http_ok(f"http://127.0.0.1:{healthz}/healthz"),
            60,
            "kube-proxy",
            self.base / "kube-proxy.log",
        )

    def _start_coredns(self, binary: Path) -> None:
        self.plane.apply(dns_objects())
        ready = self.ports.setdefault("coredns-ready", free_port())
        conf = self.base / "Corefile"
        conf.write_text(corefile(self.plane.component_kubeconfig("coredns"), ready))
        self._spawn("coredns", [str(binary), "-conf", str(conf)])
        wait_until(
            lambda: self._alive("coredns") and _http_ok(f"http://127.0.0.1:{ready}/ready"),
            60,
            "coredns",
            self.base / "coredns.log",
        )

    def _node_ready(self) -> bool:
        status, body = self.plane.get(f"/api/v1/nodes/{NODE_NAME}")
        if status != 200:
            return False
        conditions = json.loads(body).get("status", {}).get("conditions", [])
        return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)

    # -- teardown ----------------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop everything the node started and remove what it left on the host (idempotent)."""
        self._terminate("kubelet")
        socket = self.containerd.socket
        if socket.exists() and _ctr_ok(socket):
            remove_all_containers(socket)
        kill_cgroup_tree("kubepods")
        kill_matching(str(self.containerd.state))  # shims of this node's containerd
        for name in ("kube-proxy", "kube-scheduler", "coredns", "containerd"):
            self._terminate(name)
        self._cleanup_kube_proxy()
        unmount_under(self.base)
        remove_cgroup_tree("kubepods")
        for name, value in self.sysctls.items():
            with contextlib.suppress(OSError):
                Path("/proc/sys", name).write_text(value)

    def _terminate(self, name: str) -> None:
        pid = self.pids.pop(name, None)
        if pid is not None:
            stop_group(pid)

    def _cleanup_kube_proxy(self) -> None:
        binary = node_bindir() / "kube-proxy"
        if binary.exists():
            subprocess.run([str(binary), "--cleanup"], capture_output=True, check=False, timeout=60)

    def state(self) -> dict[str, Any]:
        return {"base": str(self.base), "pids": self.pids, "sysctls": self.sysctls, "ports": self.ports}


def require_node_tools() -> None:
    if not is_root():
        raise ComponentMissingError(
            "a real node (kubelet + containerd) needs root: run as root, or use the control plane alone"
        )
    missing = sorted({pkg for tool, pkg in DEBIAN_PACKAGES.items() if shutil.which(tool) is None})
    if not Path(CNI_BIN_DIR, "bridge").exists():
        missing.append("containernetworking-plugins")
    if missing:
        apt_install(missing, "the test bed's node runs containers with them")
    netbed.require_tools()


def import_image(socket: Path, archive: Path) -> None:
    """Import an image archive (``docker save`` or OCI layout tar) into the node's containerd."""
    result = subprocess.run(
        [
            "ctr",
            "--address",
            str(socket),
            "-n",
            "k8s.io",
            "images",
            "import",
            "--all-platforms",
            str(archive),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise ComponentFailedError(f"importing {archive} into the node failed: {result.stderr.strip()}")


def _ctr_ok(socket: Path) -> bool:
    result = subprocess.run(
        ["ctr", "--address", str(socket), "version"], capture_output=True, text=True, check=False, timeout=10
    )
    return result.returncode == 0


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as resp:  # noqa: S310 (our own loopback URL)
            return int(resp.status) == 200
    except OSError:
        return False
