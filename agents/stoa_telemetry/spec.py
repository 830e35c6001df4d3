"""Service level objectives, synthetic probes and health checks in Agent and ModelPolicy specs (pure).

A leaf module: ``stoa_api.agent`` and ``stoa_gateway.policy`` both import it (the CRD schemas are
generated from those), and ``stoa_telemetry.rules`` builds Prometheus rules from the same types.


An objective is a percentage of good events over a rolling ``window`` (``30d`` = 30 days). Latency
objectives count an event as good when it took at most ``thresholdSeconds``; the threshold must be one
of ``LATENCY_BUCKETS`` (the histogram bucket boundaries Stoa exports), so that Prometheus can compute the
same SLI the operator computes from PostgreSQL.
"""

from __future__ import annotations

from pydantic import Field, field_validator

from stoa_settings.crdmodel import CrdModel

# Bucket boundaries (seconds) of the turn, request and time-to-first-token histograms.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
WINDOW_PATTERN = r"^([1-9]|[1-8][0-9]|90)d$"  # 1d .. 90d


class Spec(CrdModel):
    """camelCase aliases, unknown fields rejected: the CRD spec conventions."""


class Objective(Spec):
    objective: float = Field(gt=50, lt=100, description="percent of good events, e.g. 99.9")


class LatencyObjective(Objective):
    threshold_seconds: float = Field(
        gt=0, description=f"one of {', '.join(f'{b:g}' for b in LATENCY_BUCKETS)}"
    )

    @field_validator("threshold_seconds")
    @classmethod
    def _bucket(cls, value: float) -> float:
        if not any(abs(value - b) < 1e-9 for b in LATENCY_BUCKETS):
            allowed = ", ".join(f"{b:g}" for b in LATENCY_BUCKETS)
            raise ValueError(f"thresholdSeconds must be a histogram bucket boundary: one of {allowed}")
        return value


class AgentSLO(Spec):
    """Per-Agent objectives over its turn records: availability (a turn stored, not failed) and latency
    (delivery of the turn message to the commit of the turn)."""

    window: str = Field(default="30d", pattern=WINDOW_PATTERN)
    """Rolling window of the objectives: 1d to 90d."""
    availability: Objective | None = None
    """Percent of turns stored rather than failed."""
    latency: LatencyObjective | None = None
    """Percent of turns committed within thresholdSeconds of their delivery."""


class PolicySLO(Spec):
    """Per-ModelPolicy objectives over the gateway's requests: availability, latency of successful
    requests, and time to first token of streams."""

    window: str = Field(default="30d", pattern=WINDOW_PATTERN)
    """Rolling window of the objectives: 1d to 90d."""
    availability: Objective | None = None
    """Percent of requests answered successfully."""
    latency: LatencyObjective | None = None
    """Percent of successful requests answered within thresholdSeconds."""
    time_to_first_token: LatencyObjective | None = None
    """Percent of streams whose first token came within thresholdSeconds."""


class Probe(Spec):
    """A synthetic one-turn conversation run on a schedule; never counted in totals or transcripts."""

    enabled: bool = True
    """Run the probe."""
    interval_seconds: int = Field(default=300, ge=10, le=86400)
    """Seconds between probes."""
    timeout_seconds: int = Field(default=120, ge=5, le=3600)
    """A probe not finished by then counts as TimedOut."""
    topic: str = Field(
        default="Synthetic probe: answer with one short sentence.", min_length=1, max_length=500
    )
    """The probe conversation's topic."""


class HealthCheck(Spec):
    """Active health checks of every target of a ModelPolicy: a real one-token completion per target on a
    schedule, so a dead target is skipped before a user request hits it."""

    enabled: bool = True
    """Run the checks."""
    interval_seconds: float = Field(default=30.0, ge=1, le=3600)
    """Seconds between checks of each target."""
    timeout_seconds: float = Field(default=10.0, gt=0, le=300)
    """A check not answered by then fails."""
    unhealthy_threshold: int = Field(default=2, ge=1, le=100, description="failed checks in a row to skip")
    healthy_threshold: int = Field(default=1, ge=1, le=100, description="passed checks in a row to return")
    prompt: str = Field(default="ping", min_length=1, max_length=200)
    """The one-message prompt sent (max 1 output token)."""
