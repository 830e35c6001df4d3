"""Which model-call statuses the runtime retries (pure). Timing: ``stoa_gateway.backoff``."""

from __future__ import annotations

RETRY_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504})


def is_retryable_status(status: int) -> bool:
    return status in RETRY_STATUSES
