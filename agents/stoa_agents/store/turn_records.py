"""Counting an agent's turn records (``stoa.processed_messages``) per time window, for its SLOs.

One query per agent and call: every window is a ``FILTER`` over the rows of the longest one, read through
the ``(agent, processed_at) INCLUDE (outcome, turn_ms)`` index.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import asyncpg

from stoa_telemetry.slo import GOOD_TURN_OUTCOMES, RECORDED_BAD_TURN_OUTCOMES


@dataclass(frozen=True)
class WindowCounts:
    stored: int  # turns stored (good for availability)
    failed: int  # turns that failed their conversation (bad for availability)
    timed: int  # stored turns with a recorded latency (the latency SLI's events)
    slow: int  # of those, slower than the threshold


async def turn_counts(
    db: asyncpg.Pool, agent: str, windows: Mapping[str, int], latency_threshold_ms: int | None
) -> dict[str, WindowCounts]:
    """``windows``: name -> seconds. ``agent`` is the agent key (``identity.agent_key``)."""
    names = list(windows)
    columns = []
    # $1 agent, $2 good outcomes, $3 bad outcomes, $4 latency threshold, $5.. window seconds.
    for i, _ in enumerate(names):
        since = f"processed_at > now() - make_interval(secs => ${5 + i}::float8)"
        columns += [
            f"count(*) FILTER (WHERE {since} AND outcome = ANY($2::text[])) AS s{i}",
            f"count(*) FILTER (WHERE {since} AND outcome = ANY($3::text[])) AS f{i}",
            f"count(*) FILTER (WHERE {since} AND outcome = ANY($2::text[]) AND turn_ms IS NOT NULL) AS t{i}",
            f"count(*) FILTER (WHERE {since} AND outcome = ANY($2::text[]) AND turn_ms > $4::int) AS l{i}",
        ]
    longest = max(windows.values())
    sql = (
        f"SELECT {', '.join(columns)} FROM stoa.processed_messages"  # noqa: S608 (columns built above)
        f" WHERE agent = $1 AND processed_at > now() - make_interval(secs => {float(longest)}::float8)"
    )
    row = await db.fetchrow(
        sql,
        agent,
        list(GOOD_TURN_OUTCOMES),
        list(RECORDED_BAD_TURN_OUTCOMES),
        latency_threshold_ms if latency_threshold_ms is not None else 2**31 - 1,
        *[float(windows[n]) for n in names],
    )
    assert row is not None
    return {
        name: WindowCounts(int(row[f"s{i}"]), int(row[f"f{i}"]), int(row[f"t{i}"]), int(row[f"l{i}"]))
        for i, name in enumerate(names)
    }
