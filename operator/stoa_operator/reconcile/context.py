"""Everything a reconcile needs from outside: API adapter, runtime adapter, settings, clock, probes."""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from pydantic import BaseModel, ValidationError

from stoa_api.conversation import ConversationSpec
from stoa_api.status import AgentStatus, ConversationStatus, ModelPolicyStatus
from stoa_operator.errors import InvalidSpecError
from stoa_operator.reconcile import readiness
from stoa_operator.reconcile.conditions import (
    Event,
    Observation,
    merge_conditions,
    status_changed,
    transition_events,
)
from stoa_operator.runtime_adapter import Connection, connection_from
from stoa_operator.settings import OperatorSettings

StatusModel = AgentStatus | ConversationStatus | ModelPolicyStatus
STATUS_TYPES: dict[str, type[StatusModel]] = {
    "Agent": AgentStatus,
    "Conversation": ConversationStatus,
    "ModelPolicy": ModelPolicyStatus,
}


class KubeApi(Protocol):
    def apply(self, manifest: dict[str, Any]) -> dict[str, Any]: ...
    def get(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None: ...
    def list(
        self, api_version: str, kind: str, namespace: str, label_selector: str | None = None
    ) -> list[dict[str, Any]]: ...
    def patch_status(
        self, api_version: str, kind: str, namespace: str, name: str, status: dict[str, Any]
    ) -> dict[str, Any]: ...
    def event(self, involved: dict[str, Any], type_: str, reason: str, message: str, now: str) -> None: ...
    def delete(self, api_version: str, kind: str, namespace: str, name: str) -> bool: ...
    def api_available(self, api_version: str, plural: str) -> bool: ...


class RuntimeApi(Protocol):
    """The agent runtime as reconciles see it (``runtime_adapter.Runtime``; a fake in unit tests)."""

    def ensure_conversation(
        self, conn: Connection, namespace: str, name: str, spec: ConversationSpec, uid: str
    ) -> ConversationStatus: ...
    def conversation_status(
        self, conn: Connection, namespace: str, name: str
    ) -> ConversationStatus | None: ...
    def stop_conversation(
        self, conn: Connection, namespace: str, name: str, uid: str, purge: bool
    ) -> str: ...
    def agent_status(self, conn: Connection, namespace: str, agent: str) -> AgentStatus: ...
    def agent_turn_counts(
        self, conn: Connection, namespace: str, agent: str, windows: dict[str, int], latency_ms: int | None
    ) -> dict[str, Any]: ...
    def run_probe(self, conn: Connection, namespace: str, agent: str, probe: Any, now: Any) -> Any: ...


def utc_now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def parse_time(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


@dataclass
class Context:
    kube: KubeApi
    runtime: RuntimeApi
    settings: OperatorSettings
    clock: Callable[[], str] = utc_now
    gateway_probe: Callable[[str, float], dict[str, Any] | None] = lambda _url, _timeout: None
    discovery_seconds: float = 300.0
    otel_env: tuple[tuple[str, str], ...] = ()  # OTEL_* the operator passes to agents and gateways
    _locks: dict[str, threading.Lock] = field(default_factory=dict)
    _apis: dict[str, tuple[float, bool]] = field(default_factory=dict)
    _locks_guard: threading.Lock = field(default_factory=threading.Lock)

    def namespace_lock(self, namespace: str) -> threading.Lock:
        with self._locks_guard:
            return self._locks.setdefault(namespace, threading.Lock())

    def now(self) -> dt.datetime:
        """The clock as a datetime (probe scheduling)."""
        return parse_time(self.clock())

    def api_available(self, api_version: str, plural: str) -> bool:
        """Discovery of an optional API (e.g. PrometheusRule), cached for ``discovery_seconds``."""
        key = f"{api_version}/{plural}"
        now = time.monotonic()
        cached = self._apis.get(key)
        if cached is not None and now - cached[0] < self.discovery_seconds:
            return cached[1]
        found = self.kube.api_available(api_version, plural)
        self._apis[key] = (now, found)
        return found

    def connection(self, namespace: str) -> tuple[Connection | None, str | None]:
        """The runtime connection for a namespace: its connection Secret, the one its agents read (each
        namespace may have its own database and vhost). Returns (connection, problem); problem names what
        is missing."""
        s = self.settings
        secret = self.kube.get("v1", "Secret", namespace, s.connection_secret)
        return connection_from(None, None, s.connection_secret, secret)


@dataclass
class Outcome:
    """What a reconcile did: the status it wants, the events it posted, and whether to retry soon."""

    status: dict[str, Any]
    events: list[Event]
    written: bool
    retry_in: float | None = None
    retry_reason: str = ""


def finish(
    ctx: Context,
    body: dict[str, Any],
    observations: list[Observation],
    fields: StatusModel,
    retry_in: float | None = None,
) -> Outcome:
    """Merge conditions, write status only if it changed, post events for flips.

    ``fields``: the kind's status type with the fields this reconcile sets (others keep their value);
    the status written is validated by that type, so a field the CRD does not declare cannot be written.
    """
    meta = body["metadata"]
    expected = STATUS_TYPES[body["kind"]]
    if type(fields) is not expected:
        raise TypeError(f"{body['kind']} status written as {type(fields).__name__}")
    generation = int(meta.get("generation") or 0)
    current = body.get("status") or {}
    old_conditions = list(current.get("conditions") or [])
    conditions = merge_conditions(old_conditions, observations, generation, ctx.clock())
    typed = expected.model_validate(
        {
            **fields.model_dump(by_alias=True, exclude_unset=True),
            "observedGeneration": generation,
            "conditions": conditions,
        }
    )
    desired = typed.model_dump(mode="json", by_alias=True, exclude_unset=True)
    written = False
    if status_changed(current, desired):
        ctx.kube.patch_status(body["apiVersion"], body["kind"], meta["namespace"], meta["name"], desired)
        written = True
    events = transition_events(body["kind"], old_conditions, conditions)
    for event in events:
        ctx.kube.event(body, event.type, event.reason, event.message, ctx.clock())
    reason = "; ".join(o.message for o in observations if o.type == "Degraded" and o.status)
    return Outcome(desired, events, written, retry_in, reason)


SpecT = TypeVar("SpecT", bound=BaseModel)


def validated_spec(ctx: Context, body: dict[str, Any], model: type[SpecT]) -> SpecT:
    """The typed spec; an invalid one sets Degraded/InvalidSpec and raises a permanent error."""
    meta = body["metadata"]
    try:
        return model.model_validate(body.get("spec") or {})
    except ValidationError as exc:
        message = f"invalid spec: {exc.errors()[0]['msg']}"
        finish(ctx, body, readiness.invalid(message), STATUS_TYPES[body["kind"]]())
        raise InvalidSpecError(f"{body['kind']} {meta['namespace']}/{meta['name']}: {message}") from exc
