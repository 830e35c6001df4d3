"""Audit log: one JSON object per line for every decision that changed a request's route."""

from __future__ import annotations

import datetime as dt
import json
import sys
import time
from typing import IO, Any


class AuditLog:
    """Writes to ``path`` (appending), to stdout for None or ``-``; ``off`` disables it."""

    def __init__(self, path: str | None) -> None:
        self._own = False
        self._out: IO[str] | None
        if path == "off":
            self._out = None
        elif path is None or path == "-":
            self._out = sys.stdout
        else:
            self._out = open(path, "a", encoding="utf-8", buffering=1)  # noqa: SIM115 - closed in close()
            self._own = True

    def emit(
        self, event: str, *, policy: str, target: str | None, reason: str, trace_id: str | None, **extra: Any
    ) -> None:
        if self._out is None:
            return
        record: dict[str, Any] = {
            "ts": dt.datetime.fromtimestamp(time.time(), dt.UTC).isoformat(timespec="milliseconds"),
            "event": event,
            "policy": policy,
            "target": target,
            "reason": reason,
            "traceId": trace_id,
        }
        record.update({k: v for k, v in extra.items() if v is not None})
        self._out.write(json.dumps(record, separators=(",", ":")) + "\n")
        if not self._own:
            self._out.flush()

    def close(self) -> None:
        if self._own and self._out is not None:
            self._out.close()
        self._out = None
