"""``Call``: everything about one client request that admission, the attempts and the relay share."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from stoa_gateway.costs import COST_HEADER, Usage, cost_header
from stoa_gateway.gateway import Gateway
from stoa_gateway.policy import ModelPolicySpec, Priority, Target
from stoa_gateway.reservation import Reservation
from stoa_gateway.routing import RequestFeatures
from stoa_gateway.state import PolicyRuntime
from stoa_gateway.telemetry import RequestSpans
from stoa_gateway.tracing import TraceContext


@dataclass
class Call:
    gw: Gateway
    runtime: PolicyRuntime
    spec: ModelPolicySpec
    agent: str | None
    agent_label: str
    conversation: str | None
    priority: Priority
    spans: RequestSpans
    features: RequestFeatures
    reservation: Reservation
    body: dict[str, Any]
    stream: bool
    started: float
    include_usage: bool = False
    agent_admitted: bool = False  # the agent's limits took this call (once, however often it queues)
    passed: list[tuple[str, str, str]] = field(default_factory=list)  # (target, reason label, detail)
    notes: list[str] = field(default_factory=list)

    @property
    def policy(self) -> str:
        return self.runtime.name

    @property
    def trace(self) -> TraceContext:
        """The request span's context: the trace id in audit records and ``X-Stoa-Trace-Id``."""
        return self.spans.trace

    def count(self, target: str, outcome: str) -> None:
        self.spans.counted(target, outcome)
        m = self.gw.metrics
        m.ensure_series(self.policy, self.agent_label)
        m.child(m.requests, self.policy, target, self.agent_label, outcome).inc()
        m.child(m.priority_requests, self.policy, str(self.priority), outcome).inc()

    def response_headers(self, target: Target, usage: Usage | None = None) -> dict[str, str]:
        headers = {
            "X-Stoa-Policy": self.policy,
            "X-Stoa-Target": target.name,
            "X-Stoa-Trace-Id": self.trace.trace_id,
        }
        if usage is not None:
            headers[COST_HEADER] = cost_header(usage.cost_usd)
        return headers
