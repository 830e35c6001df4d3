"""The ModelPolicy schema, the config file, and the small pure helpers."""

from __future__ import annotations

from pathlib import Path

import pytest

from stoa_gateway.config import ConfigError, load_gateway_config, parse_gateway_config
from stoa_gateway.costs import request_cost, seconds_to_utc_midnight, utc_day
from stoa_gateway.labels import BoundedLabels
from stoa_gateway.policy import GatewayConfig, ModelPolicySpec, Strategy, Target
from stoa_gateway.sse import SseDecoder
from stoa_gateway.tokens import estimate_input_tokens, estimate_tokens
from stoa_gateway.tracing import parse_traceparent, trace_for_request

EXAMPLE = """
policies:
  - name: chat
    spec:
      strategy: weighted
      targets:
        - name: openai-mini
          baseURL: https://api.openai.com/v1
          model: gpt-4o-mini
          apiKeySecretRef: {name: openai, key: api-key}
          weight: 3
          rpm: 500
          inputCostPer1k: 0.00015
          outputCostPer1k: 0.0006
        - name: local
          baseURL: http://vllm:8000/v1
          model: llama
          apiKeyEnv: LOCAL_KEY
      routes:
        - name: short
          match: {maxInputTokens: 200}
          targets: [openai-mini]
          fallbackTargets: [local]
      retry: {attempts: 2, retryOnStatuses: [429, 503]}
      circuitBreaker: {errorRateThreshold: 0.3, openSeconds: 10}
      rateLimit: {perAgent: {rpm: 60}, agents: [{agent: planner, tpm: 100000}]}
      guardrails:
        input: {blockedKeywords: [secret], maskPii: [email, card]}
        maxOutputTokens: 1024
      budget: {dailyLimitUSD: 25}
"""


def test_example_config_parses_with_camel_case(tmp_path: Path) -> None:
    path = tmp_path / "gw.yaml"
    path.write_text(EXAMPLE)
    config = load_gateway_config(path)
    spec = config.policy("chat")
    assert spec is not None
    assert spec.strategy is Strategy.WEIGHTED
    assert spec.targets[0].base_url == "https://api.openai.com/v1"
    assert spec.targets[0].input_cost_per_1k == 0.00015
    assert spec.targets[0].key_env_name() == "STOA_KEY_OPENAI_API_KEY"
    assert spec.targets[1].key_env_name() == "LOCAL_KEY"
    assert spec.rate_limit.for_agent("planner") is not None
    assert spec.rate_limit.for_agent("planner").tpm == 100000  # type: ignore[union-attr]
    assert spec.rate_limit.for_agent("other").rpm == 60  # type: ignore[union-attr]
    assert spec.budget is not None
    assert spec.budget.daily_limit_usd == 25
    dumped = config.model_dump(by_alias=True, exclude_defaults=True)
    assert GatewayConfig.model_validate(dumped) == config
    assert "baseURL" in dumped["policies"][0]["spec"]["targets"][0]


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("policies: [", "not valid YAML"),
        ("- 1", "top level must be a mapping"),
        ("policies: [{name: x, spec: {targets: []}}]", "targets"),
        ("policies: [{name: Bad_Name, spec: {targets: [{name: a, baseURL: 'http://a', model: m}]}}]", "name"),
        ("policies: [{name: x, spec: {targets: [{name: a, baseURL: 'ftp://a', model: m}]}}]", "baseURL"),
        (
            "policies: [{name: x, spec: {targets: [{name: a, baseURL: 'http://a', model: m, wieght: 2}]}}]",
            "wieght",
        ),
        (
            "policies: [{name: x, spec: {targets: [{name: a, baseURL: 'http://a', model: m}], "
            "routes: [{name: r, targets: [b]}]}}]",
            "unknown targets: b",
        ),
        (
            "policies: [{name: x, spec: {targets: [{name: a, baseURL: 'http://a', model: m}, "
            "{name: a, baseURL: 'http://b', model: m}]}}]",
            "duplicate target names: a",
        ),
        (
            "policies: [{name: x, spec: {targets: [{name: a, baseURL: 'http://a', model: m}], "
            "guardrails: {input: {blockedPatterns: ['(']}}}}]",
            "invalid regular expression",
        ),
        (
            "policies: [{name: x, spec: {targets: [{name: a, baseURL: 'http://a', model: m}], "
            "retry: {attempts: 0}}}]",
            "attempts",
        ),
    ],
)
def test_invalid_configs_say_what_is_wrong(text: str, error: str) -> None:
    with pytest.raises(ConfigError, match=error):
        parse_gateway_config(text.encode(), "gw.yaml")


