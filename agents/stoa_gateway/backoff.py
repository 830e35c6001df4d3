"""Retry timing (pure), the one implementation used by the gateway and the runtime's model client.

``next_delay`` is exponential backoff with optional jitter; ``retry_delay`` combines it with a
provider's ``Retry-After`` (wait at least that long); ``parse_retry_after`` reads the header in both
forms RFC 9110 allows, delta-seconds and an HTTP date.
"""

from __future__ import annotations

import email.utils
import math


def next_delay(
    retry_number: int, *, base: float, cap: float, jitter: float = 0.0, rand: float = 0.0
) -> float:
    """Backoff before the ``retry_number``-th retry (1-based): ``base * 2**(n-1)`` capped at ``cap``.

    The ``jitter`` fraction of the delay is randomised with ``rand`` in [0, 1); 0 before the first try.
    """
    if retry_number < 1:
        return 0.0
    delay = min(cap, base * float(2 ** min(retry_number - 1, 30)))
    return delay * (1 - jitter) + delay * jitter * rand


def retry_delay(
    retry_number: int,
    retry_after: float | None,
    *,
    base: float,
    cap: float,
    jitter: float = 0.0,
    rand: float = 0.0,
    retry_after_cap: float | None = None,
) -> float:
    """The backoff, but at least ``retry_after`` (itself capped at ``retry_after_cap`` when given)."""
    delay = next_delay(retry_number, base=base, cap=cap, jitter=jitter, rand=rand)
    if retry_after is None:
        return delay
    wait = retry_after if retry_after_cap is None else min(retry_after, retry_after_cap)
    return max(delay, wait)


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
    if math.isnan(seconds) or math.isinf(seconds):
        return None
    return max(0.0, seconds)
