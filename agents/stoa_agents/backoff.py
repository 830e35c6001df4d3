"""Retry timing for model calls (pure)."""

from __future__ import annotations

RETRY_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504})


def is_retryable_status(status: int) -> bool:
    return status in RETRY_STATUSES


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header given in seconds; HTTP dates are ignored (None)."""
    if not value:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return seconds if seconds >= 0 else None


def next_delay(attempt: int, retry_after: float | None, base: float, cap: float) -> float:
    """Delay before retry number ``attempt`` (1-based): Retry-After when given (capped), else exponential."""
    if retry_after is not None:
        return min(retry_after, cap)
    return float(min(cap, base * (2 ** max(0, attempt - 1))))
