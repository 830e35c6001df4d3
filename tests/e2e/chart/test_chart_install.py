"""charts/stoa against the real API server: every rendered manifest passes server-side validation, then
``helm install`` creates the operator and its least-privilege RBAC, and ``helm uninstall`` keeps the CRDs."""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from stoa_devenv.cluster import ControlPlane
from stoa_devenv.tools import helm_binary, kubectl_binary
from tests.e2e.kube import Kube

CHART = Path(__file__).resolve().parents[3] / "charts" / "stoa"
CRD_NAMES = {"agents.stoa.dev", "modelpolicies.stoa.dev", "conversations.stoa.dev"}


def _run(tool: Path, control_plane: ControlPlane, *args: str, stdin: str | None = None) -> str:
    proc = subprocess.run(
        [str(tool), "--kubeconfig", str(control_plane.kubeconfig), *args],
        input=stdin,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert proc.returncode == 0, f"{tool.name} {' '.join(args)}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def kubectl(control_plane: ControlPlane, *args: str, stdin: str | None = None) -> str:
    return _run(kubectl_binary(), control_plane, *args, stdin=stdin)


def helm(control_plane: ControlPlane, *args: str) -> str:
    return _run(helm_binary(), control_plane, *args)


@pytest.fixture(scope="module")
def crds(control_plane: ControlPlane) -> set[str]:
    # --force-conflicts: the same files may have been created by `helm install` (another field manager).
    kubectl(control_plane, "apply", "--server-side", "--force-conflicts", "-f", str(CHART / "crds"))
    kubectl(
        control_plane,
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        *(f"crd/{n}" for n in CRD_NAMES),
    )
    return CRD_NAMES


@pytest.fixture(scope="module")
def namespace(control_plane: ControlPlane) -> Iterator[str]:
    name = f"stoa-{uuid.uuid4().hex[:6]}"
    kubectl(control_plane, "create", "namespace", name)
    yield name
    kubectl(control_plane, "delete", "namespace", name, "--wait=false")


def test_helm_installs_crds_from_the_chart_and_keeps_them(control_plane: ControlPlane) -> None:
    """A fresh install with the chart's crds/ (Helm's semantics: installed first, never deleted)."""
    release_ns = f"stoa-crds-{uuid.uuid4().hex[:4]}"
    kube = Kube.from_kubeconfig(control_plane.kubeconfig)
    crd_path = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/"
    # Runs first in this module; other e2e tests of the session may have applied crds/ already, in which
    # case Helm leaves the existing CRDs alone (that is its crds/ semantics too).
    absent = {n for n in CRD_NAMES if kube.get_or_none(crd_path + n) is None}
    helm(control_plane, "install", "stoa-crds", str(CHART), "--namespace", release_ns, "--create-namespace")
    for name in CRD_NAMES:
        crd = kube.get(crd_path + name)
        assert crd["spec"]["group"] == "stoa.dev"
        if name in absent:
            assert crd["metadata"]["labels"]["app.kubernetes.io/part-of"] == "stoa"
    # --no-hooks: no node runs the drain hook's Job here (tests/e2e/node/test_lifecycle_node.py runs it).
    helm(control_plane, "uninstall", "stoa-crds", "--namespace", release_ns, "--wait", "--no-hooks")
    time.sleep(0.5)
    for name in CRD_NAMES:
        assert kube.get_or_none(crd_path + name)
    kubectl(control_plane, "delete", "namespace", release_ns, "--wait=false")


@pytest.mark.parametrize("values", [[], ["bundled.enabled=true"]], ids=["default", "bundled"])
def test_every_rendered_manifest_passes_server_side_dry_run(
    control_plane: ControlPlane, crds: set[str], namespace: str, values: list[str]
) -> None:
    sets = [arg for value in values for arg in ("--set", value)]
    rendered = helm(control_plane, "template", "stoa", str(CHART), "--namespace", namespace, *sets)
    out = kubectl(control_plane, "apply", "--dry-run=server", "-o", "name", "-f", "-", stdin=rendered)
    applied = set(out.split())
    expected = {
        "deployment.apps/stoa-operator",
        "serviceaccount/stoa-operator",
        "service/stoa-operator-metrics",
    }
    expected |= {"clusterrole.rbac.authorization.k8s.io/stoa-operator"}
    expected |= {"clusterrolebinding.rbac.authorization.k8s.io/stoa-operator"}
    expected |= {"clusterrole.rbac.authorization.k8s.io/stoa-operator-discovery"}
    if values:
        expected |= {
            "deployment.apps/stoa-rabbitmq",
            "deployment.apps/stoa-postgres",
            "secret/stoa-connections",
            "deployment.apps/stoa-model",
            "service/stoa-model",
        }
    assert expected <= applied, out


def test_install_creates_operator_and_rbac_and_uninstall_keeps_crds(
    control_plane: ControlPlane, crds: set[str]
) -> None:
    release_ns = f"stoa-system-{uuid.uuid4().hex[:4]}"
    out = helm(
        control_plane,
        "install",
        "stoa",
        str(CHART),
        "--namespace",
        release_ns,
        "--create-namespace",
        "--set",
        "image.tag=e2e",
        "--skip-crds",  # installed above; the chart's crds/ already went through the API server there
    )
    assert "kubectl apply -f examples/debate/" in out  # NOTES
    kube = Kube.from_kubeconfig(control_plane.kubeconfig)
    deployment = kube.get(f"/apis/apps/v1/namespaces/{release_ns}/deployments/stoa-operator")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "ghcr.io/stoa-dev/stoa:e2e"
    assert kube.get(f"/api/v1/namespaces/{release_ns}/serviceaccounts/stoa-operator")
    role = kube.get("/apis/rbac.authorization.k8s.io/v1/clusterroles/stoa-operator")
    assert role["rules"]
    # The operator's identity may do what it needs and nothing more.
    operator = f"system:serviceaccount:{release_ns}:stoa-operator"
    for allowed in (
        "patch agents.stoa.dev/status",
        "list pods",
        "create deployments.apps",
        "watch modelpolicies.stoa.dev",
        "create events",
        "watch namespaces",
    ):
        assert kubectl(control_plane, "auth", "can-i", *allowed.split(), "--as", operator).strip() == "yes"
    for denied in (
        "create secrets",
        "list secrets",
        "delete agents.stoa.dev",
        "create pods",
        "delete namespaces",
        "create clusterroles.rbac.authorization.k8s.io",
    ):
        proc = subprocess.run(
            [
                str(kubectl_binary()),
                "--kubeconfig",
                str(control_plane.kubeconfig),
                "auth",
                "can-i",
                *denied.split(),
                "--as",
                operator,
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        assert proc.stdout.strip() == "no", denied

    listed = json.loads(helm(control_plane, "list", "--namespace", release_ns, "-o", "json"))
    assert [r["status"] for r in listed] == ["deployed"]

    helm(control_plane, "uninstall", "stoa", "--namespace", release_ns, "--wait", "--no-hooks")
    assert kube.get_or_none(f"/apis/apps/v1/namespaces/{release_ns}/deployments/stoa-operator") is None
    assert kube.get_or_none("/apis/rbac.authorization.k8s.io/v1/clusterroles/stoa-operator") is None
    for name in CRD_NAMES:
        assert kube.get_or_none(f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}")
    kubectl(control_plane, "delete", "namespace", release_ns, "--wait=false")
