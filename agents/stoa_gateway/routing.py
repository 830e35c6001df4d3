"""Which targets a request tries, in which order (pure).

``plan_attempts`` turns (policy, request features, observed state) into an ordered plan or a
rejection; ``next_step`` walks the plan after each attempt, applying retries and backoff.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from stoa_gateway.backoff import retry_delay
from stoa_gateway.breaker import Breaker, breaker_would_admit
from stoa_gateway.policy import ModelPolicySpec, RetryPolicy, Route, RouteMatch, Strategy, Target
from stoa_gateway.retry import Disposition


@dataclass(frozen=True, slots=True)
class RequestFeatures:
    input_tokens: int
    agent: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)  # lower-cased names
    pinned_target: str | None = None
    max_output_tokens: int | None = None


@dataclass(frozen=True, slots=True)
class TargetView:
    breaker: Breaker = field(default_factory=Breaker)
    in_flight: int = 0
    ewma_latency: float | None = None
    limit_wait: float = 0.0  # seconds until its rpm/tpm limits can take this request (0: now)
    cooldown_until: float = 0.0
    unhealthy: bool = False  # failed its active health checks


@dataclass(frozen=True, slots=True)
class ObservedState:
    now: float
    targets: Mapping[str, TargetView] = field(default_factory=dict)
    agent_wait: float = 0.0  # seconds until the calling agent's limits can take this request
    spent_today_usd: float = 0.0
    seconds_to_budget_reset: float = 0.0
    rr_counter: int = 0
    rand: float = 0.0


class SkipReason(StrEnum):
    CIRCUIT_OPEN = "circuit_open"
    RATE_LIMITED = "rate_limited"
    COOLING_DOWN = "cooling_down"
    UNHEALTHY = "unhealthy"
    CONTEXT_TOO_SMALL = "context_too_small"


@dataclass(frozen=True, slots=True)
class Skip:
    target: str
    reason: SkipReason
    retry_after: float | None = None


class RejectCode(StrEnum):
    AGENT_RATE_LIMITED = "agent_rate_limited"
    BUDGET_EXCEEDED = "budget_exceeded"
    TARGETS_RATE_LIMITED = "rate_limited"
    NO_TARGET_AVAILABLE = "no_target_available"
    UNKNOWN_TARGET = "unknown_target"


@dataclass(frozen=True, slots=True)
class Rejection:
    code: RejectCode
    status: int
    message: str
    retry_after: float | None = None


@dataclass(frozen=True, slots=True)
class Plan:
    targets: tuple[str, ...] = ()
    route: str | None = None
    skipped: tuple[Skip, ...] = ()
    rejection: Rejection | None = None


def route_matches(match: RouteMatch, features: RequestFeatures) -> bool:
    if match.min_input_tokens is not None and features.input_tokens < match.min_input_tokens:
        return False
    if match.max_input_tokens is not None and features.input_tokens > match.max_input_tokens:
        return False
    if match.agents and features.agent not in match.agents:
        return False
    return all(features.headers.get(h.name.lower()) in h.values for h in match.headers)


def select_route(policy: ModelPolicySpec, features: RequestFeatures) -> Route | None:
    """The first route whose match holds, or None (then all targets, with the policy strategy)."""
    for route in policy.routes:
        if route_matches(route.match, features):
            return route
    return None


def order_targets(  # noqa: PLR0911 - one return per strategy
    names: Sequence[str],
    strategy: Strategy,
    *,
    targets: Mapping[str, Target],
    views: Mapping[str, TargetView],
    rr_counter: int,
    rand: float,
) -> list[str]:
    """Order ``names`` by strategy; ties and the tail after the first pick keep the listed order."""
    names = list(names)
    if not names:
        return names
    if strategy is Strategy.ROUND_ROBIN:
        start = rr_counter % len(names)
        return names[start:] + names[:start]
    if strategy is Strategy.WEIGHTED:
        weights = [targets[n].weight for n in names]
        total = sum(weights)
        if total <= 0:
            return names
        point = rand * total
        pick = len(names) - 1
        for i, w in enumerate(weights):
            if point < w:
                pick = i
                break
            point -= w
        return [names[pick]] + [n for i, n in enumerate(names) if i != pick]
    if strategy is Strategy.LEAST_BUSY:
        return sorted(names, key=lambda n: views.get(n, TargetView()).in_flight)
    if strategy is Strategy.LOWEST_LATENCY:
        # Unknown latency sorts first so that new targets get measured.
        return sorted(names, key=lambda n: views.get(n, TargetView()).ewma_latency or 0.0)
    return names


def target_skip(
    target: Target, policy: ModelPolicySpec, features: RequestFeatures, view: TargetView, now: float
) -> Skip | None:
    """Why ``target`` cannot take this request now, or None."""
    if target.max_context_tokens is not None:
        needed = features.input_tokens + (features.max_output_tokens or 0)
        if needed > target.max_context_tokens:
            return Skip(target.name, SkipReason.CONTEXT_TOO_SMALL)
    if view.unhealthy:
        return Skip(target.name, SkipReason.UNHEALTHY)
    if not breaker_would_admit(view.breaker, policy.circuit_breaker, now):
        return Skip(target.name, SkipReason.CIRCUIT_OPEN)
    if view.cooldown_until > now:
        return Skip(target.name, SkipReason.COOLING_DOWN, view.cooldown_until - now)
    if view.limit_wait > 0:
        return Skip(target.name, SkipReason.RATE_LIMITED, view.limit_wait)
    return None


def plan_attempts(policy: ModelPolicySpec, features: RequestFeatures, observed: ObservedState) -> Plan:
    if policy.budget is not None and observed.spent_today_usd >= policy.budget.daily_limit_usd:
        return Plan(
            rejection=Rejection(
                RejectCode.BUDGET_EXCEEDED,
                429,
                f"daily budget of {policy.budget.daily_limit_usd:g} USD is spent "
                f"({observed.spent_today_usd:.4f} USD today)",
                observed.seconds_to_budget_reset,
            )
        )
    agent_wait = observed.agent_wait
    if agent_wait > 0:
        return Plan(
            rejection=Rejection(
                RejectCode.AGENT_RATE_LIMITED,
                429,
                f"agent {features.agent or '(none)'} is over its rate limit",
                agent_wait,
            )
        )
    by_name = {t.name: t for t in policy.targets}
    route: Route | None = None
    if features.pinned_target is not None:
        if features.pinned_target not in by_name:
            return Plan(
                rejection=Rejection(
                    RejectCode.UNKNOWN_TARGET, 404, f"unknown target {features.pinned_target!r}"
                )
            )
        candidates = [features.pinned_target]
    else:
        route = select_route(policy, features)
        names = route.targets if route else [t.name for t in policy.targets]
        strategy = (route.strategy if route else None) or policy.strategy
        candidates = order_targets(
            names,
            strategy,
            targets=by_name,
            views=observed.targets,
            rr_counter=observed.rr_counter,
            rand=observed.rand,
        )
        if route:
            candidates += [n for n in route.fallback_targets if n not in candidates]
    ordered: list[str] = []
    skipped: list[Skip] = []
    for name in candidates:
        skip = target_skip(
            by_name[name], policy, features, observed.targets.get(name, TargetView()), observed.now
        )
        if skip is None:
            ordered.append(name)
        else:
            skipped.append(skip)
    route_name = route.name if route else None
    if ordered:
        return Plan(tuple(ordered), route_name, tuple(skipped))
    waits = [s.retry_after for s in skipped if s.retry_after is not None]
    detail = "; ".join(f"{s.target}: {s.reason}" for s in skipped)
    if waits:
        return Plan(
            (),
            route_name,
            tuple(skipped),
            Rejection(
                RejectCode.TARGETS_RATE_LIMITED, 429, f"all targets are rate limited ({detail})", min(waits)
            ),
        )
    return Plan(
        (),
        route_name,
        tuple(skipped),
        Rejection(RejectCode.NO_TARGET_AVAILABLE, 503, f"no target available ({detail})"),
    )


@dataclass(frozen=True, slots=True)
class AttemptRecord:
    target: str
    disposition: Disposition
    retry_after: float | None = None
    attempted: bool = True  # False: skipped at attempt time (breaker/limit), not an attempt


@dataclass(frozen=True, slots=True)
class Step:
    target: str
    delay: float


def next_step(
    plan: Sequence[str], history: Sequence[AttemptRecord], cfg: RetryPolicy, rand: float
) -> Step | None:
    """The next attempt after ``history``, or None when done.

    At most ``retry.attempts`` attempts; the plan is walked in order and then again from the top,
    so a one-target plan retries that target. A target that answered NEXT_TARGET or was skipped is
    not tried again. Returning to a tried target waits ``backoff.retry_delay`` (and at least its
    ``Retry-After`` when honoured).
    """
    attempts = sum(1 for r in history if r.attempted)
    if attempts >= cfg.attempts or any(r.disposition is Disposition.FATAL for r in history):
        return None
    excluded = {r.target for r in history if r.disposition is not Disposition.RETRY or not r.attempted}
    candidates = [t for t in plan if t not in excluded]
    if not candidates:
        return None
    last = next((r.target for r in reversed(history) if r.attempted), None)
    if last is None or last not in plan:
        choice = candidates[0]
    else:
        start = list(plan).index(last) + 1
        rotated = list(plan[start:]) + list(plan[:start])
        choice = next(t for t in rotated if t in candidates)
    tried = [r for r in history if r.attempted and r.target == choice]
    if not tried:
        return Step(choice, 0.0)
    delay = retry_delay(
        len(tried),
        tried[-1].retry_after if cfg.honor_retry_after else None,
        base=cfg.base_backoff_seconds,
        cap=cfg.max_backoff_seconds,
        jitter=cfg.jitter,
        rand=rand,
    )
    return Step(choice, delay)
