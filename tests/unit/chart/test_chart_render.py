"""``helm lint`` and ``helm template`` of charts/stoa: defaults, bundled services, ServiceMonitor, schema."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from stoa_agents.local.embedded import MODEL_ALIAS
from tests.unit.chart.helm import CHART, REPO_ROOT, find, helm, render, template


def _env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def _pod_specs(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [o["spec"]["template"]["spec"] for o in find(objects, "Deployment")]


@pytest.mark.parametrize("values", [[], ["bundled.enabled=true"], ["metrics.serviceMonitor.enabled=true"]])
def test_helm_lint_passes(values: list[str]) -> None:
    args = ["lint", "--strict", str(CHART)]
    for value in values:
        args += ["--set", value]
    result = helm(*args)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 chart(s) failed" in result.stdout


def _component(objects: list[dict[str, Any]], component: str) -> list[dict[str, Any]]:
    return [
        o for o in objects if o["metadata"].get("labels", {}).get("app.kubernetes.io/component") == component
    ]


def test_defaults_render_operator_with_least_privilege_and_existing_secret() -> None:
    # The operator's objects (the API's and the user roles: tests/unit/chart/test_chart_api.py).
    objects = _component(render(), "operator")
    kinds = sorted(o["kind"] for o in objects)
    assert kinds == [
        "ClusterRole",
        "ClusterRole",
        "ClusterRoleBinding",
        "ClusterRoleBinding",
        "Deployment",
        "Service",
        "ServiceAccount",
    ]
    (deployment,) = find(objects, "Deployment", "stoa-operator")
    spec = deployment["spec"]["template"]["spec"]
    assert spec["serviceAccountName"] == "stoa-operator"
    (container,) = spec["containers"]
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert container["image"] == f"ghcr.io/stoa-dev/stoa:{chart['appVersion']}"
    assert container["args"] == ["operator"]
    assert "command" not in container  # the image's ENTRYPOINT is `stoa`
    env = _env(container)
    assert env["STOA_OPERATOR_CONNECTION_SECRET"] == "stoa-connections"
    # Tenancy: no connection of its own, so each namespace's Conversations go to its own Secret's store.
    assert not {"STOA_OPERATOR_RABBITMQ_URL", "STOA_OPERATOR_POSTGRES_DSN"} & set(env)
    assert env["STOA_OPERATOR_IMAGE_PULL_SECRETS"] == ""
    assert env["STOA_OPERATOR_IMAGE_PULL_POLICY"] == "IfNotPresent"
    assert env["STOA_OPERATOR_AGENT_IMAGE"] == container["image"]
    assert env["STOA_OPERATOR_GATEWAY_IMAGE"] == container["image"]
    assert env["STOA_OPERATOR_NAMESPACES"] == ""
    # Each listen port comes from an env var equal to its containerPort (the e2e node agent remaps them).
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert env["STOA_OPERATOR_METRICS_PORT_NUMBER"] == str(ports["metrics"])
    assert env["STOA_OPERATOR_LIVENESS_PORT_NUMBER"] == str(ports["health"])
    assert container["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    bindings = find(objects, "ClusterRoleBinding")
    for binding in bindings:
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": "stoa-operator", "namespace": "stoa-system"}
        ]
    roles = find(objects, "ClusterRole")
    assert {b["roleRef"]["name"] for b in bindings} == {r["metadata"]["name"] for r in roles}
    rules = [rule for role in roles for rule in role["rules"]]
    assert "*" not in {v for rule in rules for v in rule["verbs"]}
    assert all("*" not in rule["resources"] and "*" not in rule["apiGroups"] for rule in rules)
    secrets = [r for r in rules if "secrets" in r["resources"]]
    assert secrets
    assert all(set(r["verbs"]) <= {"get", "list", "watch"} for r in secrets)


@pytest.mark.parametrize("values", [[], ["bundled.enabled=true"]])
def test_every_pod_is_hardened(values: list[str]) -> None:
    specs = _pod_specs(render(*values))
    assert len(specs) == (5 if values else 2)  # operator, api (+ bundled RabbitMQ, PostgreSQL, model)
    for spec in specs:
        # Configured only by what the chart sets: a Service named stoa-* would otherwise inject STOA_*.
        assert spec["enableServiceLinks"] is False
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        for container in spec["containers"]:
            ctx = container["securityContext"]
            assert ctx["readOnlyRootFilesystem"] is True
            assert ctx["allowPrivilegeEscalation"] is False
            assert ctx["capabilities"]["drop"] == ["ALL"]
            assert container["resources"]["limits"]
            assert container["resources"]["requests"]


def test_bundled_adds_rabbitmq_postgres_and_their_connection_secret() -> None:
    objects = render("bundled.enabled=true")
    assert {d["metadata"]["name"] for d in find(objects, "Deployment")} == {
        "stoa-operator",
        "stoa-api",
        "stoa-rabbitmq",
        "stoa-postgres",
        "stoa-model",
    }
    assert {s["metadata"]["name"] for s in find(objects, "Service")} == {
        "stoa-operator-metrics",
        "stoa-api",
        "stoa-rabbitmq",
        "stoa-postgres",
        "stoa-model",
    }
    secrets = find(objects, "Secret", "stoa-connections")
    assert {x["metadata"]["namespace"] for x in secrets} == {"stoa-system", "default"}
    for secret in secrets:
        data = secret["stringData"]
        assert data["rabbitmqUrl"].startswith("amqp://stoa:")
        assert data["rabbitmqUrl"].endswith("@stoa-rabbitmq.stoa-system.svc:5672/")
        assert data["postgresDsn"].startswith("postgresql://stoa:")
        assert data["postgresDsn"].endswith("@stoa-postgres.stoa-system.svc:5432/stoa")
    (passwords,) = find(objects, "Secret", "stoa-bundled")
    assert len(passwords["stringData"]["rabbitmq-password"]) >= 16
    assert passwords["stringData"]["postgres-password"] in secrets[0]["stringData"]["postgresDsn"]
    (operator,) = find(objects, "Deployment", "stoa-operator")
    env = _env(operator["spec"]["template"]["spec"]["containers"][0])
    assert env["STOA_OPERATOR_CONNECTION_SECRET"] == "stoa-connections"


def test_bundled_connection_secret_goes_to_the_agent_namespaces() -> None:
    objects = render("bundled.enabled=true", "bundled.agentNamespaces={team-a,team-b}")
    secrets = find(objects, "Secret", "stoa-connections")
    assert sorted(x["metadata"]["namespace"] for x in secrets) == ["stoa-system", "team-a", "team-b"]


def test_bundled_off_renders_no_database_or_broker() -> None:
    objects = render("bundled.enabled=false", "connections.secretName=my-urls")
    assert not find(objects, "Secret")
    assert {d["metadata"]["name"] for d in find(objects, "Deployment")} == {"stoa-operator", "stoa-api"}
    (operator,) = find(objects, "Deployment", "stoa-operator")
    env = _env(operator["spec"]["template"]["spec"]["containers"][0])
    assert env["STOA_OPERATOR_CONNECTION_SECRET"] == "my-urls"


def test_image_values_reach_every_pod_and_the_pods_the_operator_builds() -> None:
    """imagePullSecrets, repository, tag and pull policy: on every pod of the chart, and passed to the
    operator for the agent and gateway pods it builds (those are checked in tests/unit/operator)."""
    objects = render(
        "bundled.enabled=true",
        "image.repository=registry.example:5000/team/stoa",
        "image.tag=1.2.3",
        "image.pullPolicy=Always",
        "imagePullSecrets[0].name=regcred",
        "imagePullSecrets[1].name=mirror",
    )
    deployments = find(objects, "Deployment")
    assert {d["metadata"]["name"] for d in deployments} >= {"stoa-operator", "stoa-api", "stoa-model"}
    for deployment in deployments:
        spec = deployment["spec"]["template"]["spec"]
        name = deployment["metadata"]["name"]
        assert spec["imagePullSecrets"] == [{"name": "regcred"}, {"name": "mirror"}], name
    (operator,) = find(objects, "Deployment", "stoa-operator")
    container = operator["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "registry.example:5000/team/stoa:1.2.3"
    assert container["imagePullPolicy"] == "Always"
    env = _env(container)
    assert env["STOA_OPERATOR_IMAGE_PULL_SECRETS"] == "regcred,mirror"
    assert env["STOA_OPERATOR_IMAGE_PULL_POLICY"] == "Always"
    assert env["STOA_OPERATOR_AGENT_IMAGE"] == env["STOA_OPERATOR_GATEWAY_IMAGE"] == container["image"]


def test_bundled_model_serves_the_debate_examples_model_url() -> None:
    """The Service examples/debate/model-policy.yaml targets, backed by `stoa model-server` only."""
    policy = yaml.safe_load((REPO_ROOT / "examples" / "debate" / "model-policy.yaml").read_text())
    (target,) = policy["spec"]["targets"]
    # Another release name: the Service keeps the fixed name the example uses.
    result = helm(
        "template", "demo", str(CHART), "--namespace", "stoa-system", "--set", "bundled.enabled=true"
    )
    assert result.returncode == 0, result.stderr
    objects = result.objects()
    (service,) = find(objects, "Service", "stoa-model")
    (port,) = service["spec"]["ports"]
    assert target["baseURL"] == f"http://stoa-model.stoa-system.svc:{port['port']}/v1"
    assert target["model"] == MODEL_ALIAS
    backing = [
        d
        for d in find(objects, "Deployment")
        if service["spec"]["selector"].items() <= d["spec"]["template"]["metadata"]["labels"].items()
    ]
    assert [d["metadata"]["name"] for d in backing] == ["demo-stoa-model"]
    pod = backing[0]["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    (container,) = pod["containers"]
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert container["image"] == f"ghcr.io/stoa-dev/stoa-model:{chart['appVersion']}"
    assert container["args"] == ["model-server", "--threads", "2"]
    assert "command" not in container  # the model image's ENTRYPOINT is `stoa`
    (http,) = container["ports"]
    assert port["targetPort"] == http["name"]
    assert _env(container)["STOA_MODEL_SERVER_PORT_NUMBER"] == str(http["containerPort"])  # remapped in e2e
    assert container["readinessProbe"]["httpGet"] == {"path": "/v1/models", "port": "http"}
    assert container["resources"]["requests"] == {"cpu": "250m", "memory": "512Mi"}
    # Read-only root filesystem: llama.cpp's server writes nothing; HOME and temp files go to /tmp.
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["volumeMounts"] == [{"name": "tmp", "mountPath": "/tmp"}]
    assert pod["volumes"][0]["emptyDir"]


@pytest.mark.parametrize(
    "values", [["bundled.enabled=false"], ["bundled.enabled=true", "bundled.model.enabled=false"]]
)
def test_bundled_model_off(values: list[str]) -> None:
    objects = render(*values)
    assert not find(objects, "Service", "stoa-model")
    assert not [d for d in find(objects, "Deployment") if d["metadata"]["name"].endswith("-model")]


def test_bundled_model_image_follows_the_stoa_image_unless_set() -> None:
    def model_container(*values: str) -> dict[str, Any]:
        (deployment,) = find(render("bundled.enabled=true", *values), "Deployment", "stoa-model")
        container: dict[str, Any] = deployment["spec"]["template"]["spec"]["containers"][0]
        return container

    container = model_container("image.tag=dev", "image.pullPolicy=Never")
    assert (container["image"], container["imagePullPolicy"]) == ("ghcr.io/stoa-dev/stoa-model:dev", "Never")
    container = model_container(
        "image.tag=dev",
        "bundled.model.image.repository=registry.local/model",
        "bundled.model.image.tag=v7",
        "bundled.model.image.pullPolicy=Always",
        "bundled.model.threads=4",
    )
    assert (container["image"], container["imagePullPolicy"]) == ("registry.local/model:v7", "Always")
    assert container["args"] == ["model-server", "--threads", "4"]


def test_service_monitor_on() -> None:
    objects = render("metrics.serviceMonitor.enabled=true", "metrics.serviceMonitor.labels.release=prom")
    (monitor,) = find(objects, "ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "prom"
    (service,) = find(objects, "Service", "stoa-operator-metrics")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"][0]["port"] == service["spec"]["ports"][0]["name"]
    assert not find(render(), "ServiceMonitor")


def test_image_tag_and_pull_policy() -> None:
    objects = render("image.repository=stoa", "image.tag=dev", "image.pullPolicy=Never")
    (container,) = find(objects, "Deployment")[0]["spec"]["template"]["spec"]["containers"]
    assert container["image"] == "stoa:dev"
    assert container["imagePullPolicy"] == "Never"


@pytest.mark.parametrize(
    ("values", "bad_key"),
    [
        ({"operatorr": {"replicas": 1}}, "operatorr"),
        ({"image": {"repository": "x", "tags": "1"}}, "tags"),
        ({"bundled": {"enable": True}}, "enable"),
        ({"bundled": {"model": {"thread": 2}}}, "thread"),
        ({"securityContext": {"readOnlyRootFS": True}}, "readOnlyRootFS"),
    ],
)
def test_unknown_values_are_rejected(tmp_path: Path, values: dict[str, Any], bad_key: str) -> None:
    values_file = tmp_path / "values.yaml"
    values_file.write_text(yaml.safe_dump(values))
    result = template(values_file=values_file)
    assert result.returncode != 0
    assert "additional property" in result.stderr.lower()
    assert bad_key in result.stderr


def test_wrong_types_are_rejected() -> None:
    result = template("image.pullPolicy=Sometimes")
    assert result.returncode != 0
    assert "pullPolicy" in result.stderr


def test_notes_tell_the_next_step() -> None:
    # Rendered by `helm install` (checked in tests/e2e/chart); here the text a user reads next.
    notes = (CHART / "templates" / "NOTES.txt").read_text()
    assert "kubectl apply -f examples/debate/" in notes
    assert "kubectl get stoa" in notes
    assert "stoa-model.%s.svc:8080/v1" in notes  # the bundled model's URL in the release namespace
    assert "kubectl patch modelpolicy debate-small" in notes  # when that is not stoa-system


def test_uninstall_runs_the_drain_hook_first_with_its_own_least_privilege() -> None:
    """`helm uninstall` runs `stoa operator drain` before deleting anything (pre-delete), as its own
    ServiceAccount that may only list, delete and un-finalize the Stoa resources."""
    objects = _component(
        render("operator.watchNamespaces={team-a,team-b}", "imagePullSecrets[0].name=regcred"), "drain"
    )
    assert sorted(o["kind"] for o in objects) == [
        "ClusterRole",
        "ClusterRoleBinding",
        "Job",
        "ServiceAccount",
    ]
    for obj in objects:
        annotations = obj["metadata"]["annotations"]
        assert annotations["helm.sh/hook"] == "pre-delete"
        assert "hook-succeeded" in annotations["helm.sh/hook-delete-policy"]
    weights = {o["kind"]: int(o["metadata"]["annotations"]["helm.sh/hook-weight"]) for o in objects}
    assert weights["Job"] > weights["ServiceAccount"] == weights["ClusterRole"]
    (role,) = find(objects, "ClusterRole")
    assert role["rules"] == [
        {
            "apiGroups": ["stoa.dev"],
            "resources": ["agents", "conversations", "modelpolicies"],
            "verbs": ["list", "delete", "patch"],
        }
    ]
    (job,) = find(objects, "Job")
    pod = job["spec"]["template"]["spec"]
    assert pod["enableServiceLinks"] is False
    assert pod["restartPolicy"] == "Never"
    assert pod["imagePullSecrets"] == [{"name": "regcred"}]
    (container,) = pod["containers"]
    assert container["args"] == ["operator", "drain", "--namespaces=team-a,team-b", "--timeout=120"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert _component(render("uninstall.drain=false"), "drain") == []
