"""Prometheus metrics of ``stoa api`` (one registry per app, served on the metrics port)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge


class ApiMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "stoa_api_requests_total",
            "API requests answered by a route, by route template, method and status code",
            ["route", "method", "code"],
            registry=self.registry,
        )
        self.denied = Counter(
            "stoa_api_denied_total",
            "Requests refused before any route ran (401, 403, 404, 405, 400, 503), by status",
            ["status"],
            registry=self.registry,
        )
        self.streams = Gauge(
            "stoa_api_event_streams", "Open conversation event streams (SSE)", registry=self.registry
        )
        self.events = Counter(
            "stoa_api_events_sent_total",
            "Events sent on event streams, by type",
            ["type"],
            registry=self.registry,
        )
        self.streams_ended = Counter(
            "stoa_api_event_streams_ended_total",
            "Event streams that ended, by why: end (conversation finished), client (went away), "
            "unauthorized (token or access gone), shutdown",
            ["why"],
            registry=self.registry,
        )
