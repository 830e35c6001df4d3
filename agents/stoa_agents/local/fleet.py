"""Agent replicas as local subprocesses (``python -m stoa_cli.main agent``), restarted when they die,
like a Deployment would. Each restart gets a new pod name, so takeovers are visible in the state store."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from stoa_devenv.procs import free_port


@dataclass
class Replica:
    agent: str
    index: int
    generation: int
    process: subprocess.Popen[bytes]
    log: Path
    metrics_port: int = 0

    @property
    def pod(self) -> str:
        return pod_name(self.agent, self.index, self.generation)


AGENT_COMMAND = [sys.executable, "-m", "stoa_cli.main", "agent"]


def pod_name(agent: str, index: int, generation: int) -> str:
    return f"{agent}-{index}-g{generation}"


@dataclass
class Fleet:
    """``envs``: agent -> environment without ``STOA_POD_NAME`` (set per replica)."""

    envs: dict[str, dict[str, str]]
    replicas: int
    log_dir: Path
    restart: bool = True
    restart_delay: float = 0.3
    metrics: bool = False
    # agent -> argv of its replicas (default ``stoa agent``; tests pass a faulty agent here)
    commands: dict[str, list[str]] = field(default_factory=dict)
    members: dict[tuple[str, int], Replica] = field(default_factory=dict)
    dead_since: dict[tuple[str, int], float] = field(default_factory=dict)
    restarts: int = 0

    def _spawn(self, agent: str, index: int, generation: int) -> Replica:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = self.log_dir / f"{pod_name(agent, index, generation)}.log"
        # Like a pod: configured only by the env contract, never by STOA_* names of the caller's shell.
        inherited = {k: v for k, v in os.environ.items() if not k.upper().startswith("STOA_")}
        env = {**inherited, **self.envs[agent], "STOA_POD_NAME": pod_name(agent, index, generation)}
        port = free_port() if self.metrics else 0
        env["STOA_METRICS_PORT_NUMBER"] = str(port)
        if self.metrics:
            env["STOA_METRICS_HOST"] = "127.0.0.1"
        with log.open("ab") as out:
            process = subprocess.Popen(
                self.commands.get(agent, AGENT_COMMAND),
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        replica = Replica(agent, index, generation, process, log, port)
        self.members[(agent, index)] = replica
        return replica

    def start(self) -> None:
        """Replica 0 of every agent first (registered first, so it is the active consumer), then the rest."""
        for index in range(self.replicas):
            for agent in self.envs:
                self._spawn(agent, index, 0)
            if index == 0 and self.replicas > 1:
                time.sleep(0.5)

    def supervise(self) -> list[Replica]:
        """Restart replicas that exited (after ``restart_delay``); returns the new ones."""
        started = []
        now = time.monotonic()
        for key, replica in list(self.members.items()):
            if replica.process.poll() is None:
                continue
            if not self.restart:
                continue
            since = self.dead_since.setdefault(key, now)
            if now - since >= self.restart_delay:
                del self.dead_since[key]
                self.restarts += 1
                started.append(self._spawn(replica.agent, replica.index, replica.generation + 1))
        return started

    def by_pod(self, pod: str) -> Replica | None:
        for replica in self.members.values():
            if replica.pod == pod:
                return replica
        return None

    def kill(self, pod: str) -> bool:
        """SIGKILL one replica (a crash); True when it was running."""
        replica = self.by_pod(pod)
        if replica is None or replica.process.poll() is not None:
            return False
        os.kill(replica.process.pid, signal.SIGKILL)
        replica.process.wait()
        return True

    def alive(self) -> list[Replica]:
        return [r for r in self.members.values() if r.process.poll() is None]

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM everyone (graceful: finish the current turn), SIGKILL what is left after ``timeout``."""
        self.restart = False
        for replica in self.alive():
            replica.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for replica in list(self.members.values()):
            remaining = max(0.1, deadline - time.monotonic())
            try:
                replica.process.wait(timeout=remaining)
            except subprocess.TimeoutExpired:
                replica.process.kill()
                replica.process.wait()
