"""Spend accounting (pure): request cost and the UTC day budgets reset on."""

from __future__ import annotations

import datetime as dt

from stoa_gateway.policy import Target


def request_cost(target: Target, input_tokens: int, output_tokens: int) -> float:
    return (input_tokens * target.input_cost_per_1k + output_tokens * target.output_cost_per_1k) / 1000.0


def utc_day(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%Y-%m-%d")


def seconds_to_utc_midnight(epoch: float) -> float:
    now = dt.datetime.fromtimestamp(epoch, dt.UTC)
    midnight = (now + dt.timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return (midnight - now).total_seconds()
