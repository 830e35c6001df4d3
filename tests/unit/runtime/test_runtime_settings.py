"""Settings from the environment, the env contract, spec models and manifests."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from stoa_agents.envcontract import Wiring, agent_env, agent_model_name, literal_env
from stoa_agents.settings import AgentSettings
from stoa_agents.turns.policy import Turn
from stoa_agents.turns.prompts import TurnContext, build_messages, memory_note
from stoa_api.agent import AgentSpec
from stoa_api.conversation import ConversationSpec
from stoa_api.manifests import ManifestError, load_manifests, parse_manifests
from stoa_testing.faults import EnvFaults

ROOT = Path(__file__).resolve().parents[3]


def agent_spec(**overrides: object) -> AgentSpec:
    data: dict[str, object] = {
        "role": "pro",
        "persona": "You argue for AI.",
        "modelPolicyRef": {"name": "small"},
    }
    data.update(overrides)
    return AgentSpec.model_validate(data)


def test_env_contract_round_trips_into_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    env = agent_env(
        "team-a",
        agent_spec(env=[{"name": "STOA_PREFETCH", "value": "2"}], fallbackPolicies=[{"name": "big"}]),
        Wiring(
            rabbitmq_url="amqp://r/",
            postgres_dsn="postgresql://p/db",
            gateway_url="http://gw:8080/v1",
            pod_name="team-a-7d9-x",
        ),
    )
    for key, value in literal_env(env).items():
        monkeypatch.setenv(key, value)
    settings = AgentSettings()
    assert settings.agent_name == "team-a"
    assert settings.pod_name == "team-a-7d9-x"
    assert settings.model_name == "small"
    assert settings.prefetch == 2
    assert settings.model_fallbacks == "big"
    assert settings.metrics_port_number == 9090
    assert not any(name.startswith("test_") for name in AgentSettings.model_fields)  # no faults built in


def test_settings_reject_bad_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STOA_AGENT_NAME", "Not_A_Name")
    with pytest.raises(ValidationError):
        AgentSettings()
    monkeypatch.setenv("STOA_AGENT_NAME", "ok")
    monkeypatch.setenv("STOA_TEST_CRASH_AT", "after_commit,nowhere")
    with pytest.raises(ValueError, match="STOA_TEST_CRASH_AT"):
        AgentSettings()  # fault injection is not a runtime setting: only the test tooling reads it
    environ = {"STOA_AGENT_NAME": "ok", "STOA_TEST_CRASH_AT": "after_commit,nowhere"}
    with pytest.raises(ValueError, match="nowhere"):
        EnvFaults.take(environ)
    environ = {
        "STOA_AGENT_NAME": "ok",
        "STOA_TEST_CRASH_AT": "after_commit",
        "STOA_TEST_FAIL_CONVERSATION": "x",
    }
    faults = EnvFaults.take(environ)
    assert faults.crash_at == frozenset({"after_commit"})
    assert environ == {"STOA_AGENT_NAME": "ok"}  # what the runtime then reads


def test_model_name_resolution() -> None:
    assert agent_model_name(agent_spec(), "x") == "small"
    assert agent_model_name(agent_spec(model="big"), "x") == "small/big"  # pins the policy's target "big"
    assert agent_model_name(agent_spec(model="big"), "x", via_gateway=False) == "x"  # direct: the endpoint's


def test_agent_spec_defaults_and_bounds() -> None:
    spec = agent_spec()
    assert spec.replicas == 2
    assert spec.memory.enabled
    with pytest.raises(ValidationError):
        agent_spec(replicas=6)
    with pytest.raises(ValidationError):
        agent_spec(unknownField=1)
    by_name = AgentSpec.model_validate({"role": "r", "persona": "p", "model_policy_ref": {"name": "p"}})
    assert by_name.model_policy_ref is not None  # populate_by_name


def test_conversation_spec_validation() -> None:
    base = {"topic": "t", "participants": [{"agentRef": "a"}, {"agentRef": "b"}]}
    assert ConversationSpec.model_validate(base).max_turns == 20
    with pytest.raises(ValidationError, match="listed twice"):
        ConversationSpec.model_validate({**base, "participants": [{"agentRef": "a"}, {"agentRef": "a"}]})
    with pytest.raises(ValidationError, match="not a participant"):
        ConversationSpec.model_validate({**base, "moderator": "z"})
    with pytest.raises(ValidationError):
        ConversationSpec.model_validate({**base, "maxTurns": 201})


def test_debate_example_loads() -> None:
    manifests = load_manifests(ROOT / "examples" / "debate")
    kinds = sorted((m.kind, m.name) for m in manifests)
    assert ("Conversation", "ai-jobs-debate") in kinds
    assert ("ModelPolicy", "debate-small") in kinds
    assert sum(1 for kind, _ in kinds if kind == "Agent") == 3


def test_manifest_errors_name_the_document() -> None:
    with pytest.raises(ManifestError, match="unknown kind 'Pod'"):
        parse_manifests("apiVersion: v1\nkind: Pod\nmetadata: {name: x}\n", "f.yaml")
    with pytest.raises(ManifestError, match=r"f\.yaml#1: Agent/a"):
        parse_manifests(
            "---\napiVersion: stoa.dev/v1alpha1\nkind: Conversation\nmetadata: {name: c}\n"
            "spec: {topic: t, participants: [{agentRef: a}]}\n"
            "---\napiVersion: stoa.dev/v1alpha1\nkind: Agent\nmetadata: {name: a}\nspec: {role: x}\n",
            "f.yaml",
        )


def test_prompt_states_the_side_and_the_verdict_format() -> None:
    history = [Turn(1, "mod", "Welcome"), Turn(2, "team-a", "AI creates jobs. More text.")]
    ctx = TurnContext(
        agent="team-b",
        role="con",
        persona="You are Ben.",
        topic="AI and jobs",
        seq=3,
        turn_limit=7,
        history=history,
        memory=["AI removes clerks"],
    )
    messages = build_messages(ctx)
    assert messages[0] == {"role": "system", "content": "You are Ben.\nDebate topic: AI and jobs"}
    assert messages[1]["content"] == "mod said: Welcome"
    last = messages[-1]["content"]
    assert last.startswith("team-a said: AI creates jobs. More text.")
    assert "AGAINST" in last
    assert "AI removes clerks" in last
    claim = build_messages(
        TurnContext(
            agent="team-b",
            role="con",
            persona="You are Ben. Your position: AI destroys jobs. Be brief.",
            topic="t",
            seq=3,
            turn_limit=7,
            history=[],
            memory=[],
        )
    )
    assert "argue that AI destroys jobs. Give one concrete example." in claim[-1]["content"]
    own = build_messages(
        TurnContext(
            agent="team-a",
            role="pro",
            persona="p",
            topic="t",
            seq=3,
            turn_limit=7,
            history=history,
            memory=[],
        )
    )
    assert own[-2] == {"role": "assistant", "content": "AI creates jobs. More text."}
    assert own[-1]["role"] == "user"
    moderator = build_messages(
        TurnContext(
            agent="mod",
            role="moderator",
            persona="p",
            topic="t",
            seq=4,
            turn_limit=7,
            history=history,
            memory=[],
        )
    )
    assert "VERDICT: CONTINUE" in moderator[-1]["content"]
    closing = build_messages(
        TurnContext(
            agent="mod",
            role="moderator",
            persona="p",
            topic="t",
            seq=7,
            turn_limit=7,
            history=history,
            memory=[],
        )
    )
    assert "final turn" in closing[-1]["content"]
    assert memory_note("First point. Second point.") == "First point"
