"""The table of invalid manifests and the message the API server answers (also in docs/operator.md)."""

from __future__ import annotations

import copy
import json
from typing import Any

POLICY: dict[str, Any] = {
    "apiVersion": "stoa.dev/v1alpha1",
    "kind": "ModelPolicy",
    "metadata": {"name": "bad"},
    "spec": {"targets": [{"name": "a", "baseURL": "https://a.example/v1", "model": "m"}]},
}
AGENT: dict[str, Any] = {
    "apiVersion": "stoa.dev/v1alpha1",
    "kind": "Agent",
    "metadata": {"name": "bad"},
    "spec": {"role": "pro", "persona": "p", "modelPolicyRef": {"name": "x"}},
}
CONVERSATION: dict[str, Any] = {
    "apiVersion": "stoa.dev/v1alpha1",
    "kind": "Conversation",
    "metadata": {"name": "bad"},
    "spec": {"topic": "t", "participants": [{"agentRef": "a"}, {"agentRef": "b"}]},
}
TARGET_B = {"name": "b", "baseURL": "https://b.example/v1", "model": "m"}

# (case, base, spec changes (None deletes a key), substring of the API server's message)
BAD_INPUTS: list[tuple[str, dict[str, Any], dict[str, Any], str]] = [
    (
        "policy without targets",
        POLICY,
        {"targets": []},
        "spec.targets: Invalid value: 0: spec.targets in body should have at least 1 items",
    ),
    ("duplicate target names", POLICY, {"targets": [TARGET_B, TARGET_B]}, "target names must be unique"),
    (
        "route names an unknown target",
        POLICY,
        {"routes": [{"name": "r", "targets": ["zzz"]}]},
        "every route target must name one of spec.targets",
    ),
    (
        "fallback target not among targets",
        POLICY,
        {"routes": [{"name": "r", "targets": ["a"], "fallbackTargets": ["zzz"]}]},
        "every fallback target must name one of spec.targets",
    ),
    (
        "weighted strategy with all weights 0",
        POLICY,
        {"strategy": "weighted", "targets": [{**TARGET_B, "weight": 0}]},
        "strategy weighted needs at least one target with weight > 0",
    ),
    (
        "negative weight",
        POLICY,
        {"targets": [{**TARGET_B, "weight": -1}]},
        "should be greater than or equal to 0",
    ),
    ("unknown strategy", POLICY, {"strategy": "random"}, 'Unsupported value: "random"'),
    (
        "baseURL not http(s)",
        POLICY,
        {"targets": [{**TARGET_B, "baseURL": "ftp://x"}]},
        "spec.targets[0].baseURL in body should match '^https?://'",
    ),
    (
        "retry backoff max < base",
        POLICY,
        {"retry": {"baseBackoffSeconds": 5, "maxBackoffSeconds": 1}},
        "maxBackoffSeconds must be >= baseBackoffSeconds",
    ),
    (
        "retry status not HTTP",
        POLICY,
        {"retry": {"retryOnStatuses": [700]}},
        "must be HTTP statuses (100-599)",
    ),
    ("budget of 0 USD", POLICY, {"budget": {"dailyLimitUSD": 0}}, "should be greater than 0"),
    (
        "apiKeyEnv on a cluster",
        POLICY,
        {"targets": [{**TARGET_B, "apiKeyEnv": "OPENAI_KEY"}]},
        "apiKeyEnv is for `stoa gateway --config` outside Kubernetes",
    ),
    ("unknown field", POLICY, {"fallbacks": ["a"]}, 'unknown field "spec.fallbacks"'),
    (
        "agent without a model",
        AGENT,
        {"modelPolicyRef": None},
        "an Agent needs spec.modelPolicyRef: name the ModelPolicy",
    ),
    (
        "model without a policy",
        AGENT,
        {"modelPolicyRef": None, "model": "gpt-4o-mini"},
        "spec.model alone names no endpoint (it picks one of the policy's targets)",
    ),
    (
        "agent replicas 0",
        AGENT,
        {"replicas": 0},
        "spec.replicas in body should be greater than or equal to 1",
    ),
    ("agent replicas 9", AGENT, {"replicas": 9}, "spec.replicas in body should be less than or equal to 5"),
    (
        "fallback repeats the primary policy",
        AGENT,
        {"fallbackPolicies": [{"name": "x"}]},
        "fallbackPolicies must not repeat modelPolicyRef",
    ),
    (
        "env overrides STOA_*",
        AGENT,
        {"env": [{"name": "STOA_MODEL_NAME", "value": "x"}]},
        "env must not set the STOA_* variables the operator derives",
    ),
    (
        "env sets an unknown STOA_*",
        AGENT,
        {"env": [{"name": "STOA_MODEL_FALLBACK_POLICIES", "value": "x"}]},
        "env STOA_* names must be agent runtime settings",
    ),
    (
        "cpu request above limit",
        AGENT,
        {"resources": {"requests": {"cpu": "2"}, "limits": {"cpu": "1"}}},
        "requests.cpu must not exceed limits.cpu",
    ),
    (
        "memory not a quantity",
        AGENT,
        {"resources": {"requests": {"memory": "lots"}}},
        "cpu and memory must be Kubernetes quantities",
    ),
    ("persona missing", AGENT, {"persona": None}, "spec.persona: Required value"),
    (
        "maxTurns 0",
        CONVERSATION,
        {"maxTurns": 0},
        "spec.maxTurns in body should be greater than or equal to 1",
    ),
    (
        "maxTurns 1000",
        CONVERSATION,
        {"maxTurns": 1000},
        "spec.maxTurns in body should be less than or equal to 200",
    ),
    (
        "moderator not a participant",
        CONVERSATION,
        {"moderator": "zed"},
        "moderator must be one of the participants",
    ),
    (
        "participant listed twice",
        CONVERSATION,
        {"participants": [{"agentRef": "a"}, {"agentRef": "a"}]},
        "participants must name each agent once",
    ),
    (
        "moderatorSelected without moderator",
        CONVERSATION,
        {"turnPolicy": {"type": "moderatorSelected"}},
        "turnPolicy moderatorSelected needs a moderator",
    ),
    (
        "two moderators",
        CONVERSATION,
        {"participants": [{"agentRef": "a", "role": "moderator"}, {"agentRef": "b", "role": "moderator"}]},
        "at most one participant may have role moderator",
    ),
    (
        "unknown participant role",
        CONVERSATION,
        {"participants": [{"agentRef": "a", "role": "judge"}]},
        'Unsupported value: "judge"',
    ),
    (
        "team (removed: nothing read it)",
        CONVERSATION,
        {"participants": [{"agentRef": "a", "team": "A"}]},
        'unknown field "spec.participants[0].team"',
    ),
    (
        "agentRef not a DNS name",
        CONVERSATION,
        {"participants": [{"agentRef": "Not_OK"}]},
        "should match '^[a-z0-9]([-a-z0-9]*[a-z0-9])?$'",
    ),
]

