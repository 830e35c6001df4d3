"""Retry decisions (pure): failure classification, backoff delay, ``Retry-After`` parsing."""

from __future__ import annotations

import email.utils
import math
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
        if self.kind is FailureKind.STATUS and self.status is not None:
            if self.status in (429, 408):
                return f"status_{self.status}"
            return f"status_{self.status // 100}xx"
        return str(self.kind)


def classify_failure(failure: Failure, cfg: RetryPolicy) -> Disposition:  # noqa: PLR0911 - a decision table
    if failure.kind is FailureKind.TIMEOUT:
        return Disposition.RETRY if cfg.retry_on_timeout else Disposition.NEXT_TARGET
    if failure.kind is FailureKind.CONNECTION:
        return Disposition.RETRY if cfg.retry_on_connection_error else Disposition.NEXT_TARGET
    if failure.kind is FailureKind.INVALID_RESPONSE:
        return Disposition.NEXT_TARGET
    status = failure.status or 0
    if status in cfg.retry_on_statuses:
        if (
            failure.retry_after is not None
            and cfg.honor_retry_after
            and failure.retry_after > cfg.max_retry_after_seconds
        ):
            return Disposition.NEXT_TARGET
        return Disposition.RETRY
    if status in cfg.failover_on_statuses or status >= 500:
        return Disposition.NEXT_TARGET
    return Disposition.FATAL


def counts_against_breaker(failure: Failure, disposition: Disposition) -> bool:
    """Fatal (request-caused) answers show a healthy provider; every other failure counts."""
    return disposition is not Disposition.FATAL


def next_delay(retry_number: int, cfg: RetryPolicy, rand: float) -> float:
    """Exponential backoff before the ``retry_number``-th retry (1-based) of one target.

    ``base * 2**(n-1)`` capped at ``maxBackoffSeconds``; the ``jitter`` fraction of it is
    randomised with ``rand`` in [0, 1).
    """
    if retry_number < 1:
        return 0.0
    delay = min(cfg.max_backoff_seconds, cfg.base_backoff_seconds * float(2 ** min(retry_number - 1, 30)))
    return delay * (1 - cfg.jitter) + delay * cfg.jitter * rand


def parse_retry_after(value: str | None, now_epoch: float) -> float | None:
    """``Retry-After`` as seconds: delta-seconds or an HTTP date; None when absent or unreadable."""
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - now_epoch
    if math.isnan(seconds):
        return None
    return max(0.0, seconds)
