"""The chart's ``stoa api`` on the real API server: its manifests pass server-side validation, and once
installed its ServiceAccount can do what the API needs and nothing more (no rights on Stoa resources:
those calls carry the caller's token). Running it on a node is the real-node e2e's."""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

from stoa_devenv.cluster import ControlPlane
from stoa_devenv.tools import helm_binary, kubectl_binary

CHART = Path(__file__).resolve().parents[3] / "charts" / "stoa"


def _run(tool: Path, plane: ControlPlane, *args: str, stdin: str | None = None, check: bool = True) -> str:
    proc = subprocess.run(
        [str(tool), "--kubeconfig", str(plane.kubeconfig), *args],
        input=stdin,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    if check:
        assert proc.returncode == 0, f"{tool.name} {' '.join(args)}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def test_api_manifests_pass_dry_run_and_its_identity_is_least_privilege(control_plane: ControlPlane) -> None:
    suffix = uuid.uuid4().hex[:5]
    release, ns = f"web{suffix}", f"stoa-api-{suffix}"
    _run(kubectl_binary(), control_plane, "create", "namespace", ns)
    rendered = _run(
        helm_binary(), control_plane, "template", release, str(CHART), "--namespace", ns, "--skip-crds"
    )
    applied = set(
        _run(
            kubectl_binary(),
            control_plane,
            "apply",
            "--dry-run=server",
            "-o",
            "name",
            "-f",
            "-",
            stdin=rendered,
        ).split()
    )
    name = f"{release}-stoa-api"
    assert {
        f"deployment.apps/{name}",
        f"service/{name}",
        f"serviceaccount/{name}",
        f"clusterrole.rbac.authorization.k8s.io/{name}",
        f"clusterrolebinding.rbac.authorization.k8s.io/{name}",
        f"clusterrole.rbac.authorization.k8s.io/{release}-stoa-viewer",
        f"clusterrole.rbac.authorization.k8s.io/{release}-stoa-editor",
    } <= applied
    _run(helm_binary(), control_plane, "install", release, str(CHART), "--namespace", ns, "--skip-crds")
    try:
        api = f"system:serviceaccount:{ns}:{name}"

        def can(*words: str) -> str:
            return _run(
                kubectl_binary(), control_plane, "auth", "can-i", *words, "--as", api, check=False
            ).strip()

        for allowed in (
            ("create", "tokenreviews.authentication.k8s.io"),
            ("create", "subjectaccessreviews.authorization.k8s.io"),
            ("list", "endpointslices.discovery.k8s.io", "-n", "team"),
            ("get", "secret/stoa-connections", "-n", "team"),
        ):
            assert can(*allowed) == "yes", allowed
        for denied in (
            ("get", "secret/other", "-n", "team"),
            ("list", "secrets", "-n", "team"),
            ("get", "conversations.stoa.dev", "-n", "team"),
            ("create", "conversations.stoa.dev", "-n", "team"),
            ("patch", "conversations.stoa.dev", "-n", "team"),
            ("list", "agents.stoa.dev", "-n", "team"),
            ("impersonate", "users"),
            ("impersonate", "serviceaccounts"),
            ("get", "pods", "-n", "team"),
        ):
            assert can(*denied) == "no", denied
    finally:
        # --no-hooks: no node runs the drain hook's Job here (tests/e2e/node/test_lifecycle_node.py runs it).
        _run(helm_binary(), control_plane, "uninstall", release, "--namespace", ns, "--wait", "--no-hooks")
        _run(kubectl_binary(), control_plane, "delete", "namespace", ns, "--wait=false")
