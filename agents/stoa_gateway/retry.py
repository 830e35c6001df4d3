"""Retry decisions (pure): failure classification (timing lives in ``stoa_gateway.backoff``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from stoa_gateway.policy import RetryPolicy


class FailureKind(StrEnum):
    STATUS = "status"
    TIMEOUT = "timeout"
    CONNECTION = "connection_error"
    INVALID_RESPONSE = "invalid_response"


class Disposition(StrEnum):
    RETRY = "retry"  # this target may be tried again, later in the plan
    NEXT_TARGET = "next_target"  # do not try this target again for this request
    FATAL = "fatal"  # the request itself is at fault: return the upstream answer as is


@dataclass(frozen=True, slots=True)
class Failure:
    kind: FailureKind
    message: str
    status: int | None = None
    retry_after: float | None = None
    body: bytes = field(default=b"", compare=False, repr=False)  # upstream error body, for pass-through

    def reason(self) -> str:
        """A bounded label: ``timeout``, ``connection_error``, ``status_429``, ``status_5xx`` ..."""
        if self.status is not None:
            if self.status in (429, 408):
                return f"status_{self.status}"
            return f"status_{self.status // 100}xx"
        return str(self.kind)


def classify_failure(failure: Failure, cfg: RetryPolicy) -> Disposition:
    """RETRY, NEXT_TARGET or FATAL for one failed attempt, as the policy says."""
    if failure.status is None:  # no answer: timeout, connection error, unreadable response
        retry = {
            FailureKind.TIMEOUT: cfg.retry_on_timeout,
            FailureKind.CONNECTION: cfg.retry_on_connection_error,
        }
        return Disposition.RETRY if retry.get(failure.kind, False) else Disposition.NEXT_TARGET
    if failure.status in cfg.retry_on_statuses:
        too_long = failure.retry_after is not None and failure.retry_after > cfg.max_retry_after_seconds
        return Disposition.NEXT_TARGET if too_long and cfg.honor_retry_after else Disposition.RETRY
    if failure.status in cfg.failover_on_statuses or failure.status >= 500:
        return Disposition.NEXT_TARGET
    return Disposition.FATAL
