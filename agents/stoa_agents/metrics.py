"""Prometheus metrics of one agent replica (own registry, served with /healthz and /readyz)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


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
        self.ready = Gauge(
            "stoa_agent_ready", "1 while connected to broker and database", ["agent"], registry=r
        )
