"""The chart's copies stay in sync with their sources: CRDs (byte for byte) and the operator's RBAC rules.

Copy the CRDs with ``make chart-crds`` (``cp crds/*.yaml charts/stoa/crds/`` for the CRD files).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.unit.chart.helm import CHART, REPO_ROOT, find, render

CRDS = REPO_ROOT / "crds"
OPERATOR_RBAC = REPO_ROOT / "operator" / "rbac"
Rule = tuple[str, str, str]


def _is_crd_file(path: Path) -> bool:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    return bool(docs) and all(d.get("kind") == "CustomResourceDefinition" for d in docs)


def _crd_files(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.glob("*.yaml")) if _is_crd_file(p)}


def test_chart_crds_are_byte_identical_copies_of_crds_dir() -> None:
    source = _crd_files(CRDS)
    copies = {p.name: p.read_bytes() for p in sorted((CHART / "crds").glob("*.y*ml"))}
    hint = "run `make chart-crds` (cp crds/<crd files>.yaml charts/stoa/crds/)"
    assert sorted(copies) == sorted(source), f"chart CRD files differ from crds/: {hint}"
    drifted = sorted(name for name in source if copies[name] != source[name])
    assert not drifted, f"{drifted} drifted from crds/: {hint}"


def test_chart_crds_define_the_stoa_kinds() -> None:
    kinds = set()
    for path in (CHART / "crds").glob("*.yaml"):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                assert doc["spec"]["group"] == "stoa.dev"
                kinds.add(doc["spec"]["names"]["kind"])
    if not _crd_files(CRDS):
        pytest.skip("crds/ has no CustomResourceDefinitions yet (the operator engineer adds them)")
    assert {"Agent", "ModelPolicy", "Conversation"} <= kinds


def _triples(rules: list[dict[str, Any]]) -> set[Rule]:
    return {
        (group, resource, verb)
        for rule in rules
        for group in rule.get("apiGroups", [])
        for resource in rule.get("resources", [])
        for verb in rule.get("verbs", [])
    }


def _operator_roles() -> dict[str, list[dict[str, Any]]]:
    roles: dict[str, list[dict[str, Any]]] = {}
    for path in sorted(OPERATOR_RBAC.glob("*.y*ml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") in {"ClusterRole", "Role"}:
                roles[doc["metadata"]["name"]] = doc.get("rules", [])
    return roles


def test_chart_rbac_matches_operator_rbac() -> None:
    """Role by role (release `stoa` gives the chart's roles the generated names), rule by rule."""
    generated = _operator_roles()
    if not generated:
        pytest.fail(f"{OPERATOR_RBAC.relative_to(REPO_ROOT)}/*.yaml has no Role/ClusterRole")
    objects = [
        o for o in render() if o["metadata"]["labels"].get("app.kubernetes.io/component") == "operator"
    ]
    chart = {r["metadata"]["name"]: r["rules"] for r in find(objects, "ClusterRole") + find(objects, "Role")}
    assert sorted(chart) == sorted(generated)
    for name, rules in generated.items():
        mine, theirs = _triples(chart[name]), _triples(rules)
        assert not mine - theirs, (
            f"{name}: the chart grants more than the operator needs: {sorted(mine - theirs)}"
        )
        assert not theirs - mine, (
            f"{name}: the chart misses rules the operator needs: {sorted(theirs - mine)}"
        )
    bound = {b["roleRef"]["name"] for b in find(objects, "ClusterRoleBinding")}
    assert bound == set(generated)
