"""The test bed: a real single-node Kubernetes cluster on this machine (network, control plane, node).

One per machine (fixed bridge and address ranges): ``/run/stoa-node.lock`` is held while a test session
owns it, and ``/run/stoa-node.json`` records what runs so that ``stoa dev cluster down`` (another process)
or the next start after a crash can remove it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from stoa_devenv import netbed
from stoa_devenv.cluster import ControlPlane
from stoa_devenv.errors import ComponentFailedError
from stoa_devenv.hostclean import kill_cgroup_tree, remove_cgroup_tree, unmount_under
from stoa_devenv.imageload import load_into_containerd
from stoa_devenv.images import ensure_images
from stoa_devenv.node import SANDBOX_IMAGE, Node, require_node_tools
from stoa_devenv.procs import pid_alive

RUN_DIR = Path(os.environ.get("STOA_NODE_RUN_DIR", "/run"))
LOCK = RUN_DIR / "stoa-node.lock"
STATE = RUN_DIR / "stoa-node.json"


def _progress(message: str) -> None:
    print(f"[test bed] {message}", flush=True)


@dataclass
class TestBed:
    plane: ControlPlane = field(default_factory=lambda: ControlPlane(for_node=True))
    node: Node | None = None
    detached: bool = False  # started by `stoa dev cluster up`: outlives this process
    _lock: IO[str] | None = None

    @property
    def kubeconfig(self) -> Path:
        return self.plane.kubeconfig

    @property
    def containerd_socket(self) -> Path:
        """Where images are imported (``ctr --address ... -n k8s.io images import``)."""
        if self.node is None:
            raise ComponentFailedError("the test bed's node is not started")
        return self.node.containerd.socket

    def start(
        self, images: list[Path] | None = None, wait_lock: float = 0, detached: bool = False
    ) -> TestBed:
        """Take the machine's node lock (waiting up to ``wait_lock`` s), clear what a crashed run left,
        then start network, control plane and node, printing each step's duration. ``detached``: the
        test bed outlives this process (``stoa dev cluster down`` stops it)."""
        require_node_tools()
        self.detached = detached
        self._lock = _take_lock(wait_lock)
        try:
            clear_stale()
            started = time.monotonic()
            netbed.up()
            _progress("network ready (bridge stoa0 10.244.0.1/24, guard chains)")
            self.plane.start()
            _progress(f"control plane ready at {self.plane.server} ({time.monotonic() - started:.1f}s)")
            self.node = Node(self.plane)
            self._record()
            self.node.start()
            self._record()
            # The sandbox image every pod needs (tiny; built once, then taken from the cache).
            load_into_containerd(self.containerd_socket, ensure_images(["pause"]).values(),
                                 aliases={"pause": [SANDBOX_IMAGE]})  # fmt: skip
            _progress(f"node Ready with kube-proxy and CoreDNS ({time.monotonic() - started:.1f}s)")
        except BaseException:
            self.stop()
            raise
        return self

    def _record(self) -> None:
        STATE.write_text(
            json.dumps(
                {
                    "owner": os.getpid(),
                    "detached": self.detached,
                    "plane": {
                        "base": str(self.plane.base),
                        "pids": self.plane.pids,
                        "server": self.plane.server,
                    },
                    "node": self.node.state() if self.node else None,
                    "kubeconfig": str(self.plane.kubeconfig),
                },
                indent=2,
            )
        )

    def stop(self) -> None:
        """Remove everything (idempotent): node, control plane, network; then release the lock."""
        if self.node is not None:
            self.node.stop()
        self.plane.destroy()
        netbed.down()
        STATE.unlink(missing_ok=True)
        if self._lock is not None:
            self._lock.close()
            self._lock = None


def _take_lock(wait: float) -> IO[str]:
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    handle = LOCK.open("w")
    deadline = time.monotonic() + wait
    while True:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return handle
        except BlockingIOError:
            if time.monotonic() >= deadline:
                handle.close()
                raise ComponentFailedError(
                    f"another test bed runs on this machine (lock {LOCK} is held; its state: {STATE})"
                ) from None
            time.sleep(1)


def recorded() -> dict[str, Any] | None:
    with contextlib.suppress(FileNotFoundError, json.JSONDecodeError):
        data: dict[str, Any] = json.loads(STATE.read_text())
        return data
    return None


def clear_stale() -> None:
    """Remove what an earlier test bed left: its recorded processes, containers, mounts, cgroups, chains
    and bridge. Refuses while that test bed's processes still run under a live owner."""
    data = recorded()
    if data is not None:
        owner = int(data.get("owner", 0))
        pids = [*data["plane"]["pids"].values(), *((data.get("node") or {}).get("pids") or {}).values()]
        running = any(pid_alive(int(pid)) for pid in pids)
        if running and (data.get("detached") or (owner != os.getpid() and pid_alive(owner))):
            raise ComponentFailedError(
                f"a test bed is running on this machine (see {STATE}); stop it with: stoa dev cluster down"
            )
        bed_down(data)
        return
    kill_cgroup_tree("kubepods")
    remove_cgroup_tree("kubepods")
    netbed.down()


def bed_down(data: dict[str, Any]) -> None:
    """Tear down a test bed from its recorded state (``stoa dev cluster down``, or after a crash)."""
    plane = ControlPlane(base=Path(data["plane"]["base"]), pids=dict(data["plane"]["pids"]), for_node=True)
    if data.get("node"):
        node_data = data["node"]
        node = Node(
            plane,
            base=Path(node_data["base"]),
            pids=dict(node_data["pids"]),
            sysctls=dict(node_data["sysctls"]),
            ports=dict(node_data["ports"]),
        )
        node.stop()
    unmount_under(plane.base)
    plane.destroy()
    netbed.down()
    STATE.unlink(missing_ok=True)


@contextlib.contextmanager
def running(wait_lock: float = 0) -> Iterator[TestBed]:
    bed = TestBed().start(wait_lock=wait_lock)
    try:
        yield bed
    finally:
        bed.stop()