def test_load_missing_file() -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_gateway_config("/nonexistent/gw.yaml")


def test_json_schema_is_crd_friendly() -> None:
    schema = ModelPolicySpec.model_json_schema(by_alias=True)
    target = schema["$defs"]["Target"]
    assert {"baseURL", "apiKeySecretRef", "apiKeyEnv", "inputCostPer1k", "timeoutSeconds"} <= set(
        target["properties"]
    )
    assert target["properties"]["weight"]["maximum"] == 10000
    assert target["additionalProperties"] is False
    assert schema["$defs"]["Strategy"]["enum"] == [
        "failover",
        "roundRobin",
        "weighted",
        "leastBusy",
        "lowestLatency",
    ]


def test_token_estimates_and_cost() -> None:
    assert [estimate_tokens(s) for s in ("", "a", "abcd", "abcde")] == [0, 1, 1, 2]
    messages = [
        {"role": "user", "content": "abcdefgh"},
        {"role": "user", "content": [{"type": "text", "text": "abc"}]},
    ]
    assert estimate_input_tokens(messages) == 3
    target = Target.model_validate(
        {"name": "t", "baseURL": "http://t", "model": "m", "inputCostPer1k": 1.0, "outputCostPer1k": 2.0}
    )
    assert request_cost(target, 1000, 500) == pytest.approx(2.0)
    assert utc_day(0) == "1970-01-01"
    assert seconds_to_utc_midnight(86400 - 30) == pytest.approx(30)


def test_bounded_labels() -> None:
    labels = BoundedLabels(limit=2)
    assert [labels.value(v) for v in ("a", "b", "c", "a", None, 'x"y')] == [
        "a",
        "b",
        "other",
        "a",
        "none",
        "other",
    ]


def test_sse_decoder() -> None:
    decoder = SseDecoder()
    lines = [b": comment\n", b'data: {"a":1}\n', b"\n", b"event: x\n", b"data: one\n", b"data:two\r\n", b"\n"]
    assert [e for e in (decoder.feed(line) for line in lines) if e is not None] == ['{"a":1}', "one\ntwo"]
    decoder.feed(b"data: [DONE]")
    assert decoder.flush() == "[DONE]"


def test_traceparent() -> None:
    incoming = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    ctx = trace_for_request(incoming, "1" * 32, "2" * 16)
    assert ctx.header() == "00-4bf92f3577b34da6a3ce929d0e0e4736-2222222222222222-01"
    assert trace_for_request("garbage", "1" * 32, "2" * 16).header() == f"00-{'1' * 32}-{'2' * 16}-01"
    assert parse_traceparent("00-00000000000000000000000000000000-00f067aa0ba902b7-01") is None


def test_sse_decoder_push_handles_any_split() -> None:
    raw = b'data: {"a":1}\n\ndata: two\r\n\n: ping\n\ndata: [DONE]\n\n'
    for size in (1, 3, 7, len(raw)):
        decoder = SseDecoder()
        events = [e for i in range(0, len(raw), size) for e in decoder.push(raw[i : i + size])]
        assert events == ['{"a":1}', "two", "[DONE]"]
