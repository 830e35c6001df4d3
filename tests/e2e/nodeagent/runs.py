"""What the node agent knows about each pod it runs: the pod, its containers' processes and probes."""

from __future__ import annotations

import datetime
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from tests.e2e.kube import JSON


def now_rfc3339() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def now_micro() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class Prober:
    probe: JSON
    successes: int = 0
    failures: int = 0
    next_at: float = 0.0
    passed: bool = False  # readiness/startup: currently passing


@dataclass
class Container:
    spec: JSON
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    started_at: str = ""
    restart_count: int = 0
    crashes_in_a_row: int = 0
    last_started_monotonic: float = 0.0
    next_start_at: float = 0.0
    waiting_reason: str = "ContainerCreating"
    waiting_message: str = ""
    last_terminated: JSON | None = None
    terminated: JSON | None = None  # current state when exited and not (yet) restarted
    final: bool = False  # exited and will not restart
    kill_at: float | None = None
    ready: bool = False
    started: bool = False
    readiness: Prober | None = None
    liveness: Prober | None = None
    startup: Prober | None = None
    env: dict[str, str] = field(default_factory=dict)
    argv: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return str(self.spec["name"])

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


@dataclass
class PodRun:
    namespace: str
    name: str
    uid: str
    pod: JSON
    workdir: Path
    ports: dict[int, int]  # containerPort -> host port
    containers: dict[str, Container] = field(default_factory=dict)
    mounts: dict[str, dict[str, str]] = field(default_factory=dict)  # container -> mountPath -> dir
    volume_versions: dict[str, str] = field(default_factory=dict)
    prepared: bool = False
    start_time: str = field(default_factory=now_rfc3339)
    terminating_until: float | None = None
    conditions: dict[str, tuple[str, str]] = field(default_factory=dict)  # type -> (status, since)
    last_status: JSON | None = None
    next_volume_sync: float = 0.0

    def ready(self) -> bool:
        """Every container running and passing readiness, and the pod not being deleted."""
        if self.terminating_until is not None or self.pod["metadata"].get("deletionTimestamp"):
            return False
        return bool(self.containers) and all(c.ready and c.running() for c in self.containers.values())
