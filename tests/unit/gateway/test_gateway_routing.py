"""Route matching, strategies and the attempt plan (pure)."""

from __future__ import annotations

from typing import Any

import pytest

from stoa_gateway.breaker import Breaker, CircuitState
from stoa_gateway.limiter import Bucket, bucket_wait
from stoa_gateway.policy import ModelPolicySpec, RetryPolicy, Strategy
from stoa_gateway.retry import Disposition
from stoa_gateway.routing import (
    AttemptRecord,
    ObservedState,
    RejectCode,
    RequestFeatures,
    SkipReason,
    Step,
    TargetView,
    next_step,
    order_targets,
    plan_attempts,
)


def spec(**extra: Any) -> ModelPolicySpec:
    targets = extra.pop(
        "targets",
        [
            {"name": "a", "baseURL": "http://a/v1", "model": "a", "weight": 1},
            {"name": "b", "baseURL": "http://b/v1", "model": "b", "weight": 3},
            {"name": "c", "baseURL": "http://c/v1", "model": "c", "maxContextTokens": 1000},
        ],
    )
    return ModelPolicySpec.model_validate({"targets": targets, **extra})


ROUTES = [
    {"name": "vip", "match": {"headers": [{"name": "X-Stoa-Tier", "values": ["gold"]}]}, "targets": ["c"]},
    {
        "name": "short",
        "match": {"maxInputTokens": 100, "agents": ["chat"]},
        "targets": ["a"],
        "fallbackTargets": ["b"],
    },
    {"name": "long", "match": {"minInputTokens": 101}, "targets": ["b"]},
]


@pytest.mark.parametrize(
    ("features", "route", "targets"),
    [
        (RequestFeatures(50, agent="chat"), "short", ("a", "b")),
        (RequestFeatures(50, agent="other"), None, ("a", "b", "c")),  # no rule: all, in failover order
        (RequestFeatures(101, agent="chat"), "long", ("b",)),
        (RequestFeatures(5000, headers={"x-stoa-tier": "gold"}), "vip", ()),  # c's context is too small
        (RequestFeatures(50, headers={"x-stoa-tier": "gold"}), "vip", ("c",)),
        (RequestFeatures(50, agent="chat", pinned_target="c"), None, ("c",)),
    ],
)
def test_routes(features: RequestFeatures, route: str | None, targets: tuple[str, ...]) -> None:
    plan = plan_attempts(spec(routes=ROUTES), features, ObservedState(now=0))
    assert plan.route == route
    assert plan.targets == targets


NAMES = ["a", "b", "c"]


@pytest.mark.parametrize(
    ("strategy", "views", "rr", "rand", "expected"),
    [
        (Strategy.FAILOVER, {}, 7, 0.9, ["a", "b", "c"]),
        (Strategy.ROUND_ROBIN, {}, 0, 0, ["a", "b", "c"]),
        (Strategy.ROUND_ROBIN, {}, 4, 0, ["b", "c", "a"]),
        (Strategy.WEIGHTED, {}, 0, 0.0, ["a", "b", "c"]),  # weights 1, 3, 1: [0, .2) -> a
        (Strategy.WEIGHTED, {}, 0, 0.5, ["b", "a", "c"]),  # [.2, .8) -> b
        (Strategy.WEIGHTED, {}, 0, 0.95, ["c", "a", "b"]),
        (
            Strategy.LEAST_BUSY,
            {"a": TargetView(in_flight=3), "b": TargetView(in_flight=1)},
            0,
            0,
            ["c", "b", "a"],
        ),
        (
            Strategy.LOWEST_LATENCY,
            {
                "a": TargetView(ewma_latency=0.5),
                "b": TargetView(ewma_latency=0.2),
                "c": TargetView(ewma_latency=0.9),
            },
            0,
            0,
            ["b", "a", "c"],
        ),
        (
            Strategy.LOWEST_LATENCY,
            {"a": TargetView(ewma_latency=0.5)},
            0,
            0,
            ["b", "c", "a"],
        ),  # unmeasured first
    ],
)
def test_order_targets(
    strategy: Strategy, views: dict[str, TargetView], rr: int, rand: float, expected: list[str]
) -> None:
    by_name = {t.name: t for t in spec().targets}
    assert order_targets(NAMES, strategy, targets=by_name, views=views, rr_counter=rr, rand=rand) == expected


