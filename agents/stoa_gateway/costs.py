"""Spend accounting (pure): a call's tokens and cost, the cost header, the UTC day budgets reset on."""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from stoa_gateway.policy import Target
from stoa_gateway.tokens import CHARS_PER_TOKEN

COST_HEADER = "X-Stoa-Cost-USD"


def request_cost(target: Target, input_tokens: int, output_tokens: int) -> float:
    return (input_tokens * target.input_cost_per_1k + output_tokens * target.output_cost_per_1k) / 1000.0


@dataclass(frozen=True, slots=True)
class Usage:
    input_tokens: int
    output_tokens: int
    cost_usd: float
    estimated: bool  # the provider sent no usage: tokens estimated at ~4 characters per token

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def body(self, upstream: Mapping[str, Any] | None) -> dict[str, Any]:
        """The ``usage`` object the client gets: the provider's, plus ``cost`` (USD, as OpenRouter sends)."""
        out: dict[str, Any] = (
            dict(upstream)
            if upstream
            else {
                "prompt_tokens": self.input_tokens,
                "completion_tokens": self.output_tokens,
                "total_tokens": self.total_tokens,
                "estimated": True,
            }
        )
        out["cost"] = self.cost_usd
        return out


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def measure_usage(target: Target, usage: Any, estimated_input: int, output_chars: int) -> Usage:
    """Tokens from the provider's ``usage`` (estimates for what it left out) and their cost at ``target``."""
    usage = usage if isinstance(usage, Mapping) else {}
    prompt, completion = _count(usage.get("prompt_tokens")), _count(usage.get("completion_tokens"))
    in_tok = prompt if prompt else estimated_input
    out_tok = completion if completion is not None else -(-output_chars // CHARS_PER_TOKEN)
    return Usage(in_tok, out_tok, request_cost(target, in_tok, out_tok), estimated=not prompt)


def cost_header(cost_usd: float) -> str:
    """``X-Stoa-Cost-USD``: the same float as ``usage.cost``, written as a plain decimal (no exponent)."""
    return format(Decimal(repr(cost_usd)).normalize(), "f")


def utc_day(epoch: float) -> str:
    return _day_name(int(epoch // 86400))


@functools.lru_cache(maxsize=4)
def _day_name(day: int) -> str:  # called on every request: format each UTC day once
    return dt.datetime.fromtimestamp(day * 86400, dt.UTC).strftime("%Y-%m-%d")


def seconds_to_utc_midnight(epoch: float) -> float:
    now = dt.datetime.fromtimestamp(epoch, dt.UTC)
    midnight = (now + dt.timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return (midnight - now).total_seconds()
