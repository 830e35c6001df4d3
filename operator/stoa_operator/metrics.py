"""Operator metrics on ``/metrics``: reconciles, errors and durations per kind and trigger."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.reconciles = Counter(
            "stoa_operator_reconciles",
            "Reconciles run, by kind, trigger and result (ok, retry, error)",
            ["kind", "trigger", "result"],
            registry=self.registry,
        )
        self.errors = Counter(
            "stoa_operator_reconcile_errors",
            "Reconcile errors by kind and error class",
            ["kind", "error"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "stoa_operator_reconcile_duration_seconds",
            "Reconcile duration by kind",
            ["kind"],
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=self.registry,
        )
        self.status_writes = Counter(
            "stoa_operator_status_writes",
            "Status patches written (only on change)",
            ["kind"],
            registry=self.registry,
        )
