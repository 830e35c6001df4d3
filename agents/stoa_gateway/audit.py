"""Audit log: one JSON object per line for every decision that changed a request's route.

The last ``keep`` records also stay in memory, numbered per process (``seq``), for ``GET /v1/stoa/audit``:
the API (``stoa api``) reads the failovers of a conversation's calls from there.
"""

from __future__ import annotations

import collections
import datetime as dt
import json
import secrets
import sys
import time
from typing import IO, Any

DEFAULT_KEEP = 4096


class AuditLog:
    """Writes to ``path`` (appending), to stdout for None or ``-``; ``off`` disables the output (records
    are still kept in memory)."""

    def __init__(self, path: str | None, keep: int = DEFAULT_KEEP) -> None:
        self._own = False
        self._out: IO[str] | None
        if path == "off":
            self._out = None
        elif path is None or path == "-":
            self._out = sys.stdout
        else:
            self._out = open(path, "a", encoding="utf-8", buffering=1)  # noqa: SIM115 - closed in close()
            self._own = True
        # A new id per process: a restarted replica numbers its records from 1 again.
        self.instance = secrets.token_hex(6)
        self._seq = 0
        self._recent: collections.deque[dict[str, Any]] = collections.deque(maxlen=keep)

    def emit(
        self, event: str, *, policy: str, target: str | None, reason: str, trace_id: str | None, **extra: Any
    ) -> None:
        self._seq += 1
        record: dict[str, Any] = {
            "ts": dt.datetime.fromtimestamp(time.time(), dt.UTC).isoformat(timespec="milliseconds"),
            "seq": self._seq,
            "event": event,
            "policy": policy,
            "target": target,
            "reason": reason,
            "traceId": trace_id,
        }
        record.update({k: v for k, v in extra.items() if v is not None})
        self._recent.append(record)
        if self._out is None:
            return
        self._out.write(json.dumps(record, separators=(",", ":")) + "\n")
        if not self._own:
            self._out.flush()

    def recent(self, after: int = 0, limit: int = 500) -> dict[str, Any]:
        """Records with ``seq > after`` (oldest first, at most ``limit``) and what this replica still holds.

        ``oldest``: the first seq still in memory; a reader whose ``after`` is below ``oldest - 1`` missed
        records (the buffer wrapped). ``last``: the newest seq written.
        """
        records = [r for r in self._recent if r["seq"] > after][:limit]
        oldest = self._recent[0]["seq"] if self._recent else self._seq + 1
        return {"instance": self.instance, "oldest": oldest, "last": self._seq, "records": records}

    def close(self) -> None:
        if self._own and self._out is not None:
            self._out.close()
        self._out = None
