"""One source of truth: committed CRDs match the models; samples validate with CRD schema and pydantic."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from stoa_api import parse_manifests
from stoa_gateway.policy import RetryPolicy
from stoa_operator.crdgen import openapi_schema, root_schema, stale_crds, to_json_schema
from stoa_operator.k8s import rbac
from stoa_operator.models.kinds import KINDS as KIND_SPECS
from stoa_operator.models.kinds import Kind

REPO = Path(__file__).resolve().parents[3]
KINDS = ("ModelPolicy", "Agent", "Conversation")


def _samples() -> list[tuple[str, dict[str, Any]]]:
    paths = sorted((REPO / "crds" / "samples").glob("*.yaml")) + sorted(
        (REPO / "examples" / "debate").glob("*.yaml")
    )
    out = []
    for path in paths:
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") in KINDS:
                out.append((f"{path.relative_to(REPO)}:{doc['metadata']['name']}", doc))
    return out


def test_committed_crds_are_current() -> None:
    assert stale_crds() == [], "run `stoa operator crds generate`"


def test_committed_rbac_is_current() -> None:
    assert (REPO / "operator" / "rbac" / "operator.yaml").read_text() == rbac.render_yaml(), (
        "run `stoa operator rbac generate`"
    )


def test_there_are_samples_of_every_kind() -> None:
    assert {doc["kind"] for _, doc in _samples()} == set(KINDS)


@pytest.mark.parametrize(("case", "doc"), _samples(), ids=[c for c, _ in _samples()])
def test_sample_validates_with_crd_schema_and_pydantic(case: str, doc: dict[str, Any]) -> None:
    jsonschema.validate(doc, to_json_schema(openapi_schema(doc["kind"])))
    [manifest] = parse_manifests(yaml.safe_dump(doc), case)
    assert manifest.kind == doc["kind"]


@pytest.mark.parametrize(
    ("kind", "spec"),
    [
        ("Agent", {"role": "r", "persona": "p", "replicas": 6}),
        ("Agent", {"role": "r", "persona": "p", "unknown": 1}),
        ("Conversation", {"topic": "t", "participants": []}),
        ("ModelPolicy", {"targets": [{"name": "a", "baseURL": "ftp://x", "model": "m"}]}),
    ],
)
def test_schema_and_pydantic_reject_the_same_bad_specs(kind: str, spec: dict[str, Any]) -> None:
    doc = {"apiVersion": "stoa.dev/v1alpha1", "kind": kind, "metadata": {"name": "x"}, "spec": spec}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(doc, to_json_schema(openapi_schema(kind)))
    with pytest.raises(ValueError, match="x"):
        parse_manifests(yaml.safe_dump(doc))


def test_defaults_in_the_crd_equal_the_pydantic_defaults() -> None:
    retry = openapi_schema("ModelPolicy")["properties"]["spec"]["properties"]["retry"]
    assert retry["default"] == {}
    assert retry["properties"]["retryOnStatuses"]["default"] == RetryPolicy().retry_on_statuses
    agent = openapi_schema("Agent")["properties"]["spec"]["properties"]
    assert agent["replicas"]["default"] == 2


def test_status_conditions_are_a_map_list() -> None:
    for kind in KINDS:
        conditions = openapi_schema(kind)["properties"]["status"]["properties"]["conditions"]
        assert conditions["x-kubernetes-list-type"] == "map"
        assert conditions["x-kubernetes-list-map-keys"] == ["type"]


def _undescribed(node: dict[str, Any], path: str) -> list[str]:
    missing = []
    for name, sub in (node.get("properties") or {}).items():
        where = f"{path}.{name}"
        if not sub.get("description"):
            missing.append(where)
        missing += _undescribed(sub, where)
        if isinstance(sub.get("items"), dict):
            missing += _undescribed(sub["items"], where + "[]")
        if isinstance(sub.get("additionalProperties"), dict):
            missing += _undescribed(sub["additionalProperties"], where + "{}")
    return missing


@pytest.mark.parametrize("kind", KIND_SPECS, ids=[k.kind for k in KIND_SPECS])
def test_every_field_of_every_crd_has_a_description(kind: Kind) -> None:
    """`kubectl explain <kind>.spec --recursive` is a reference: every spec and status field is described
    (from the pydantic models' field docstrings), in one paragraph with no reST markup."""
    schema = root_schema(kind)["properties"]
    missing = _undescribed(schema["spec"], "spec") + _undescribed(schema["status"], "status")
    assert missing == []
    text = json.dumps(schema)
    assert "``" not in text
    assert "\\n" not in text.replace('"\\n"', "")
