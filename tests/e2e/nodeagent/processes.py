"""Containers as local processes: start, exit codes, restartPolicy with backoff, signals.

Each container runs in its own session (process group), so signals reach its children too. Exit codes
follow the kubelet's convention (128 + signal); restarts back off exponentially (``restart_backoff``).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from tests.e2e.nodeagent import spec
from tests.e2e.kube import JSON
from tests.e2e.nodeagent.probes import probe_all, reset_probers
from tests.e2e.nodeagent.runs import Container, PodRun, now_rfc3339


@dataclass(frozen=True)
class Restarts:
    """Exponential backoff between restarts of a crashing container: base, doubling, up to cap."""

    base: float = 0.5
    cap: float = 5.0


def start_container(run: PodRun, container: Container, restarts: Restarts) -> None:
    """Start the container's process (stdout+stderr appended to its log); StartError on failure."""
    log: IO[bytes] = container.log_path.open("ab")
    log.write(f"--- {now_rfc3339()} start {container.argv}\n".encode())
    log.flush()
    cwd = container.spec.get("workingDir")
    cwd = spec.rewrite_paths(cwd, run.mounts[container.name]) if cwd else str(run.workdir)
    try:
        container.proc = subprocess.Popen(
            container.argv,
            env=container.env,
            cwd=cwd if Path(cwd).is_dir() else str(run.workdir),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    except OSError as err:
        container.waiting_reason, container.waiting_message = "StartError", str(err)
        container.proc = None
        container.final = False
        container.next_start_at = time.monotonic() + restarts.cap
        return
    finally:
        log.close()
    container.started_at = now_rfc3339()
    container.last_started_monotonic = time.monotonic()
    container.terminated = None
    container.waiting_reason = container.waiting_message = ""
    container.kill_at = None
    reset_probers(container, time.monotonic())


def container_exited(container: Container, returncode: int) -> JSON:
    """The terminated state of an exited process (recorded once)."""
    if container.terminated is not None:
        return container.terminated
    exit_code = spec.exit_code_of(returncode)
    terminated: JSON = {
        "exitCode": exit_code,
        "reason": "Completed" if exit_code == 0 else "Error",
        "startedAt": container.started_at,
        "finishedAt": now_rfc3339(),
    }
    if returncode < 0:
        terminated["signal"] = -returncode
    container.terminated = terminated
    container.ready = False
    return terminated


def step_container(
    run: PodRun,
    container: Container,
    now: float,
    restarts: Restarts,
    programs: Mapping[str, list[str]],
) -> None:
    """One tick: start when due, probe while running, restart (or stay down) after an exit."""
    if container.proc is None:
        if container.final or now < container.next_start_at:
            return
        start_container(run, container, restarts)
        return
    code = container.proc.poll()
    if code is None:
        if container.kill_at is not None and now >= container.kill_at:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(container.proc.pid, signal.SIGKILL)
        probe_all(run, container, now, programs)
        return
    terminated = container_exited(container, code)
    policy = run.pod["spec"].get("restartPolicy", "Always")
    if run.terminating_until is None and spec.should_restart(policy, terminated["exitCode"]):
        ran = time.monotonic() - container.last_started_monotonic
        container.crashes_in_a_row = 1 if ran > 30 else container.crashes_in_a_row + 1
        delay = spec.next_backoff(container.crashes_in_a_row, restarts.base, restarts.cap)
        container.next_start_at = now + delay
        container.restart_count += 1
        container.last_terminated = container.terminated
        container.proc = None
        container.waiting_reason = "CrashLoopBackOff" if delay >= 1 else "ContainerCreating"
        container.waiting_message = f"back-off {delay:.1f}s restarting failed container"
    else:
        container.final = True


def signal_pod(run: PodRun, sig: int) -> None:
    """Signal the process group of every running container of the pod."""
    for container in run.containers.values():
        if container.proc is not None and container.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(container.proc.pid, sig)


def stop_pod_processes(run: PodRun, now: float) -> bool:
    """Graceful stop for a deleted pod: SIGTERM once, SIGKILL after the grace period. True when all exited."""
    if run.terminating_until is None:
        meta = run.pod["metadata"]
        grace = meta.get("deletionGracePeriodSeconds")
        if grace is None:
            grace = run.pod["spec"].get("terminationGracePeriodSeconds", 30)
        run.terminating_until = now + float(grace)
        signal_pod(run, signal.SIGTERM)
    elif now >= run.terminating_until:
        signal_pod(run, signal.SIGKILL)
    for container in run.containers.values():
        if container.proc is not None:
            code = container.proc.poll()
            if code is not None:
                container_exited(container, code)
    if any(c.running() for c in run.containers.values()):
        return False
    for container in run.containers.values():
        container.final = True
    return True
