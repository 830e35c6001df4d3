"""OTEL_* configuration: when export is on, what the pods get, and ids that every replica derives alike."""

from __future__ import annotations

import pytest

from stoa_api.agent import AgentSpec
from stoa_operator.builders.agent import AgentInputs, build_deployment
from stoa_telemetry import ids
from stoa_telemetry.otel import export_choice
from stoa_telemetry.otel_env import passed_down

ENDPOINT = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}


@pytest.mark.parametrize(
    ("environ", "exporter", "reason"),
    [
        ({}, None, "no OTEL_EXPORTER_OTLP_ENDPOINT"),
        (ENDPOINT, "otlp", "OTLP/HTTP to http://collector:4318"),
        (
            {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"},
            "otlp",
            "OTLP/HTTP to http://c:4318/v1/traces",
        ),
        ({**ENDPOINT, "OTEL_SDK_DISABLED": "true"}, None, "OTEL_SDK_DISABLED=true"),
        ({**ENDPOINT, "OTEL_TRACES_EXPORTER": "none"}, None, "OTEL_TRACES_EXPORTER=none"),
        ({"OTEL_TRACES_EXPORTER": "console"}, "console", "OTEL_TRACES_EXPORTER=console"),
        (
            {**ENDPOINT, "OTEL_TRACES_EXPORTER": "zipkin"},
            None,
            "unsupported OTEL_TRACES_EXPORTER=zipkin (use otlp)",
        ),
    ],
)
def test_export_choice(environ: dict[str, str], exporter: str | None, reason: str) -> None:
    choice = export_choice(environ)
    assert (choice.exporter, choice.reason) == (exporter, reason)


def test_grpc_is_refused_with_what_to_do() -> None:
    choice = export_choice({**ENDPOINT, "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"})
    assert choice.exporter is None
    assert "use http/protobuf" in choice.reason
    assert "4318" in choice.reason


def test_pods_get_the_operators_otel_variables_but_name_themselves() -> None:
    environ = {
        **ENDPOINT,
        "OTEL_SERVICE_NAME": "stoa-operator",
        "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
        "OTEL_TRACES_SAMPLER_ARG": "0.25",
        "OTEL_EMPTY": "",
        "STOA_OPERATOR_LOG_LEVEL": "INFO",
    }
    otel = passed_down(environ)
    assert otel == {
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318",
        "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
        "OTEL_TRACES_SAMPLER_ARG": "0.25",
    }
    inputs = AgentInputs(
        name="ada",
        namespace="team",
        spec=AgentSpec.model_validate({"role": "pro", "persona": "p", "modelPolicyRef": {"name": "m"}}),
        owner={"apiVersion": "stoa.dev/v1alpha1", "kind": "Agent", "name": "ada", "uid": "u"},
        image="stoa:dev",
        connection_secret="stoa-connections",
        model_base_url=None,
        otel_env=tuple(otel.items()),
    )
    env = {
        e["name"]: e.get("value")
        for e in build_deployment(inputs)["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://collector:4318"
    assert env["OTEL_TRACES_SAMPLER_ARG"] == "0.25"
    assert "OTEL_SERVICE_NAME" not in env


def test_turn_ids_are_the_same_for_every_replica_and_distinct_per_delivery() -> None:
    message = "3f2b1c9e-0000-4000-8000-000000000001:7"
    assert ids.turn_trace_id(message) == ids.turn_trace_id(message)
    assert ids.turn_trace_id(message) != ids.turn_trace_id(message[:-1] + "8")
    spans = {ids.attempt_span_id(message, k) for k in range(5)}
    assert len(spans) == 5
    assert len(ids.hex_trace(ids.turn_trace_id(message))) == 32
    assert len(ids.hex_span(ids.attempt_span_id(message, 0))) == 16
