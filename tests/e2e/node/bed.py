"""Helpers for tests on the real node: kubectl/helm against the test bed, waiting, pod and container
handles, and the failure dump (pod logs, events, ``kubectl get stoa -A``)."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from stoa_devenv.containerd import ctr
from stoa_devenv.testbed import TestBed
from stoa_devenv.tools import helm_binary, kubectl_binary
from tests.e2e.kube import JSON, Kube

T = TypeVar("T")
REPO = Path(__file__).resolve().parents[3]


def wait_for(check: Callable[[], T | None], timeout: float, what: str, every: float = 0.25) -> T:
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


@dataclass
class Bed:
    """The running test bed as the tests use it."""

    bed: TestBed
    images: dict[str, str]  # image name -> reference loaded into the node

    @property
    def kubeconfig(self) -> Path:
        return self.bed.kubeconfig

    @property
    def kube(self) -> Kube:
        return Kube.from_kubeconfig(self.kubeconfig)

    def run(
        self, tool: Path, *args: str, stdin: str | None = None, timeout: float = 120, check: bool = True
    ) -> str:
        proc = subprocess.run(
            [str(tool), "--kubeconfig", str(self.kubeconfig), *args],
            input=stdin,
            capture_output=True,
            text=True,
            check=False,
            timeout=timeout,
        )
        if check:
            assert proc.returncode == 0, f"{tool.name} {' '.join(args)}\n{proc.stdout}\n{proc.stderr}"
        return proc.stdout + (proc.stderr if not check else "")

    def kubectl(self, *args: str, stdin: str | None = None, timeout: float = 120, check: bool = True) -> str:
        return self.run(kubectl_binary(), *args, stdin=stdin, timeout=timeout, check=check)

    def helm(self, *args: str, timeout: float = 400, check: bool = True) -> str:
        return self.run(helm_binary(), *args, timeout=timeout, check=check)

    def get(self, *args: str) -> JSON:
        data: JSON = json.loads(self.kubectl("get", *args, "-o", "json"))
        return data

    def pods(self, namespace: str, selector: str = "") -> list[JSON]:
        args = ["pods", "-n", namespace] + (["-l", selector] if selector else [])
        items: list[JSON] = self.get(*args)["items"]
        return items

    def container_id(self, pod: JSON, container: str) -> str:
        """The containerd id of a running container of ``pod`` (from its status)."""
        for status in pod["status"].get("containerStatuses") or []:
            if status["name"] == container and status.get("containerID"):
                return str(status["containerID"]).split("://", 1)[1]
        raise AssertionError(f"container {container} of {pod['metadata']['name']} has no id yet")

    def kill_container(self, container_id: str, signal: str = "SIGKILL") -> None:
        """kill -9 of the container's processes through the node's containerd (what an OOM kill or a
        crash looks like to the kubelet)."""
        ctr(self.bed.containerd_socket, "tasks", "kill", "--all", "-s", signal, container_id)

    def tag_image(self, ref: str, new_ref: str) -> None:
        ctr(self.bed.containerd_socket, "images", "tag", "--force", ref, new_ref)

    def dump(self, namespaces: list[str]) -> None:
        """What is needed to debug a failure: pods, events, Stoa resources and each container's log."""
        print("--- kubectl get stoa -A\n" + self.kubectl("get", "stoa", "-A", "-o", "wide", check=False))
        print(
            "--- kubectl get pods -A -o wide\n" + self.kubectl("get", "pods", "-A", "-o", "wide", check=False)
        )
        for namespace in namespaces:
            events = self.kubectl("get", "events", "-n", namespace, "--sort-by=.lastTimestamp", check=False)
            print(f"--- events {namespace}\n{events}")
            for pod in self.pods(namespace):
                name = pod["metadata"]["name"]
                for container in pod["spec"]["containers"]:
                    for previous in ("false", "true"):
                        log = self.kubectl(
                            "logs", "-n", namespace, name, "-c", container["name"], f"--previous={previous}",
                            "--tail=80", check=False,
                        )  # fmt: skip
                        print(f"--- logs {namespace}/{name}/{container['name']} previous={previous}\n{log}")


def pod_ready(pod: dict[str, Any]) -> bool:
    return any(
        c["type"] == "Ready" and c["status"] == "True" for c in pod.get("status", {}).get("conditions", [])
    )


def restarts(pod: dict[str, Any]) -> int:
    return sum(int(s.get("restartCount", 0)) for s in pod.get("status", {}).get("containerStatuses") or [])
