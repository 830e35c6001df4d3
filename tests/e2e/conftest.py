"""The real Kubernetes control plane for e2e tests (etcd + kube-apiserver + kube-controller-manager)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from stoa_devenv.cluster import ControlPlane
from tests.e2e.nodeagent.fixtures import node_agent_factory

__all__ = ["control_plane", "node_agent_factory"]


@pytest.fixture(scope="session")
def control_plane() -> Iterator[ControlPlane]:
    """Started once per session; ``.kubeconfig`` is an admin kubeconfig (token auth, RBAC on)."""
    plane = ControlPlane().start()
    yield plane
    plane.destroy()
