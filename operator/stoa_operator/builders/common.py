"""Names, labels and owner references shared by the builders (pure)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

MANAGED_BY = "stoa-operator"
GATEWAY_NAME = "stoa-gateway"
GATEWAY_CONFIG_KEY = "gateway.yaml"
GATEWAY_CONFIG_DIR = "/etc/stoa"
NON_ROOT_UID = 65532
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_NAME = "app.kubernetes.io/name"
LABEL_INSTANCE = "app.kubernetes.io/instance"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_AGENT = "stoa.dev/agent"


@dataclass(frozen=True)
class Owner:
    """The custom resource a child belongs to."""

    api_version: str
    kind: str
    name: str
    uid: str
    namespace: str

    def reference(self, controller: bool = True) -> dict[str, Any]:
        return {
            "apiVersion": self.api_version,
            "kind": self.kind,
            "name": self.name,
            "uid": self.uid,
            "controller": controller,
            "blockOwnerDeletion": True,
        }


def owner_from_body(body: dict[str, Any]) -> Owner:
    meta = body["metadata"]
    return Owner(body["apiVersion"], body["kind"], meta["name"], meta["uid"], meta["namespace"])


def agent_child_name(agent: str) -> str:
    return f"agent-{agent}"


def agent_labels(agent: str) -> dict[str, str]:
    return {
        LABEL_NAME: "stoa-agent",
        LABEL_INSTANCE: agent,
        LABEL_COMPONENT: "agent",
        LABEL_MANAGED_BY: MANAGED_BY,
        LABEL_AGENT: agent,
    }


def gateway_labels() -> dict[str, str]:
    return {
        LABEL_NAME: "stoa-gateway",
        LABEL_INSTANCE: GATEWAY_NAME,
        LABEL_COMPONENT: "gateway",
        LABEL_MANAGED_BY: MANAGED_BY,
    }


def selector(labels: dict[str, str]) -> dict[str, str]:
    return {k: labels[k] for k in (LABEL_NAME, LABEL_INSTANCE)}


def gateway_endpoint(namespace: str, port: int) -> str:
    return f"http://{GATEWAY_NAME}.{namespace}.svc:{port}/v1"


def metadata(
    name: str, namespace: str, labels: dict[str, str], owners: list[dict[str, Any]]
) -> dict[str, Any]:
    return {"name": name, "namespace": namespace, "labels": dict(labels), "ownerReferences": owners}


def container_security() -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": NON_ROOT_UID,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def pod_security() -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": NON_ROOT_UID,
        "runAsGroup": NON_ROOT_UID,
        "fsGroup": NON_ROOT_UID,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def pull_secrets(names: tuple[str, ...]) -> dict[str, Any]:
    """``imagePullSecrets`` of a pod spec (nothing when there are none)."""
    return {"imagePullSecrets": [{"name": n} for n in names]} if names else {}


def service_account(
    name: str, namespace: str, labels: dict[str, str], owners: list[dict[str, Any]]
) -> dict[str, Any]:
    """A ServiceAccount without an API token: agents and gateways never call the Kubernetes API."""
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": metadata(name, namespace, labels, owners),
        "automountServiceAccountToken": False,
    }
