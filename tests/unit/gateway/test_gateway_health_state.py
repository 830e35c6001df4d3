"""Health-check thresholds and the routing skip of an unhealthy target (pure)."""

from __future__ import annotations

from stoa_gateway.health_state import HealthState, after_check, check_passed
from stoa_gateway.policy import ModelPolicySpec
from stoa_gateway.retry import Disposition, Failure, FailureKind
from stoa_gateway.routing import RequestFeatures, SkipReason, TargetView, target_skip
from stoa_telemetry.spec import HealthCheck


def test_thresholds_in_a_row_flip_health() -> None:
    cfg = HealthCheck(unhealthy_threshold=2, healthy_threshold=2)
    state = HealthState()
    state = after_check(state, False, cfg)
    assert state.healthy  # one failure is not enough
    state = after_check(state, False, cfg)
    assert not state.healthy
    state = after_check(state, True, cfg)
    assert not state.healthy  # one pass is not enough to return
    state = after_check(state, False, cfg)
    assert state == HealthState(False, 0, 1)
    state = after_check(after_check(state, True, cfg), True, cfg)
    assert state.healthy


def test_what_counts_as_an_answer() -> None:
    assert check_passed(None, None)
    assert check_passed(Failure(FailureKind.STATUS, "status 429", status=429), Disposition.RETRY)
    assert check_passed(Failure(FailureKind.STATUS, "status 400", status=400), Disposition.FATAL)
    assert not check_passed(Failure(FailureKind.STATUS, "status 503", status=503), Disposition.RETRY)
    assert not check_passed(Failure(FailureKind.STATUS, "status 401", status=401), Disposition.NEXT_TARGET)
    assert not check_passed(Failure(FailureKind.TIMEOUT, "timed out"), Disposition.RETRY)


def test_unhealthy_target_is_skipped() -> None:
    spec = ModelPolicySpec.model_validate(
        {"targets": [{"name": "a", "baseURL": "http://x/v1", "model": "m"}]}
    )
    features = RequestFeatures(input_tokens=1, agent=None, headers={})
    skip = target_skip(spec.targets[0], spec, features, TargetView(unhealthy=True), now=0.0)
    assert skip is not None
    assert skip.reason is SkipReason.UNHEALTHY
    assert target_skip(spec.targets[0], spec, features, TargetView(), now=0.0) is None
