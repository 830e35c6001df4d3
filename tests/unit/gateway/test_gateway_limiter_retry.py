"""Token buckets, backoff, failure classification and Retry-After parsing (pure)."""

from __future__ import annotations

import email.utils

import pytest

from stoa_gateway.backoff import next_delay, parse_retry_after
from stoa_gateway.limiter import Bucket, bucket_charge, bucket_take, bucket_wait, full_bucket, refill
from stoa_gateway.policy import RetryPolicy
from stoa_gateway.retry import Disposition, Failure, FailureKind, classify_failure


def test_bucket_take_refill_and_wait() -> None:
    bucket = full_bucket(60, now=0)  # 60 per minute: 1 per second
    ok, bucket, _ = bucket_take(bucket, 60, 60, now=0)
    assert ok
    assert bucket.level == 0
    ok, bucket, wait = bucket_take(bucket, 60, 2, now=0.5)
    assert not ok
    assert wait == pytest.approx(1.5)
    assert refill(bucket, 60, now=100).level == 60  # never above capacity
    assert bucket_wait(bucket, 60, 2, now=2.0) == 0


def test_request_larger_than_capacity_passes_only_on_a_full_bucket() -> None:
    bucket = full_bucket(100, now=0)
    ok, drained, _ = bucket_take(bucket, 100, 250, now=0)
    assert ok
    assert drained.level == -150
    assert bucket_wait(drained, 100, 250, now=0) == pytest.approx(150)  # debt repaid, then full


def test_charge_corrects_with_real_usage() -> None:
    bucket = Bucket(level=10, updated=0)
    assert bucket_charge(bucket, 100, 30, now=0).level == -20
    assert bucket_charge(bucket, 100, -200, now=0).level == 100  # refunds cap at capacity


@pytest.mark.parametrize(
    ("retry_number", "rand", "expected"),
    [
        (0, 0.5, 0.0),
        (1, 0.0, 0.05),  # base 0.1, jitter 0.5: between 0.05 and 0.1
        (1, 1.0, 0.1),
        (2, 0.0, 0.1),
        (3, 1.0, 0.4),
        (10, 1.0, 5.0),  # capped
        (100, 1.0, 5.0),
    ],
)
def test_next_delay(retry_number: int, rand: float, expected: float) -> None:
    cfg = RetryPolicy()
    delay = next_delay(
        retry_number, base=cfg.base_backoff_seconds, cap=cfg.max_backoff_seconds, jitter=cfg.jitter, rand=rand
    )
    assert delay == pytest.approx(expected)


CFG = RetryPolicy()


@pytest.mark.parametrize(
    ("failure", "disposition"),
    [
        (Failure(FailureKind.TIMEOUT, "t"), Disposition.RETRY),
        (Failure(FailureKind.CONNECTION, "c"), Disposition.RETRY),
        (Failure(FailureKind.INVALID_RESPONSE, "i"), Disposition.NEXT_TARGET),
        (Failure(FailureKind.STATUS, "s", status=500), Disposition.RETRY),
        (Failure(FailureKind.STATUS, "s", status=429, retry_after=2), Disposition.RETRY),
        (Failure(FailureKind.STATUS, "s", status=429, retry_after=60), Disposition.NEXT_TARGET),
        (Failure(FailureKind.STATUS, "s", status=401), Disposition.NEXT_TARGET),
        (Failure(FailureKind.STATUS, "s", status=501), Disposition.NEXT_TARGET),
        (Failure(FailureKind.STATUS, "s", status=400), Disposition.FATAL),
        (Failure(FailureKind.STATUS, "s", status=422), Disposition.FATAL),
    ],
)
def test_classify_failure(failure: Failure, disposition: Disposition) -> None:
    assert classify_failure(failure, CFG) is disposition


def test_classification_follows_the_policy() -> None:
    cfg = RetryPolicy(retry_on_timeout=False, retry_on_statuses=[503], failover_on_statuses=[])
    assert classify_failure(Failure(FailureKind.TIMEOUT, "t"), cfg) is Disposition.NEXT_TARGET
    assert classify_failure(Failure(FailureKind.STATUS, "s", status=500), cfg) is Disposition.NEXT_TARGET
    assert classify_failure(Failure(FailureKind.STATUS, "s", status=403), cfg) is Disposition.FATAL


@pytest.mark.parametrize(
    ("failure", "reason"),
    [
        (Failure(FailureKind.STATUS, "", status=503), "status_5xx"),
        (Failure(FailureKind.STATUS, "", status=429), "status_429"),
        (Failure(FailureKind.STATUS, "", status=403), "status_4xx"),
        (Failure(FailureKind.TIMEOUT, ""), "timeout"),
        (Failure(FailureKind.CONNECTION, ""), "connection_error"),
    ],
)
def test_failure_reason_labels_are_bounded(failure: Failure, reason: str) -> None:
    assert failure.reason() == reason


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        ("3", 3.0),
        (" 1.5 ", 1.5),
        ("-4", 0.0),
        ("soon", None),
        ("nan", None),
        (email.utils.formatdate(1030, usegmt=True), 30.0),
        (email.utils.formatdate(900, usegmt=True), 0.0),
    ],
)
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value, now_epoch=1000) == expected