# Updates rejected by transition rules: (case, base, change, message)
BAD_UPDATES: list[tuple[str, dict[str, Any], dict[str, Any], str]] = [
    ("conversation topic changed", CONVERSATION, {"topic": "another"}, "topic is immutable"),
    (
        "conversation participants changed",
        CONVERSATION,
        {"participants": [{"agentRef": "a"}]},
        "participants are immutable",
    ),
]


def manifest(base: dict[str, Any], changes: dict[str, Any], name: str) -> dict[str, Any]:
    body = copy.deepcopy(base)
    body["metadata"]["name"] = name
    for key, value in changes.items():
        if value is None:
            body["spec"].pop(key, None)
        else:
            body["spec"][key] = value
    return body


def _code(text: str) -> str:
    return f"``{text}``" if "`" in text else f"`{text}`"


def markdown_table() -> str:
    """The table of docs/operator.md "Invalid inputs" (a unit test keeps the two equal):
    ``python -m tests.e2e.operator.invalid_inputs`` prints it."""

    def changes_text(changes: dict[str, Any]) -> str:
        return ", ".join(
            _code(f"{k}: (removed)" if v is None else f"{k}: {json.dumps(v)}") for k, v in changes.items()
        )

    lines = ["| # | Kind | Bad input | API server message contains |", "|---|---|---|---|"]
    rows = [(c, b, ch, m, "") for c, b, ch, m in BAD_INPUTS] + [
        (c, b, ch, m, " (update)") for c, b, ch, m in BAD_UPDATES
    ]
    for number, (case, base, changes, message, how) in enumerate(rows, start=1):
        lines.append(
            f"| {number} | {base['kind']} | {case}{how}: {changes_text(changes)} | {_code(message)} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown_table())
