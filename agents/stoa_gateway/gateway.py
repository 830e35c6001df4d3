"""The gateway's shell state: active config, per-policy runtimes, metrics, audit, HTTP client."""

from __future__ import annotations

import datetime as dt
import logging
import os
import time
from typing import Any

import aiohttp

from stoa_gateway.audit import AuditLog
from stoa_gateway.breaker import (
    CIRCUIT_GAUGE_VALUE,
    CircuitState,
    breaker_admit,
    breaker_record,
    breaker_release,
    effective_state,
)
from stoa_gateway.limits import Limits, LocalLimits
from stoa_gateway.metrics import GatewayMetrics
from stoa_gateway.policy import GatewayConfig, Target, policy_hash
from stoa_gateway.priority import PriorityQueue
from stoa_gateway.state import PolicyRuntime, TargetRuntime

log = logging.getLogger("stoa.gateway")


class Gateway:
    def __init__(
        self,
        config: GatewayConfig,
        config_hash: str,
        audit: AuditLog,
        metrics: GatewayMetrics,
        limits: Limits | None = None,
    ) -> None:
        self.audit = audit
        self.metrics = metrics
        self.limits: Limits = limits or LocalLimits()
        self.queues: dict[str, PriorityQueue] = {}
        self.runtimes: dict[str, PolicyRuntime] = {}
        self.session: aiohttp.ClientSession | None = None
        self.config = config
        self.config_hash = config_hash
        self.loaded_at = time.time()
        self.last_reload_error: str | None = None
        self.rejected_hash: str | None = None  # the last config content that did not validate
        self.apply_config(config, config_hash)
        metrics.watch_budgets(self._budgets)

    def _budgets(self) -> list[tuple[str, float, float | None]]:
        """(policy, spent today, daily limit) for the budget gauges, read at scrape time."""
        now = time.time()
        return [
            (name, self.limits.spent(name, now), rt.spec.budget.daily_limit_usd if rt.spec.budget else None)
            for name, rt in self.runtimes.items()
        ]

    def apply_config(self, config: GatewayConfig, config_hash: str) -> None:
        """Swap the active config; runtime state is kept for policies and targets that remain."""
        runtimes: dict[str, PolicyRuntime] = {}
        for entry in config.policies:
            runtime = self.runtimes.get(entry.name)
            if runtime is None:
                runtime = PolicyRuntime(entry.name, entry.spec)
            else:
                runtime.update_spec(entry.spec)
            runtimes[entry.name] = runtime
            for target in entry.spec.targets:
                self.metrics.circuit.labels(entry.name, target.name).set(
                    CIRCUIT_GAUGE_VALUE[runtime.target_runtime(target.name).breaker.state]
                )
        for name, old in self.runtimes.items():
            if name not in runtimes:
                for target_name in old.targets:
                    self.metrics.circuit.remove(name, target_name)
        self.runtimes = runtimes
        self.config = config
        self.config_hash = config_hash
        self.loaded_at = time.time()
        self.last_reload_error = None
        self.metrics.config_info.set(len(config.policies))

    def queue(self, policy: str) -> PriorityQueue:
        queue = self.queues.get(policy)
        if queue is None:
            queue = self.queues[policy] = PriorityQueue()
        return queue

    @staticmethod
    def api_key(target: Target) -> str | None:
        env = target.key_env_name()
        return os.environ.get(env) if env else None

    # Circuit breaker transitions, audited and exported.
    def _breaker_changed(
        self,
        *,
        policy: str,
        target: str,
        before: CircuitState,
        after: CircuitState,
        trace_id: str | None,
        reason: str,
    ) -> None:
        if before is after:
            return
        self.metrics.circuit.labels(policy, target).set(CIRCUIT_GAUGE_VALUE[after])
        event = {
            CircuitState.OPEN: "breaker_opened",
            CircuitState.HALF_OPEN: "breaker_half_open",
            CircuitState.CLOSED: "breaker_closed",
        }[after]
        log.info("Circuit %s policy=%s target=%s reason=%s", after, policy, target, reason)
        self.audit.emit(event, policy=policy, target=target, reason=reason, trace_id=trace_id)

    def admit(self, runtime: PolicyRuntime, target: str, *, now: float, trace_id: str | None) -> bool:
        rt = runtime.target_runtime(target)
        before = rt.breaker.state
        ok, rt.breaker = breaker_admit(rt.breaker, runtime.spec.circuit_breaker, now)
        self._breaker_changed(
            policy=runtime.name,
            target=target,
            before=before,
            after=rt.breaker.state,
            trace_id=trace_id,
            reason="open period elapsed, probing",
        )
        return ok

    def record(
        self, runtime: PolicyRuntime, target: str, *, ok: bool, now: float, trace_id: str | None, reason: str
    ) -> None:
        rt = runtime.target_runtime(target)
        before = rt.breaker.state
        rt.breaker = breaker_record(rt.breaker, runtime.spec.circuit_breaker, ok, now)
        why = "probe succeeded" if ok else reason
        if rt.breaker.state is CircuitState.OPEN and before is CircuitState.CLOSED:
            why = f"error rate over threshold, last: {reason}"
        self._breaker_changed(
            policy=runtime.name,
            target=target,
            before=before,
            after=rt.breaker.state,
            trace_id=trace_id,
            reason=why,
        )

    def release(self, runtime: PolicyRuntime, target: str) -> None:
        rt = runtime.target_runtime(target)
        rt.breaker = breaker_release(rt.breaker)

    def status(self) -> dict[str, Any]:
        """Per-policy per-target health for ``GET /v1/stoa/status`` (and ModelPolicy status)."""
        now = time.monotonic()
        policies: dict[str, Any] = {}
        for name, runtime in self.runtimes.items():
            targets: dict[str, Any] = {}
            for target in runtime.spec.targets:
                rt: TargetRuntime = runtime.target_runtime(target.name)
                targets[target.name] = {
                    "circuit": str(effective_state(rt.breaker, runtime.spec.circuit_breaker, now)),
                    "inFlight": rt.in_flight,
                    "ewmaLatencySeconds": rt.ewma_latency,
                    "lastError": rt.last_error,
                    "lastErrorTime": _iso(rt.last_error_at),
                    "lastFailoverReason": rt.last_failover_reason,
                    "lastFailoverTime": _iso(rt.last_failover_at),
                    "lastSuccessTime": _iso(rt.last_success_at),
                    "healthy": rt.health.healthy,
                    "lastHealthCheckTime": _iso(rt.last_health_check_at),
                    "lastHealthCheckError": rt.last_health_error,
                }
            spent = self.limits.spent(name, time.time())
            # specHash: what this replica serves, compared by the operator (ModelPolicy condition Served).
            policies[name] = {
                "targets": targets,
                "spentTodayUSD": round(spent, 6),
                "specHash": policy_hash(runtime.spec),
            }
        return {
            "limits": self.limits.status(),
            "config": {
                "hash": self.config_hash,
                "loadedAt": _iso(self.loaded_at),
                "lastReloadError": self.last_reload_error,
            },
            "policies": policies,
        }


def _iso(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return dt.datetime.fromtimestamp(epoch, dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
