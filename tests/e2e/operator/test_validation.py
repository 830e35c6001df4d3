"""Samples are accepted and invalid manifests rejected by the real API server, with clear messages."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
import yaml
from kubernetes.client.rest import ApiException

from stoa_devenv.cluster import ControlPlane
from tests.e2e.operator.harness import REPO, Cluster, kubectl, wait_for
from tests.e2e.operator.invalid_inputs import BAD_INPUTS, BAD_UPDATES, manifest

PLURALS = {"ModelPolicy": "modelpolicies", "Agent": "agents", "Conversation": "conversations"}


def _sample_docs() -> list[tuple[str, dict[str, Any]]]:
    paths = sorted((REPO / "crds" / "samples").glob("*.yaml")) + sorted(
        (REPO / "examples" / "debate").glob("*.yaml")
    )
    docs = []
    for path in paths:
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") in PLURALS:
                docs.append((f"{path.relative_to(REPO)}:{doc['metadata']['name']}", doc))
    return docs


def _create(cluster: Cluster, body: dict[str, Any], dry_run: bool = True) -> None:
    cluster.custom.create_namespaced_custom_object(
        "stoa.dev",
        "v1alpha1",
        cluster.ns,
        PLURALS[body["kind"]],
        body,
        dry_run="All" if dry_run else None,
        field_validation="Strict",
    )


def _message(exc: ApiException) -> str:
    body = exc.body.decode() if isinstance(exc.body, bytes) else str(exc.body)
    try:
        return str(json.loads(body)["message"])
    except (ValueError, KeyError):
        return body


@pytest.mark.parametrize(("case", "doc"), _sample_docs(), ids=[c for c, _ in _sample_docs()])
def test_samples_accepted_by_api_server(
    crds: ControlPlane, cluster: Cluster, case: str, doc: dict[str, Any]
) -> None:
    _create(cluster, doc)


@pytest.mark.parametrize(("case", "base", "changes", "expected"), BAD_INPUTS, ids=[c[0] for c in BAD_INPUTS])
def test_invalid_manifest_rejected(
    crds: ControlPlane,
    cluster: Cluster,
    *,
    case: str,
    base: dict[str, Any],
    changes: dict[str, Any],
    expected: str,
) -> None:
    body = manifest(base, changes, re.sub(r"[^a-z0-9]+", "-", case.lower()).strip("-")[:50])
    with pytest.raises(ApiException) as excinfo:
        _create(cluster, body)
    assert excinfo.value.status in (400, 422), _message(excinfo.value)
    assert expected in _message(excinfo.value)


@pytest.mark.parametrize(
    ("case", "base", "changes", "expected"), BAD_UPDATES, ids=[c[0] for c in BAD_UPDATES]
)
def test_invalid_update_rejected(
    crds: ControlPlane,
    cluster: Cluster,
    *,
    case: str,
    base: dict[str, Any],
    changes: dict[str, Any],
    expected: str,
) -> None:
    name = re.sub(r"[^a-z0-9]+", "-", case.lower()).strip("-")[:50]
    _create(cluster, manifest(base, {}, name), dry_run=False)
    with pytest.raises(ApiException) as excinfo:
        cluster.custom.patch_namespaced_custom_object(
            "stoa.dev", "v1alpha1", cluster.ns, PLURALS[base["kind"]], name, {"spec": changes}
        )
    assert expected in _message(excinfo.value)


def test_kubectl_get_stoa_category_and_short_names(crds: ControlPlane, cluster: Cluster) -> None:
    for _, doc in [d for d in _sample_docs() if d[0].startswith("crds")]:
        _create(cluster, doc, dry_run=False)
    # kubectl's discovery cache may predate the CRDs for a moment: retry briefly.
    out = wait_for(
        lambda: kubectl(crds, "get", "stoa", "-n", cluster.ns, check=False).stdout, 30, "kubectl get stoa"
    )
    assert "modelpolicy.stoa.dev/" in out
    assert "agent.stoa.dev/" in out
    for short in ("mp", "ag", "conv"):
        result = kubectl(crds, "get", short, "-n", cluster.ns, check=False)
        assert result.returncode == 0, result.stderr
