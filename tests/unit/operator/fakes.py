"""Fakes of the reconciles' two adapters, for table tests (observed -> desired -> status) without a cluster.

``FakeKube`` keeps objects in memory with the API server's semantics the reconciles rely on: apply
replaces what the field manager owns and keeps ``status``; ``patch_status`` is a JSON merge patch (None
deletes a key; lists are replaced); get/list by namespace and label selector. ``FakeRuntime`` answers
from what the test set and records each call.
"""

from __future__ import annotations

import base64
import copy
from dataclasses import dataclass, field
from typing import Any

from stoa_agents.probes import ProbeReport
from stoa_agents.store.turn_records import WindowCounts
from stoa_api.conversation import ConversationSpec
from stoa_api.status import AgentStatus, ConversationStatus
from stoa_operator.runtime_adapter import Connection, RuntimeUnavailableError

Key = tuple[str, str, str, str]  # apiVersion, kind, namespace, name


def _merge(target: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    out = dict(target)
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


@dataclass
class FakeKube:
    objects: dict[Key, dict[str, Any]] = field(default_factory=dict)
    applied: list[dict[str, Any]] = field(default_factory=list)
    statuses: list[dict[str, Any]] = field(default_factory=list)
    events: list[tuple[str, str, str]] = field(default_factory=list)
    served: set[str] = field(default_factory=set)

    def add(self, obj: dict[str, Any]) -> dict[str, Any]:
        meta = obj["metadata"]
        stored = copy.deepcopy(obj)
        stored["metadata"].setdefault("generation", 1)
        self.objects[(obj["apiVersion"], obj["kind"], meta["namespace"], meta["name"])] = stored
        return stored

    def secret(self, namespace: str, name: str, data: dict[str, str]) -> None:
        encoded = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
        self.add(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": name, "namespace": namespace},
                "data": encoded,
            }
        )

    def set_status(
        self, api_version: str, kind: str, namespace: str, name: str, status: dict[str, Any]
    ) -> None:
        """What a controller (the controller-manager) would report, e.g. a Deployment's rollout."""
        self.objects[(api_version, kind, namespace, name)]["status"] = copy.deepcopy(status)

    def apply(self, manifest: dict[str, Any]) -> dict[str, Any]:
        meta = manifest["metadata"]
        key = (manifest["apiVersion"], manifest["kind"], meta["namespace"], meta["name"])
        self.applied.append(copy.deepcopy(manifest))
        existing = self.objects.get(key)
        stored = copy.deepcopy(manifest)
        generation = 1
        if existing is not None:
            generation = int(existing["metadata"].get("generation", 1))
            if existing.get("spec") != manifest.get("spec"):
                generation += 1
            if "status" in existing:
                stored["status"] = existing["status"]
        stored["metadata"]["generation"] = generation
        self.objects[key] = stored
        return copy.deepcopy(stored)

    def get(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        obj = self.objects.get((api_version, kind, namespace, name))
        return copy.deepcopy(obj) if obj is not None else None

    def list(
        self, api_version: str, kind: str, namespace: str, label_selector: str | None = None
    ) -> list[dict[str, Any]]:
        wanted = dict(p.split("=", 1) for p in label_selector.split(",")) if label_selector else {}
        return [
            copy.deepcopy(o)
            for (av, k, ns, _), o in sorted(self.objects.items())
            if (av, k, ns) == (api_version, kind, namespace)
            and all((o["metadata"].get("labels") or {}).get(lk) == lv for lk, lv in wanted.items())
        ]

    def patch_status(
        self, api_version: str, kind: str, namespace: str, name: str, status: dict[str, Any]
    ) -> dict[str, Any]:
        obj = self.objects[(api_version, kind, namespace, name)]
        obj["status"] = _merge(obj.get("status") or {}, status)
        self.statuses.append(copy.deepcopy(status))
        return copy.deepcopy(obj)

    def event(self, involved: dict[str, Any], type_: str, reason: str, message: str, now: str) -> None:
        self.events.append((type_, reason, message))

    def delete(self, api_version: str, kind: str, namespace: str, name: str) -> bool:
        return self.objects.pop((api_version, kind, namespace, name), None) is not None

    def api_available(self, api_version: str, plural: str) -> bool:
        """Optional APIs (e.g. prometheusrules) the fake serves: ``served``."""
        return f"{api_version}/{plural}" in self.served

    def body(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any]:
        """The object as the next reconcile would receive it (kopf's body)."""
        obj = self.get(api_version, kind, namespace, name)
        assert obj is not None, f"{kind} {namespace}/{name} does not exist"
        return obj


@dataclass
class FakeRuntime:
    conversations: dict[tuple[str, str], ConversationStatus] = field(default_factory=dict)
    agents: dict[tuple[str, str], AgentStatus] = field(default_factory=dict)
    turn_counts: dict[tuple[str, str], WindowCounts] = field(default_factory=dict)
    probes: dict[tuple[str, str], ProbeReport] = field(default_factory=dict)
    unavailable: str | None = None  # every call raises RuntimeUnavailableError with this message
    calls: list[tuple[str, str, str]] = field(default_factory=list)
    started: dict[tuple[str, str], ConversationSpec] = field(default_factory=dict)  # the spec it started with

    def _check(self, what: str, namespace: str, name: str) -> None:
        self.calls.append((what, namespace, name))
        if self.unavailable is not None:
            raise RuntimeUnavailableError(self.unavailable)

    def ensure_conversation(
        self, conn: Connection, namespace: str, name: str, spec: ConversationSpec, uid: str
    ) -> ConversationStatus:
        self._check("ensure", namespace, name)
        key = (namespace, name)
        self.started.setdefault(key, spec)
        if key not in self.conversations:
            self.conversations[key] = ConversationStatus(
                conversation_id=uid, runtime_name=f"{namespace}/{name}", phase="Pending", turns=0
            )
        return self.conversations[key]

    def conversation_status(self, conn: Connection, namespace: str, name: str) -> ConversationStatus | None:
        self._check("status", namespace, name)
        return self.conversations.get((namespace, name))

    def stop_conversation(self, conn: Connection, namespace: str, name: str, uid: str, purge: bool) -> str:
        self._check("stop", namespace, name)
        return "stopped" + (", transcript purged" if purge else "")

    def agent_status(self, conn: Connection, namespace: str, agent: str) -> AgentStatus:
        self._check("agent", namespace, agent)
        return self.agents.get((namespace, agent), AgentStatus(turns_handled=0, takeovers=0))

    def agent_turn_counts(
        self, conn: Connection, namespace: str, agent: str, windows: dict[str, int], latency_ms: int | None
    ) -> dict[str, Any]:
        """Every window holds the same ``turn_counts`` of the agent (default: no turn at all)."""
        self._check("turn-counts", namespace, agent)
        counts = self.turn_counts.get((namespace, agent), WindowCounts(0, 0, 0, 0))
        return dict.fromkeys(windows, counts)

    def run_probe(self, conn: Connection, namespace: str, agent: str, probe: Any, now: Any) -> Any:
        self._check("probe", namespace, agent)
        return self.probes.get((namespace, agent), ProbeReport(None, None, None, None, 0))
