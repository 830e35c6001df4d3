"""Prometheus metrics of one agent replica (own registry, served with /healthz and /readyz)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from stoa_telemetry.gen_ai_metrics import GenAIClientMetrics
from stoa_telemetry.slo import BAD_TURN_OUTCOMES, GOOD_TURN_OUTCOMES

DEAD_LETTER_REASONS = ("malformed", "rejected", "delivery_limit")


class AgentMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.turns = Counter(
            "stoa_agent_turns_total", "Turns handled, by outcome", ["agent", "outcome"], registry=r
        )
        self.turn_seconds = Histogram(
            "stoa_agent_turn_duration_seconds",
            "Delivery to ack of stored turns",
            ["agent"],
            registry=r,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
        )
        self.redeliveries = Counter(
            "stoa_agent_redeliveries_total", "Deliveries flagged redelivered", ["agent"], registry=r
        )
        self.takeovers = Counter(
            "stoa_agent_takeovers_total",
            "Times this replica took over as active consumer",
            ["agent"],
            registry=r,
        )
        self.dead_lettered = Counter(
            "stoa_agent_dead_lettered_total",
            "Messages rejected or found dead-lettered",
            ["agent", "reason"],
            registry=r,
        )
        self.model_errors = Counter(
            "stoa_agent_model_errors_total", "Model calls that failed after retries", ["agent"], registry=r
        )
        self.tokens = Counter("stoa_agent_tokens_total", "Model tokens", ["agent", "direction"], registry=r)
        self.active = Gauge(
            "stoa_agent_active", "1 while this replica is the active consumer", ["agent"], registry=r
        )
        # OpenTelemetry GenAI client metrics (Prometheus form) of this replica's model calls.
        self.genai = GenAIClientMetrics(r)
        self.ready = Gauge(
            "stoa_agent_ready", "1 while connected to broker and database", ["agent"], registry=r
        )

    def initialize(self, agent: str) -> None:
        """Export every outcome's series at 0 from the start: Prometheus sees a counter's first increment
        only when the series already existed (rate/increase need two samples), and the SLO rules and
        alerts read these outcomes."""
        for outcome in (*GOOD_TURN_OUTCOMES, *BAD_TURN_OUTCOMES):
            self.turns.labels(agent, outcome)
        for reason in DEAD_LETTER_REASONS:
            self.dead_lettered.labels(agent, reason)
        for counter in (self.redeliveries, self.takeovers, self.model_errors):
            counter.labels(agent)
        for direction in ("in", "out"):
            self.tokens.labels(agent, direction)
        self.turn_seconds.labels(agent)
