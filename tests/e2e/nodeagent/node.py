"""The Node object and its Lease: registration, a Ready status and heartbeats, as a kubelet posts them."""

from __future__ import annotations

import contextlib
import os

from tests.e2e.nodeagent import spec
from tests.e2e.kube import JSON, Kube, KubeError
from tests.e2e.nodeagent.runs import now_micro, now_rfc3339

LEASE_NAMESPACE = "kube-node-lease"
HEARTBEAT_SECONDS = 10.0
NODE_STATUS_SECONDS = 30.0


def register_node(kube: Kube, name: str) -> None:
    """Create the Node (or reuse it), then post its status and a first heartbeat."""
    node = {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "stoa.dev/node-agent": "true",
            },
        },
    }
    try:
        kube.create("/api/v1/nodes", node)
    except KubeError as err:
        if err.status != 409:
            raise
    post_node_status(kube, name)
    renew_lease(kube, name)


def node_status(name: str, now: str) -> JSON:
    """A Ready node with plenty of room, reachable at the pod IP (pure)."""
    resources = {"cpu": "32", "memory": "64Gi", "pods": "250", "ephemeral-storage": "100Gi"}
    conditions = [
        {"type": t, "status": "False", "reason": r, "lastHeartbeatTime": now, "lastTransitionTime": now}
        for t, r in (
            ("MemoryPressure", "KubeletHasSufficientMemory"),
            ("DiskPressure", "KubeletHasNoDiskPressure"),
            ("PIDPressure", "KubeletHasSufficientPID"),
        )
    ]
    conditions.append(
        {
            "type": "Ready",
            "status": "True",
            "reason": "KubeletReady",
            "message": "stoa test node agent is posting ready status",
            "lastHeartbeatTime": now,
            "lastTransitionTime": now,
        }
    )
    return {
        "capacity": resources,
        "allocatable": resources,
        "conditions": conditions,
        "addresses": [
            {"type": "InternalIP", "address": spec.POD_IP},
            {"type": "Hostname", "address": name},
        ],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": 0}},
        "nodeInfo": {
            "architecture": "amd64",
            "bootID": name,
            "containerRuntimeVersion": "stoa-node-agent://0.1",
            "kernelVersion": os.uname().release,
            "kubeProxyVersion": "v1.33.0",
            "kubeletVersion": "v1.33.0",
            "machineID": name,
            "operatingSystem": "linux",
            "osImage": "stoa test node agent",
            "systemUUID": name,
        },
    }


def post_node_status(kube: Kube, name: str) -> None:
    kube.patch(f"/api/v1/nodes/{name}/status", {"status": node_status(name, now_rfc3339())})


def renew_lease(kube: Kube, name: str) -> None:
    """Renew the node's Lease in kube-node-lease (created, owned by the Node, on first call)."""
    path = f"/apis/coordination.k8s.io/v1/namespaces/{LEASE_NAMESPACE}/leases/{name}"
    if kube.get_or_none(path) is not None:
        kube.patch(path, {"spec": {"renewTime": now_micro()}}, kind="merge-patch")
        return
    node = kube.get(f"/api/v1/nodes/{name}")
    body = {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {
            "name": name,
            "namespace": LEASE_NAMESPACE,
            "ownerReferences": [
                {"apiVersion": "v1", "kind": "Node", "name": name, "uid": node["metadata"]["uid"]}
            ],
        },
        "spec": {"holderIdentity": name, "leaseDurationSeconds": 40, "renewTime": now_micro()},
    }
    with contextlib.suppress(KubeError):
        kube.create(f"/apis/coordination.k8s.io/v1/namespaces/{LEASE_NAMESPACE}/leases", body)


def delete_node(kube: Kube, name: str) -> None:
    with contextlib.suppress(KubeError, OSError):
        kube.delete(f"/api/v1/nodes/{name}")
