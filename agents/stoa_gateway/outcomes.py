"""How a request that gets no answer ends (pure): status, error code, type, message, Retry-After.

The code is also the ``outcome`` label of ``stoa_gateway_requests_total``; ``scope`` names the limit
(``stoa_gateway_rate_limited_total``) and ``event`` the audit record.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from stoa_gateway.retry import Failure
from stoa_gateway.routing import RejectCode, Rejection

# Retry-After when every target was skipped at attempt time for its limits (the plan saw them free).
LIMITED_RETRY_AFTER = 1.0


@dataclass(frozen=True, slots=True)
class Ending:
    status: int
    code: str
    message: str
    retry_after: float | None = None
    scope: str | None = None  # agent | policy | budget | priority: which limit, for metrics
    event: str = "no_target"
    reason: str = ""  # for the audit record

    @property
    def type(self) -> str:
        return {429: "rate_limit_error", 400: "invalid_request_error", 404: "invalid_request_error"}.get(
            self.status, "api_error"
        )


_REJECTIONS: dict[RejectCode, tuple[str | None, str]] = {
    RejectCode.AGENT_RATE_LIMITED: ("agent", "rate_limited"),
    RejectCode.TARGETS_RATE_LIMITED: ("policy", "rate_limited"),
    RejectCode.BUDGET_EXCEEDED: ("budget", "budget_exceeded"),
    RejectCode.NO_TARGET_AVAILABLE: (None, "no_target"),
    RejectCode.UNKNOWN_TARGET: (None, "no_target"),
}

QUEUEABLE = frozenset({RejectCode.AGENT_RATE_LIMITED, RejectCode.TARGETS_RATE_LIMITED})


def rejected(policy: str, rejection: Rejection) -> Ending:
    scope, event = _REJECTIONS[rejection.code]
    return Ending(
        rejection.status,
        str(rejection.code),
        f"ModelPolicy {policy}: {rejection.message}",
        rejection.retry_after,
        scope,
        event,
        rejection.message,
    )


def shed(policy: str, priority: str, why: str, retry_after: float) -> Ending:
    """A call that waited at the limits for as long as its priority may, or was pushed out of the queue."""
    return Ending(
        429,
        "rate_limited",
        f"ModelPolicy {policy}: {priority} call shed at the rate limit ({why})",
        retry_after,
        "priority",
        "rate_limited",
        why,
    )


def all_failed(
    policy: str, failures: Sequence[Failure], passed: Sequence[tuple[str, str, str]], detail: str
) -> Ending:
    """Every planned target failed or was skipped: upstream 429s, our own limits, breakers, or errors."""
    if failures and all(f.status == 429 for f in failures):
        waits = [f.retry_after for f in failures if f.retry_after is not None]
        return Ending(
            429,
            "upstream_rate_limited",
            f"ModelPolicy {policy}: every target is rate limited upstream: {detail}",
            min(waits) if waits else LIMITED_RETRY_AFTER,
            event="all_targets_failed",
            reason=detail,
        )
    if failures:
        return Ending(
            502,
            "upstream_error",
            f"ModelPolicy {policy}: all attempts failed: {detail}",
            event="all_targets_failed",
            reason=detail,
        )
    if any(reason == "rate_limited" for _, reason, _ in passed):
        return Ending(
            429,
            "rate_limited",
            f"ModelPolicy {policy}: all targets are rate limited: {detail}",
            LIMITED_RETRY_AFTER,
            event="all_targets_failed",
            reason=detail,
        )
    return Ending(
        503,
        "no_target_available",
        f"ModelPolicy {policy}: no target available: {detail}",
        event="all_targets_failed",
        reason=detail,
    )
