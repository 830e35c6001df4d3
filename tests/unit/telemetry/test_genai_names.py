"""GenAI names: the attribute keys match the semantic-conventions package; Prometheus forms and buckets."""

from __future__ import annotations

from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as semconv
from opentelemetry.semconv._incubating.metrics import gen_ai_metrics as semconv_metrics
from prometheus_client import CollectorRegistry, generate_latest

from stoa_telemetry import genai
from stoa_telemetry.gen_ai_metrics import (
    OPERATION_DURATION,
    TIME_PER_OUTPUT_TOKEN,
    TIME_TO_FIRST_TOKEN,
    TOKEN_USAGE,
    GenAIClientMetrics,
    GenAIServerMetrics,
    prometheus_name,
)


def test_attribute_keys_are_the_semantic_conventions() -> None:
    assert genai.OPERATION_NAME == semconv.GEN_AI_OPERATION_NAME
    assert genai.AGENT_NAME == semconv.GEN_AI_AGENT_NAME
    assert genai.CONVERSATION_ID == semconv.GEN_AI_CONVERSATION_ID
    assert genai.REQUEST_MODEL == semconv.GEN_AI_REQUEST_MODEL
    assert genai.RESPONSE_MODEL == semconv.GEN_AI_RESPONSE_MODEL
    assert genai.USAGE_INPUT_TOKENS == semconv.GEN_AI_USAGE_INPUT_TOKENS
    assert genai.USAGE_OUTPUT_TOKENS == semconv.GEN_AI_USAGE_OUTPUT_TOKENS
    assert genai.TOKEN_TYPE == semconv.GEN_AI_TOKEN_TYPE
    assert genai.PROVIDER_NAME == semconv.GEN_AI_PROVIDER_NAME
    assert genai.INPUT_MESSAGES == semconv.GEN_AI_INPUT_MESSAGES
    assert genai.invoke_agent_span("team-a") == "invoke_agent team-a"
    assert genai.chat_span("gpt-4o") == "chat gpt-4o"


def test_prometheus_forms_of_the_genai_metrics() -> None:
    assert prometheus_name(semconv_metrics.GEN_AI_CLIENT_TOKEN_USAGE, "{token}") == TOKEN_USAGE
    assert TOKEN_USAGE == "gen_ai_client_token_usage"
    assert OPERATION_DURATION == "gen_ai_client_operation_duration_seconds"
    assert TIME_TO_FIRST_TOKEN == "gen_ai_server_time_to_first_token_seconds"
    assert TIME_PER_OUTPUT_TOKEN == "gen_ai_server_time_per_output_token_seconds"


def test_instruments_are_histograms_with_token_type() -> None:
    registry = CollectorRegistry()
    client, server = GenAIClientMetrics(registry), GenAIServerMetrics(registry)
    client.record(
        request_model="chat", response_model="gpt-x", seconds=0.3, input_tokens=12, output_tokens=40
    )
    client.record(
        request_model="chat",
        response_model="",
        seconds=1.0,
        input_tokens=None,
        output_tokens=None,
        error_type="503",
    )
    server.record_stream(
        request_model="chat", response_model="gpt-x", ttft_seconds=0.2, per_token_seconds=0.02
    )
    text = generate_latest(registry).decode()
    assert "# TYPE gen_ai_client_token_usage histogram" in text
    assert "# TYPE gen_ai_client_operation_duration_seconds histogram" in text
    assert "# TYPE gen_ai_server_time_to_first_token_seconds histogram" in text
    assert "# TYPE gen_ai_server_time_per_output_token_seconds histogram" in text
    assert 'gen_ai_token_type="input"' in text
    assert 'gen_ai_token_type="output"' in text
    labels = 'gen_ai_operation_name="chat",gen_ai_provider_name="openai",gen_ai_request_model="chat"'
    tail = 'gen_ai_response_model="gpt-x",gen_ai_token_type="output"'
    assert f"gen_ai_client_token_usage_sum{{{labels},{tail}}} 40.0" in text
    assert 'error_type="503"' in text
    # The buckets the conventions advise (first and last boundaries).
    assert "gen_ai_client_token_usage_bucket{" in text
    assert 'le="6.7108864e+07"' in text
    assert 'le="81.92"' in text
    assert 'le="0.001"' in text
