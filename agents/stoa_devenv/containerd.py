"""containerd for the test bed's kubelet: its config (pure), the CNI network config (pure), and the process.

containerd keeps its images in a persistent root under the Stoa cache (images are imported once, not at
every start) and everything that lives only while the node runs — state, sockets, network-namespace
mounts, container root filesystems — under the node's temp dir, so ``down`` can unmount all of it.

It never reaches a registry: it runs with ``HTTP(S)_PROXY`` pointing at a closed loopback port, so a pull
of an image that was not loaded fails at once (``ErrImagePull``) instead of leaving the machine.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

from stoa_devenv.netbed import BRIDGE, NODE_IP, POD_CIDR

# Nothing listens on the discard port: every registry request is refused on loopback.
CLOSED_PROXY = "http://127.0.0.1:9"


@dataclass(frozen=True)
class ContainerdPaths:
    root: Path  # persistent: content store and snapshots of images
    state: Path  # per run: sockets, task state, netns mounts
    cni_conf_dir: Path
    cni_data_dir: Path

    @property
    def socket(self) -> Path:
        return self.state / "containerd.sock"


def containerd_config(paths: ContainerdPaths, sandbox_image: str, cni_bin_dir: str = "/usr/lib/cni") -> str:
    """containerd 1.6 config (version 2) for a CRI node on this machine (pure)."""
    cri = '[plugins."io.containerd.grpc.v1.cri"]'
    return f"""version = 2
root = "{paths.root}"
state = "{paths.state}"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.tracing.processor.v1.otlp"]

[grpc]
  address = "{paths.socket}"

[ttrpc]
  address = "{paths.socket}.ttrpc"

[plugins]
  [plugins."io.containerd.internal.v1.opt"]
    path = "{paths.state}/opt"

  {cri}
    sandbox_image = "{sandbox_image}"
    # This machine refuses a negative oom_score_adj; without this runc fails with
    # "can't get final child's PID from pipe".
    restrict_oom_score_adj = true
    netns_mounts_under_state_dir = true
    enable_selinux = false
    disable_apparmor = true
    tolerate_missing_hugetlb_controller = true
    disable_hugetlb_controller = true
    stream_server_address = "127.0.0.1"
    max_container_log_line_size = 16384

    {cri[:-1]}.containerd]
      snapshotter = "overlayfs"
      default_runtime_name = "runc"
      discard_unpacked_layers = false

      {cri[:-1]}.containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"

        {cri[:-1]}.containerd.runtimes.runc.options]
          SystemdCgroup = false

    {cri[:-1]}.cni]
      bin_dir = "{cni_bin_dir}"
      conf_dir = "{paths.cni_conf_dir}"
      max_conf_num = 1
"""


def cni_conflist(data_dir: Path) -> dict[str, object]:
    """The pod network: the test bed's bridge (created beforehand, reused by the plugin), host-local IPAM,
    no masquerading (pure)."""
    return {
        "cniVersion": "0.4.0",
        "name": "stoa-pods",
        "plugins": [
            {
                "type": "bridge",
                "bridge": BRIDGE,
                "isGateway": True,
                "isDefaultGateway": True,
                "hairpinMode": True,
                "ipMasq": False,
                "ipam": {
                    "type": "host-local",
                    "dataDir": str(data_dir),
                    "ranges": [[{"subnet": POD_CIDR, "gateway": NODE_IP}]],
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }


def write_configs(paths: ContainerdPaths, config_file: Path, sandbox_image: str) -> None:
    for directory in (paths.root, paths.state, paths.cni_conf_dir, paths.cni_data_dir):
        directory.mkdir(parents=True, exist_ok=True)
    config_file.write_text(containerd_config(paths, sandbox_image))
    (paths.cni_conf_dir / "10-stoa.conflist").write_text(
        json.dumps(cni_conflist(paths.cni_data_dir), indent=2)
    )


def proxy_env() -> dict[str, str]:
    """Environment additions for containerd: every registry request goes to a closed loopback port."""
    return {
        "HTTP_PROXY": CLOSED_PROXY,
        "HTTPS_PROXY": CLOSED_PROXY,
        "http_proxy": CLOSED_PROXY,
        "https_proxy": CLOSED_PROXY,
        "NO_PROXY": "",
        "no_proxy": "",
    }


def ctr(socket: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """``ctr --address SOCK -n k8s.io ARGS``."""
    return subprocess.run(
        ["ctr", "--address", str(socket), "-n", "k8s.io", *args], capture_output=True, text=True, check=check
    )


def remove_all_containers(socket: Path) -> None:
    """Kill every task and delete every container (and its snapshot) in the k8s.io namespace: what a
    previous run left behind, or this run's pods at ``down``. Images stay."""
    tasks = ctr(socket, "tasks", "ls", "-q", check=False).stdout.split()
    for task in tasks:
        ctr(socket, "tasks", "kill", "-s", "SIGKILL", task, check=False)
    for task in tasks:
        ctr(socket, "tasks", "delete", "-f", task, check=False)
    containers = ctr(socket, "containers", "ls", "-q", check=False).stdout.split()
    for container in containers:
        ctr(socket, "containers", "delete", container, check=False)
