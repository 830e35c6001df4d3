"""The chart's ``stoa api``: Deployment, Service, ServiceAccount, its least-privilege RBAC and the user roles.

The Deployment's environment is loaded into ``ApiSettings`` (the API's own parser): the chart cannot set a
name the API refuses, nor a port the container does not expose.
"""

from __future__ import annotations

from typing import Any

from stoa_web.settings import ApiSettings
from tests.unit.chart.helm import find, render


def _api(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [o for o in objects if o["metadata"].get("labels", {}).get("app.kubernetes.io/component") == "api"]


def _rules(role: dict[str, Any]) -> set[tuple[str, str, str, str]]:
    return {
        (group, resource, verb, ",".join(rule.get("resourceNames", [])))
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def test_api_deployment_service_and_account() -> None:
    objects = _api(render())
    assert sorted(o["kind"] for o in objects) == [
        "ClusterRole",
        "ClusterRoleBinding",
        "Deployment",
        "Service",
        "ServiceAccount",
    ]
    (deployment,) = find(objects, "Deployment", "stoa-api")
    spec = deployment["spec"]["template"]["spec"]
    assert spec["serviceAccountName"] == "stoa-api"
    assert spec["enableServiceLinks"] is False
    (container,) = spec["containers"]
    assert container["args"] == ["api", "--host", "0.0.0.0"]
    literal = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    from_secret = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"] if "valueFrom" in e}
    # Tenancy: no DSN of its own, so each namespace's Conversations are read from its connection Secret.
    assert from_secret == {}
    settings = ApiSettings.from_environ(literal)
    assert settings.postgres_dsn is None
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert settings.port_number == ports["http"] == 8080
    assert settings.metrics_port_number == ports["metrics"] == 9090
    assert settings.connection_secret == "stoa-connections"
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    (service,) = find(objects, "Service", "stoa-api")
    assert {p["name"]: p["targetPort"] for p in service["spec"]["ports"]} == {
        "http": "http",
        "metrics": "metrics",
    }
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]


def test_the_api_itself_may_only_review_find_gateways_and_read_the_connection_secret() -> None:
    objects = _api(render("connections.secretName=my-urls"))
    (role,) = find(objects, "ClusterRole", "stoa-api")
    assert _rules(role) == {
        ("authentication.k8s.io", "tokenreviews", "create", ""),
        ("authorization.k8s.io", "subjectaccessreviews", "create", ""),
        ("discovery.k8s.io", "endpointslices", "list", ""),
        ("", "secrets", "get", "my-urls"),
    }
    (binding,) = find(objects, "ClusterRoleBinding", "stoa-api")
    assert binding["roleRef"]["name"] == "stoa-api"
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "stoa-api", "namespace": "stoa-system"}]


def test_user_roles_and_switches() -> None:
    objects = render()
    viewer = find(objects, "ClusterRole", "stoa-viewer")[0]
    editor = find(objects, "ClusterRole", "stoa-editor")[0]
    assert {r[2] for r in _rules(viewer)} == {"get", "list", "watch"}
    assert ("stoa.dev", "conversations", "create", "") in _rules(editor)
    assert ("stoa.dev", "conversations", "patch", "") in _rules(editor)
    assert not any(
        r[1] in ("agents", "modelpolicies") and r[2] not in ("get", "list", "watch") for r in _rules(editor)
    )
    assert "rbac.authorization.k8s.io/aggregate-to-view" not in viewer["metadata"]["labels"]
    aggregated = render("rbac.aggregateUserRoles=true")
    assert (
        find(aggregated, "ClusterRole", "stoa-viewer")[0]["metadata"]["labels"][
            "rbac.authorization.k8s.io/aggregate-to-view"
        ]
        == "true"
    )
    off = render("api.enabled=false", "rbac.userRoles=false")
    assert not _api(off)
    assert not find(off, "ClusterRole", "stoa-viewer")
