"""The OpenTelemetry GenAI metrics, in their Prometheus form, on a prometheus_client registry.

OpenTelemetry name -> Prometheus name (dots become underscores, unit ``s`` adds ``_seconds``, the
annotation unit ``{token}`` adds nothing; histograms export ``_bucket``/``_sum``/``_count``):

* ``gen_ai.client.token.usage`` (histogram, ``{token}``) -> ``gen_ai_client_token_usage``
* ``gen_ai.client.operation.duration`` (histogram, s) -> ``gen_ai_client_operation_duration_seconds``
* ``gen_ai.server.time_to_first_token`` (histogram, s) -> ``gen_ai_server_time_to_first_token_seconds``
* ``gen_ai.server.time_per_output_token`` (histogram, s) -> ``gen_ai_server_time_per_output_token_seconds``

Attribute keys become label names the same way (``gen_ai.token.type`` -> ``gen_ai_token_type``). Bucket
boundaries are the ones the conventions advise. Agents record the client metrics for their model calls;
the gateway records the client metrics for each upstream call and the server metrics for what it serves.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Histogram

from stoa_telemetry import genai

TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864)
DURATION_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92)
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
TPOT_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5)


def prometheus_name(otel_name: str, unit: str) -> str:
    """The Prometheus name of an OpenTelemetry metric (OpenTelemetry's Prometheus compatibility rules)."""
    base = otel_name.replace(".", "_")
    suffix = {"s": "_seconds", "By": "_bytes", "1": "_ratio"}.get(unit, "")
    return base + suffix if suffix and not base.endswith(suffix) else base


def label(attribute: str) -> str:
    return attribute.replace(".", "_")


TOKEN_USAGE = prometheus_name("gen_ai.client.token.usage", "{token}")
OPERATION_DURATION = prometheus_name("gen_ai.client.operation.duration", "s")
TIME_TO_FIRST_TOKEN = prometheus_name("gen_ai.server.time_to_first_token", "s")
TIME_PER_OUTPUT_TOKEN = prometheus_name("gen_ai.server.time_per_output_token", "s")

_OP = label(genai.OPERATION_NAME)
_PROVIDER = label(genai.PROVIDER_NAME)
_REQ = label(genai.REQUEST_MODEL)
_RESP = label(genai.RESPONSE_MODEL)
_TOKEN = label(genai.TOKEN_TYPE)
_ERROR = label(genai.ERROR_TYPE)
CLIENT_LABELS = (_OP, _PROVIDER, _REQ, _RESP)
TOKEN_LABELS = (*CLIENT_LABELS, _TOKEN)
DURATION_LABELS = (*CLIENT_LABELS, _ERROR)
SERVER_LABELS = (_OP, _PROVIDER, _REQ, _RESP)


class GenAIClientMetrics:
    """``gen_ai.client.*`` for the model calls one process makes."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.token_usage = Histogram(
            TOKEN_USAGE,
            "gen_ai.client.token.usage: input and output tokens used, per operation",
            TOKEN_LABELS,
            buckets=TOKEN_BUCKETS,
            registry=registry,
        )
        self.operation_duration = Histogram(
            OPERATION_DURATION,
            "gen_ai.client.operation.duration: GenAI operation duration (error_type set when it failed)",
            DURATION_LABELS,
            buckets=DURATION_BUCKETS,
            registry=registry,
        )

    def record(
        self,
        *,
        request_model: str,
        response_model: str,
        seconds: float,
        input_tokens: int | None,
        output_tokens: int | None,
        error_type: str = "",
        provider: str = genai.PROVIDER_OPENAI,
    ) -> None:
        """One call: its duration always; token counts when the provider reported usage."""
        base = (genai.OP_CHAT, provider, request_model, response_model)
        self.operation_duration.labels(*base, error_type).observe(seconds)
        if input_tokens is not None:
            self.token_usage.labels(*base, genai.TOKEN_INPUT).observe(input_tokens)
        if output_tokens is not None:
            self.token_usage.labels(*base, genai.TOKEN_OUTPUT).observe(output_tokens)


class GenAIServerMetrics:
    """``gen_ai.server.*`` for the completions a process serves (the gateway, for streams)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.time_to_first_token = Histogram(
            TIME_TO_FIRST_TOKEN,
            "gen_ai.server.time_to_first_token: time to the first token of successful streamed responses",
            SERVER_LABELS,
            buckets=TTFT_BUCKETS,
            registry=registry,
        )
        self.time_per_output_token = Histogram(
            TIME_PER_OUTPUT_TOKEN,
            "gen_ai.server.time_per_output_token: time per output token after the first, successful streams",
            SERVER_LABELS,
            buckets=TPOT_BUCKETS,
            registry=registry,
        )

    def record_stream(
        self,
        *,
        request_model: str,
        response_model: str,
        ttft_seconds: float,
        per_token_seconds: float | None,
        provider: str = genai.PROVIDER_OPENAI,
    ) -> None:
        base = (genai.OP_CHAT, provider, request_model, response_model)
        self.time_to_first_token.labels(*base).observe(ttft_seconds)
        if per_token_seconds is not None:
            self.time_per_output_token.labels(*base).observe(per_token_seconds)
