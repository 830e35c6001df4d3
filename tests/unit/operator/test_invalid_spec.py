"""A spec the CRD admits but the models reject (e.g. after a CRD/model skew) is reported, not retried."""

from __future__ import annotations

from typing import Any

import pytest

from stoa_api.agent import AgentSpec
from stoa_operator.errors import InvalidSpecError
from stoa_operator.reconcile.context import Context, validated_spec
from stoa_operator.settings import OperatorSettings
from tests.unit.operator.fakes import FakeRuntime


class RecordingKube:
    """Only what ``finish`` calls: status patches and events, recorded."""

    def __init__(self) -> None:
        self.statuses: list[dict[str, Any]] = []
        self.events: list[tuple[str, str, str]] = []

    def apply(self, manifest: dict[str, Any]) -> dict[str, Any]:
        raise AssertionError("an invalid spec must not apply children")

    def get(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        return None

    def list(
        self, api_version: str, kind: str, namespace: str, label_selector: str | None = None
    ) -> list[dict[str, Any]]:
        return []

    def patch_status(
        self, api_version: str, kind: str, namespace: str, name: str, status: dict[str, Any]
    ) -> dict[str, Any]:
        self.statuses.append(status)
        return status

    def event(self, involved: dict[str, Any], type_: str, reason: str, message: str, now: str) -> None:
        self.events.append((type_, reason, message))

    def delete(self, api_version: str, kind: str, namespace: str, name: str) -> bool:
        raise AssertionError("an invalid spec must not delete children")

    def api_available(self, api_version: str, plural: str) -> bool:
        return False


def test_invalid_spec_sets_degraded_and_raises_a_permanent_error() -> None:
    kube = RecordingKube()
    ctx = Context(
        kube=kube, runtime=FakeRuntime(), settings=OperatorSettings(), clock=lambda: "2026-01-01T00:00:00Z"
    )
    body = {
        "apiVersion": "stoa.dev/v1alpha1",
        "kind": "Agent",
        "metadata": {"name": "broken", "namespace": "team", "generation": 3},
        "spec": {"role": "pro", "replicas": 99},
    }
    with pytest.raises(InvalidSpecError, match=r"Agent team/broken: invalid spec"):
        validated_spec(ctx, body, AgentSpec)
    [status] = kube.statuses
    assert status["observedGeneration"] == 3
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["Degraded"]["status"] == "True"
    assert conditions["Degraded"]["reason"] == "InvalidSpec"
    assert conditions["Ready"]["status"] == "False"
    assert "invalid spec" in conditions["Ready"]["message"]
    assert any(reason == "InvalidSpec" for _, reason, _ in kube.events)
