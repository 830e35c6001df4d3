"""Reading a gateway replica's ``GET /v1/stoa/status`` (per-target circuit state, errors, failovers)."""

from __future__ import annotations

import json
import logging
import urllib.request
from typing import Any

log = logging.getLogger(__name__)


def fetch_gateway_status(url: str, timeout: float) -> dict[str, Any] | None:
    """The status JSON, or None when the replica does not answer (status then says ``unknown``)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - http URL we built
            data = json.loads(response.read())
    except (OSError, ValueError) as exc:
        log.debug("Gateway status unavailable url=%s error=%s", url, exc)
        return None
    return data if isinstance(data, dict) else None
