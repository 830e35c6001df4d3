"""Fixtures of the operator e2e suite: CRDs installed, the operator's RBAC kubeconfig, a namespace, logs."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client, config

from stoa_devenv.cluster import ControlPlane
from tests.e2e.operator.harness import Cluster, OperatorProcess, install_crds, operator_kubeconfig


@pytest.fixture(scope="module")
def api(control_plane: ControlPlane) -> client.ApiClient:
    return config.new_client_from_config(str(control_plane.kubeconfig))


@pytest.fixture(scope="module")
def crds(control_plane: ControlPlane) -> ControlPlane:
    install_crds(control_plane)
    return control_plane


@pytest.fixture(scope="module")
def op_kubeconfig(crds: ControlPlane, api: client.ApiClient) -> Path:
    return operator_kubeconfig(crds, api)


@pytest.fixture
def namespace(api: client.ApiClient) -> Iterator[str]:
    name = f"op-{uuid.uuid4().hex[:8]}"
    client.CoreV1Api(api).create_namespace({"metadata": {"name": name}})
    yield name
    client.CoreV1Api(api).delete_namespace(name)


@pytest.fixture
def cluster(api: client.ApiClient, namespace: str) -> Cluster:
    return Cluster(api, namespace)


@pytest.fixture
def operator_factory(
    op_kubeconfig: Path, control_plane: ControlPlane, request: pytest.FixtureRequest
) -> Iterator[list[OperatorProcess]]:
    """Start operators with ``factory.append(OperatorProcess(...).start())``; logs dumped on failure."""
    started: list[OperatorProcess] = []
    yield started
    for proc in started:
        proc.stop()
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        for proc in started:
            print(f"--- operator log {proc.log_path} ---\n{proc.log_tail(150)}")


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    rep = outcome.get_result()  # type: ignore[attr-defined]
    setattr(item, f"rep_{rep.when}", rep)
