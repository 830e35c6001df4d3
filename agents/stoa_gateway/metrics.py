"""Prometheus metrics of one gateway instance (own CollectorRegistry, so tests can run several)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from stoa_gateway.labels import BoundedLabels
from stoa_telemetry.gen_ai_metrics import GenAIClientMetrics, GenAIServerMetrics
from stoa_telemetry.slo import BAD_REQUEST_OUTCOMES, GOOD_REQUEST_OUTCOMES

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
TPOT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1)
MAX_AGENTS = 100
MAX_CONVERSATIONS = 200


class GatewayMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        # OpenTelemetry GenAI metrics (Prometheus form) beside Stoa's own: upstream calls and served streams.
        self.genai_client = GenAIClientMetrics(r)
        self.genai_server = GenAIServerMetrics(r)
        self._initialized: set[tuple[str, str]] = set()
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}
        self.agents = BoundedLabels(MAX_AGENTS)
        self.conversations = BoundedLabels(MAX_CONVERSATIONS)
        self.requests = Counter(
            "stoa_gateway_requests",
            "Client requests by final outcome",
            ["policy", "target", "agent", "outcome"],
            registry=r,
        )
        self.attempts = Counter(
            "stoa_gateway_upstream_attempts",
            "Upstream attempts by outcome (ok, timeout, connection_error, status_5xx, ...)",
            ["policy", "target", "outcome"],
            registry=r,
        )
        self.latency = Histogram(
            "stoa_gateway_request_duration_seconds",
            "Client request duration (successful requests, to the last byte)",
            ["policy", "target"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.ttft = Histogram(
            "stoa_gateway_time_to_first_token_seconds",
            "Streaming: time from request to the first content token",
            ["policy", "target"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.tpot = Histogram(
            "stoa_gateway_time_per_output_token_seconds",
            "Streaming: time per output token after the first",
            ["policy", "target"],
            buckets=TPOT_BUCKETS,
            registry=r,
        )
        self.input_tokens = Counter(
            "stoa_gateway_input_tokens", "Input (prompt) tokens", ["policy", "target", "agent"], registry=r
        )
        self.output_tokens = Counter(
            "stoa_gateway_output_tokens",
            "Output (completion) tokens",
            ["policy", "target", "agent"],
            registry=r,
        )
        self.cost = Counter(
            "stoa_gateway_cost_usd", "Spend in USD", ["policy", "target", "agent"], registry=r
        )
        self.conversation_tokens = Counter(
            "stoa_gateway_conversation_tokens",
            "Tokens (input + output) by conversation (bounded: overflow is 'other')",
            ["policy", "conversation"],
            registry=r,
        )
        self.conversation_cost = Counter(
            "stoa_gateway_conversation_cost_usd",
            "Spend in USD by conversation (bounded: overflow is 'other')",
            ["policy", "conversation"],
            registry=r,
        )
        self.circuit = Gauge(
            "stoa_gateway_circuit_state",
            "Circuit breaker state: 0 closed, 1 half-open, 2 open",
            ["policy", "target"],
            registry=r,
        )
        self.in_flight = Gauge(
            "stoa_gateway_in_flight_requests", "Upstream requests in flight", ["policy", "target"], registry=r
        )
        self.fallbacks = Counter(
            "stoa_gateway_fallbacks",
            "Requests that moved on from a target, by reason",
            ["policy", "from_target", "reason"],
            registry=r,
        )
        self.retries = Counter(
            "stoa_gateway_retries", "Repeated attempts on the same target", ["policy", "target"], registry=r
        )
        self.rate_limited = Counter(
            "stoa_gateway_rate_limited",
            "Rate-limit and budget hits: scope target (skipped), agent, policy (all targets), budget",
            ["policy", "scope", "name"],
            registry=r,
        )
        self.guardrail = Counter(
            "stoa_gateway_guardrail_actions",
            "Guardrail actions: blocked, masked (per item), content_filter (output stopped)",
            ["policy", "direction", "action", "kind"],
            registry=r,
        )
        self.stream_aborts = Counter(
            "stoa_gateway_stream_aborts",
            "Streams that failed after tokens were sent (ended with an error event)",
            ["policy", "target"],
            registry=r,
        )
        self.priority_requests = Counter(
            "stoa_gateway_priority_requests",
            "Client requests by priority class (X-Stoa-Priority) and final outcome",
            ["policy", "priority", "outcome"],
            registry=r,
        )
        self.queue_wait = Histogram(
            "stoa_gateway_queue_wait_seconds",
            "Time from arrival to admission at the policy's limits, by priority",
            ["policy", "priority"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.queued = Gauge(
            "stoa_gateway_queued_requests",
            "Calls waiting at the policy's limits, by priority",
            ["policy", "priority"],
            registry=r,
        )
        self.limits_shared = Gauge(
            "stoa_gateway_limits_shared",
            "1 while limits and budgets are shared across replicas, 0 while this replica holds its share",
            registry=r,
        )
        self.health_checks = Counter(
            "stoa_gateway_health_checks",
            "Active health checks of targets by outcome (ok, timeout, connection_error, status_5xx, ...)",
            ["policy", "target", "outcome"],
            registry=r,
        )
        self.target_healthy = Gauge(
            "stoa_gateway_target_healthy",
            "1 while a target passes its active health checks (targets of policies with healthCheck)",
            ["policy", "target"],
            registry=r,
        )
        self.config_reloads = Counter(
            "stoa_gateway_config_reloads", "Config reloads by result (ok, error)", ["result"], registry=r
        )
        self.config_info = Gauge("stoa_gateway_config_policies", "Policies in the active config", registry=r)

    def ensure_series(self, policy: str, agent: str) -> None:
        """The failure outcomes of (policy, agent) at 0 before their first increment: Prometheus only sees
        an increment of a series that already existed (rate/increase need two samples)."""
        key = (policy, agent)
        if key in self._initialized:
            return
        self._initialized.add(key)
        for outcome in (*GOOD_REQUEST_OUTCOMES, *BAD_REQUEST_OUTCOMES):
            self.requests.labels(policy, "none", agent, outcome)

    def watch_budgets(self, rows: BudgetRows) -> None:
        self.registry.register(_BudgetCollector(rows))

    def child(self, metric: Counter | Histogram | Gauge, *labels: str) -> Any:
        """``metric.labels(*labels)``, looked up once: the hot paths count every request."""
        key = (id(metric), labels)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*labels)
        return found

    def agent(self, raw: str | None) -> str:
        return self.agents.value(raw)

    def conversation(self, raw: str | None) -> str:
        return self.conversations.value(raw)


BudgetRows = Callable[[], list[tuple[str, float, float | None]]]


class _BudgetCollector(Collector):
    """Today's spend and the daily budget per policy, read from the gateway when scraped."""

    def __init__(self, rows: BudgetRows) -> None:
        self.rows = rows

    def collect(self) -> Iterator[Metric]:
        spent = GaugeMetricFamily(
            "stoa_gateway_budget_spent_today_usd",
            "Spend of the UTC day as the budget check sees it (per replica share, USD)",
            labels=["policy"],
        )
        limit = GaugeMetricFamily(
            "stoa_gateway_budget_limit_usd", "budget.dailyLimitUSD of the policy (USD)", labels=["policy"]
        )
        for policy, usd, cap in self.rows():
            spent.add_metric([policy], usd)
            if cap is not None:
                limit.add_metric([policy], cap)
        yield spent
        yield limit