def test_unhealthy_targets_are_skipped_with_reasons() -> None:
    policy = spec(
        targets=[
            {"name": "a", "baseURL": "http://a/v1", "model": "a"},
            {"name": "b", "baseURL": "http://b/v1", "model": "b", "rpm": 10},
            {"name": "c", "baseURL": "http://c/v1", "model": "c"},
            {"name": "d", "baseURL": "http://d/v1", "model": "d"},
        ]
    )
    observed = ObservedState(
        now=100,
        targets={
            "a": TargetView(breaker=Breaker(state=CircuitState.OPEN, opened_at=90)),
            "b": TargetView(limit_wait=bucket_wait(Bucket(level=0.5, updated=100), 10, 1, now=100)),
            "c": TargetView(cooldown_until=110),
        },
    )
    plan = plan_attempts(policy, RequestFeatures(10), observed)
    assert plan.targets == ("d",)
    assert [(s.target, s.reason) for s in plan.skipped] == [
        ("a", SkipReason.CIRCUIT_OPEN),
        ("b", SkipReason.RATE_LIMITED),
        ("c", SkipReason.COOLING_DOWN),
    ]
    assert plan.skipped[1].retry_after == pytest.approx(3.0)  # 0.5 token missing at 10/min


@pytest.mark.parametrize(
    ("views", "code", "status"),
    [
        (
            {"a": TargetView(breaker=Breaker(state=CircuitState.OPEN, opened_at=99))},
            RejectCode.NO_TARGET_AVAILABLE,
            503,
        ),
        ({"a": TargetView(cooldown_until=130)}, RejectCode.TARGETS_RATE_LIMITED, 429),
    ],
)
def test_no_target_left(views: dict[str, TargetView], code: RejectCode, status: int) -> None:
    policy = spec(targets=[{"name": "a", "baseURL": "http://a/v1", "model": "a"}])
    plan = plan_attempts(policy, RequestFeatures(1), ObservedState(now=100, targets=views))
    assert plan.rejection is not None
    assert (plan.rejection.code, plan.rejection.status) == (code, status)


def test_budget_and_agent_limits_reject_before_routing() -> None:
    policy = spec(budget={"dailyLimitUSD": 5}, rateLimit={"perAgent": {"tpm": 100}})
    spent = plan_attempts(
        policy, RequestFeatures(1), ObservedState(now=0, spent_today_usd=5, seconds_to_budget_reset=60)
    )
    assert spent.rejection is not None
    assert (spent.rejection.code, spent.rejection.retry_after) == (RejectCode.BUDGET_EXCEEDED, 60)
    busy = ObservedState(now=0, agent_wait=bucket_wait(Bucket(level=10, updated=0), 100, 40, now=0))
    limited = plan_attempts(policy, RequestFeatures(40, agent="x"), busy)
    assert limited.rejection is not None
    assert limited.rejection.code is RejectCode.AGENT_RATE_LIMITED
    assert limited.rejection.retry_after == pytest.approx(18)  # 30 tokens at 100/min


RETRY = RetryPolicy(attempts=4, base_backoff_seconds=1, max_backoff_seconds=10, jitter=0)
R, N, F = Disposition.RETRY, Disposition.NEXT_TARGET, Disposition.FATAL


@pytest.mark.parametrize(
    ("plan", "history", "expected"),
    [
        (("a", "b"), [], Step("a", 0)),
        (("a", "b"), [AttemptRecord("a", R)], Step("b", 0)),  # failover is immediate
        (("a", "b"), [AttemptRecord("a", R), AttemptRecord("b", R)], Step("a", 1)),  # back to a: backoff
        (("a", "b"), [AttemptRecord("a", R), AttemptRecord("b", N)], Step("a", 1)),
        (("a",), [AttemptRecord("a", R), AttemptRecord("a", R)], Step("a", 2)),
        (("a",), [AttemptRecord("a", R, retry_after=7)], Step("a", 7)),  # Retry-After honoured
        (("a", "b"), [AttemptRecord("a", N), AttemptRecord("b", N)], None),
        (("a", "b"), [AttemptRecord("a", F)], None),
        (("a",), [AttemptRecord("a", R)] * 4, None),  # attempts used up
        (("a", "b"), [AttemptRecord("a", N, attempted=False)], Step("b", 0)),  # skipped at attempt time
    ],
)
def test_next_step(plan: tuple[str, ...], history: list[AttemptRecord], expected: Step | None) -> None:
    assert next_step(plan, history, RETRY, rand=0.0) == expected
