"""The real Kubernetes control plane for e2e tests (etcd + kube-apiserver + kube-controller-manager).

Tests of the API alone (operator reconcile, validation, chart manifests) use ``control_plane``: no node,
so nothing they create ever runs. Tests that run pods use the real node of ``tests/e2e/node``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from stoa_devenv.cluster import ControlPlane


@pytest.fixture(scope="session")
def control_plane() -> Iterator[ControlPlane]:
    """Started once per session; ``.kubeconfig`` is an admin kubeconfig (token auth, RBAC on)."""
    plane = ControlPlane().start()
    yield plane
    plane.destroy()
