"""What happened when: a background poller of Conversation, Agent and pod state, plus marks from the test.

Every change it sees (and every mark) becomes one line ``+12.34s  what``, relative to the test's start;
``render()`` prints them for the test log and docs/e2e.md.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

from tests.e2e.kube import JSON, Kube, KubeError

GROUP = "/apis/stoa.dev/v1alpha1"


@dataclass(frozen=True)
class Entry:
    at: float
    what: str


def _conversation_line(obj: JSON | None) -> str:
    status = (obj or {}).get("status") or {}
    ready: JSON = next((c for c in status.get("conditions") or [] if c.get("type") == "Ready"), {})
    return (
        f"phase={status.get('phase')} turns={status.get('turns')} lastSpeaker={status.get('lastSpeaker')} "
        f"Ready={ready.get('status')}/{ready.get('reason')}"
    )


def _agent_line(obj: JSON | None) -> str:
    status = (obj or {}).get("status") or {}
    return (
        f"activePod={status.get('activePod')} previousPod={status.get('previousPod')} "
        f"takeovers={status.get('takeovers')} readyReplicas={status.get('readyReplicas')} "
        f"standbyReplicas={status.get('standbyReplicas')} turnsHandled={status.get('turnsHandled')}"
    )


def pod_ready(pod: JSON) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def pod_restarts(pod: JSON) -> int:
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    return sum(int(c.get("restartCount") or 0) for c in statuses)


def _pods_line(pods: list[JSON]) -> str:
    parts = []
    for pod in sorted(pods, key=lambda p: str(p["metadata"]["name"])):
        status = pod.get("status") or {}
        state = "Terminating" if pod["metadata"].get("deletionTimestamp") else status.get("phase", "?")
        restarts = pod_restarts(pod)
        flags = (",Ready" if pod_ready(pod) else "") + (f",restarts={restarts}" if restarts else "")
        parts.append(f"{pod['metadata']['name']}({state}{flags})")
    return " ".join(parts) or "-"


@dataclass
class Timeline:
    """Polls ``conversation`` and ``agent`` in ``namespace`` every ``interval`` seconds until ``stop()``."""

    kube: Kube
    namespace: str
    conversation: str
    agent: str
    started: float = field(default_factory=time.monotonic)
    interval: float = 0.3
    entries: list[Entry] = field(default_factory=list)
    last: dict[str, str] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def mark(self, what: str, at: float | None = None) -> None:
        with self._lock:
            self.entries.append(Entry((at if at is not None else time.monotonic()) - self.started, what))

    def start(self) -> Timeline:
        self._thread = threading.Thread(target=self._run, name="timeline", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _observe(self, key: str, line: str) -> None:
        if self.last.get(key) != line:
            self.last[key] = line
            self.mark(f"{key}: {line}")

    def _get(self, path: str) -> Any:
        try:
            return self.kube.get_or_none(path)
        except (KubeError, OSError):
            return None

    def poll(self) -> None:
        ns = self.namespace
        conversation = self._get(f"{GROUP}/namespaces/{ns}/conversations/{self.conversation}")
        agent = self._get(f"{GROUP}/namespaces/{ns}/agents/{self.agent}")
        self._observe(f"Conversation {self.conversation}", _conversation_line(conversation))
        self._observe(f"Agent {self.agent}", _agent_line(agent))
        try:
            pods = self.kube.get(
                f"/api/v1/namespaces/{ns}/pods", labelSelector=f"stoa.dev/agent={self.agent}"
            )["items"]
        except (KubeError, OSError):
            return
        self._observe(f"pods of {self.agent}", _pods_line(pods))

    def _run(self) -> None:
        while not self._stop.is_set():
            self.poll()
            self._stop.wait(self.interval)

    def render(self) -> str:
        with self._lock:
            entries = sorted(self.entries, key=lambda e: e.at)
        return "\n".join(f"{e.at:+8.2f}s  {e.what}" for e in entries)
