"""Smoke tests proving the e2e session runs a real kube-apiserver and kube-controller-manager."""

from __future__ import annotations

import subprocess
import time
import uuid
from typing import Any

import pytest
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from stoa_devenv.cluster import ControlPlane
from stoa_devenv.tools import helm_binary, kubectl_binary
from tests.e2e.manifests import deployment

WIDGET_CRD: dict[str, Any] = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "widgets.smoke.stoa.dev"},
    "spec": {
        "group": "smoke.stoa.dev",
        "scope": "Namespaced",
        "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {
                                "type": "object",
                                "required": ["size"],
                                "properties": {"size": {"type": "integer", "minimum": 1, "maximum": 10}},
                            }
                        },
                    }
                },
            }
        ],
    },
}


@pytest.fixture(scope="module")
def api(control_plane: ControlPlane) -> client.ApiClient:
    return config.new_client_from_config(str(control_plane.kubeconfig))


def _wait(predicate: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def test_crd_applied_and_invalid_object_rejected(api: client.ApiClient) -> None:
    ext = client.ApiextensionsV1Api(api)
    ext.create_custom_resource_definition(WIDGET_CRD)

    def established() -> bool:
        crd = ext.read_custom_resource_definition("widgets.smoke.stoa.dev")
        return any(c.type == "Established" and c.status == "True" for c in crd.status.conditions or [])

    _wait(established, 30, "CRD Established")
    custom = client.CustomObjectsApi(api)
    body = {
        "apiVersion": "smoke.stoa.dev/v1",
        "kind": "Widget",
        "metadata": {"name": "ok"},
        "spec": {"size": 3},
    }
    _wait(lambda: _try_create(custom, body), 30, "CRD served")
    bad = {**body, "metadata": {"name": "bad"}, "spec": {"size": 99}}
    with pytest.raises(ApiException) as excinfo:
        custom.create_namespaced_custom_object("smoke.stoa.dev", "v1", "default", "widgets", bad)
    assert excinfo.value.status == 422
    assert "spec.size" in str(excinfo.value.body)
    assert "less than or equal to 10" in str(excinfo.value.body)


def _try_create(custom: client.CustomObjectsApi, body: dict[str, Any]) -> bool:
    try:
        custom.create_namespaced_custom_object("smoke.stoa.dev", "v1", "default", "widgets", body)
    except ApiException as err:
        if err.status == 404:
            return False
        raise
    return True


def test_deployment_gets_replicaset_and_pods_from_controller_manager(api: client.ApiClient) -> None:
    apps = client.AppsV1Api(api)
    name = f"smoke-{uuid.uuid4().hex[:6]}"
    apps.create_namespaced_deployment(
        "default", deployment(name, {"containers": [{"name": "main", "image": "example.invalid/none:1"}]})
    )
    rs = _wait(
        lambda: apps.list_namespaced_replica_set("default", label_selector=f"app={name}").items,
        60,
        "ReplicaSet",
    )
    assert rs[0].metadata.owner_references[0].name == name
    core = client.CoreV1Api(api)
    pods = _wait(
        lambda: len(core.list_namespaced_pod("default", label_selector=f"app={name}").items) == 2,
        60,
        "2 Pods",
    )
    assert pods
    # Garbage collection: deleting the Deployment removes its ReplicaSet through ownerReferences.
    apps.delete_namespaced_deployment(name, "default", propagation_policy="Background")
    _wait(
        lambda: not apps.list_namespaced_replica_set("default", label_selector=f"app={name}").items,
        60,
        "ReplicaSet garbage-collected",
    )


def test_rbac_is_enforced(control_plane: ControlPlane, api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    ns = f"rbac-{uuid.uuid4().hex[:6]}"
    core.create_namespace({"metadata": {"name": ns}})
    sa = _wait(lambda: _read_sa(core, ns), 30, "default ServiceAccount in the new namespace")
    assert sa.metadata.name == "default"
    token = core.create_namespaced_service_account_token(
        "default", ns, {"spec": {"audiences": ["https://kubernetes.default.svc"], "expirationSeconds": 600}}
    ).status.token
    kubectl = str(kubectl_binary())
    result = subprocess.run(
        [
            kubectl,
            "--server",
            control_plane.server,
            "--certificate-authority",
            str(control_plane.base / "pki" / "apiserver.crt"),
            "--token",
            token,
            "get",
            "secrets",
            "-n",
            "kube-system",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode != 0
    assert "forbidden" in result.stderr.lower()


def _read_sa(core: client.CoreV1Api, ns: str) -> Any:
    try:
        return core.read_namespaced_service_account("default", ns)
    except ApiException:
        return None


def test_helm_and_kubectl_talk_to_the_cluster(control_plane: ControlPlane) -> None:
    kubectl = subprocess.run(
        [str(kubectl_binary()), "--kubeconfig", str(control_plane.kubeconfig), "version", "-o", "json"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert '"gitVersion": "v1.33' in kubectl.stdout
    helm = subprocess.run(
        [str(helm_binary()), "--kubeconfig", str(control_plane.kubeconfig), "list", "-A"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert helm.returncode == 0, helm.stderr
