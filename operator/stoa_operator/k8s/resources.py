"""Every API resource the operator touches, with the verbs it uses: the source of the RBAC manifest (pure).

Keep this next to the adapter: a call the code makes but this table lacks fails the RBAC e2e test
(the operator runs with the generated ClusterRole), and ``stoa_operator.k8s.rbac`` renders it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Resource:
    group: str  # "" for the core group
    version: str
    kind: str
    plural: str
    verbs: tuple[str, ...]
    why: str
    subresource: str | None = None

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version


RESOURCES: tuple[Resource, ...] = (
    # Stoa's own kinds: kopf watches them and patches finalizers/annotations; reconcile writes status.
    Resource(
        "stoa.dev", "v1alpha1", "ModelPolicy", "modelpolicies", ("get", "list", "watch", "patch"), "watch"
    ),
    Resource("stoa.dev", "v1alpha1", "Agent", "agents", ("get", "list", "watch", "patch"), "watch"),
    Resource(
        "stoa.dev", "v1alpha1", "Conversation", "conversations", ("get", "list", "watch", "patch"), "watch"
    ),
    Resource("stoa.dev", "v1alpha1", "ModelPolicy", "modelpolicies", ("get", "patch"), "status", "status"),
    Resource("stoa.dev", "v1alpha1", "Agent", "agents", ("get", "patch"), "status", "status"),
    Resource("stoa.dev", "v1alpha1", "Conversation", "conversations", ("get", "patch"), "status", "status"),
    # Children, applied with server-side apply (patch); list/watch to restore deleted children.
    Resource(
        "apps", "v1", "Deployment", "deployments", ("get", "list", "watch", "create", "patch"), "children"
    ),
    Resource("", "v1", "Service", "services", ("get", "list", "watch", "create", "patch"), "children"),
    Resource("", "v1", "ConfigMap", "configmaps", ("get", "list", "watch", "create", "patch"), "children"),
    Resource(
        "", "v1", "ServiceAccount", "serviceaccounts", ("get", "list", "watch", "create", "patch"), "children"
    ),
    # SLO recording rules and burn-rate alerts, when the prometheus-operator CRD is installed.
    Resource(
        "monitoring.coreos.com",
        "v1",
        "PrometheusRule",
        "prometheusrules",
        ("get", "create", "patch", "delete"),
        "SLO rules of Agents and ModelPolicies with spec.slo",
    ),
    # References and observations.
    Resource("", "v1", "Secret", "secrets", ("get",), "connection and API-key Secrets exist; runtime URLs"),
    Resource("", "v1", "Pod", "pods", ("list",), "gateway replicas to read target health from"),
    # Kubernetes Events for transitions (core and events.k8s.io, kopf posts core events).
    Resource("", "v1", "Event", "events", ("create", "patch"), "events"),
    Resource("events.k8s.io", "v1", "Event", "events", ("create", "patch"), "events"),
)

# Cluster-scoped reads kopf itself needs (CRD discovery; namespace list when watching patterns).
CLUSTER_RESOURCES: tuple[Resource, ...] = (
    Resource(
        "apiextensions.k8s.io",
        "v1",
        "CustomResourceDefinition",
        "customresourcedefinitions",
        ("list", "watch"),
        "kopf: resource discovery",
    ),
    Resource("", "v1", "Namespace", "namespaces", ("list", "watch"), "kopf: cluster-wide watching"),
)


def resource_for(api_version: str, kind: str) -> Resource:
    for res in RESOURCES:
        if res.api_version == api_version and res.kind == kind and res.subresource is None:
            return res
    raise KeyError(f"{api_version} {kind} is not declared in stoa_operator.k8s.resources.RESOURCES")


def allowed(api_version: str, kind: str, verb: str, subresource: str | None = None) -> bool:
    return any(
        r.api_version == api_version and r.kind == kind and r.subresource == subresource and verb in r.verbs
        for r in RESOURCES
    )
