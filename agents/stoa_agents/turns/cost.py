"""The cost of one turn (pure): exactly what the endpoint reported, else the configured price, else 0
marked unpriced. A turn never carries a guessed price."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class CostSource(StrEnum):
    REPORTED = "reported"  # usage.cost of the answer: the gateway's price of the target that served it
    POLICY = "policy"  # no reported cost: tokens x the configured price (STOA_MODEL_*_COST_PER_1K)
    UNPRICED = "unpriced"  # neither: stored as 0 (no gateway and no price configured for this model)


@dataclass(frozen=True)
class TurnCost:
    usd: float
    source: CostSource


def turn_cost(
    reported: float | None,
    tokens_in: int,
    tokens_out: int,
    input_per_1k: float | None,
    output_per_1k: float | None,
) -> TurnCost:
    if reported is not None:
        return TurnCost(reported, CostSource.REPORTED)
    if input_per_1k is None and output_per_1k is None:
        return TurnCost(0.0, CostSource.UNPRICED)
    usd = (tokens_in * (input_per_1k or 0.0) + tokens_out * (output_per_1k or 0.0)) / 1000
    return TurnCost(usd, CostSource.POLICY)
