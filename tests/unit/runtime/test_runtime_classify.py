"""Failure classification and retry timing tables."""

from __future__ import annotations

import pytest

from stoa_agents.backoff import is_retryable_status
from stoa_agents.turns.classify import Action, FailureKind, classify, retry_delay
from stoa_gateway import backoff


@pytest.mark.parametrize(
    ("kind", "elapsed", "action"),
    [
        (FailureKind.MALFORMED, 0, Action.REJECT),
        (FailureKind.UNKNOWN_CONVERSATION, 0, Action.REJECT),
        (FailureKind.MISROUTED, 0, Action.REJECT),
        (FailureKind.TRANSIENT, 5, Action.RETRY),
        (FailureKind.TRANSIENT, 500, Action.EXIT),
        (FailureKind.BROKER_UNAVAILABLE, 0, Action.ABANDON),
        (FailureKind.UNEXPECTED, 0, Action.REQUEUE),
    ],
)
def test_classify(kind: FailureKind, elapsed: float, action: Action) -> None:
    decision = classify(kind, elapsed, 120)
    assert decision.action is action
    assert decision.reason


def test_every_kind_is_classified() -> None:
    for kind in FailureKind:
        assert classify(kind, 0, 1).action in Action


def test_retry_delay_grows_and_caps() -> None:
    assert [retry_delay(n, 0.2, 1.0) for n in (1, 2, 3, 4)] == [0.2, 0.4, 0.8, 1.0]


@pytest.mark.parametrize(
    ("attempt", "retry_after", "delay"),
    [(1, None, 0.5), (2, None, 1.0), (5, None, 4.0), (1, 2.0, 2.0), (1, 99, 4.0)],
)
def test_next_delay(attempt: int, retry_after: float | None, delay: float) -> None:
    assert backoff.retry_delay(attempt, retry_after, base=0.5, cap=4.0, retry_after_cap=4.0) == delay


def test_retry_after_and_statuses() -> None:
    # The model client reads Retry-After with the gateway's parser: HTTP dates count too (they were
    # ignored before, so a provider asking to wait until a date was retried at once).
    assert backoff.parse_retry_after("3", now_epoch=0) == 3.0
    assert backoff.parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now_epoch=1445412470) == 10.0
    assert backoff.parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now_epoch=1445413000) == 0.0
    assert backoff.parse_retry_after(None, now_epoch=0) is None
    assert is_retryable_status(429)
    assert is_retryable_status(503)
    assert not is_retryable_status(400)
    assert not is_retryable_status(401)
