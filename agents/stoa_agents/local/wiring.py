"""What ``stoa run`` runs, decided from the manifests (pure): the agents a conversation needs, the gateway
config pointing every ModelPolicy at the local model, and each agent's environment from the one env
builder (``stoa_agents.envcontract``), as the operator's Deployment gets it."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any

from stoa_agents.envcontract import Wiring, agent_env, literal_env
from stoa_api.agent import AgentSpec
from stoa_api.conversation import ConversationSpec
from stoa_api.manifests import Manifest
from stoa_gateway.policy import ModelPolicySpec


@dataclass(frozen=True)
class LocalPlan:
    agents: dict[str, AgentSpec]
    policies: dict[str, ModelPolicySpec]
    conversations: dict[str, ConversationSpec]

    @property
    def needed(self) -> list[str]:
        """The agents the conversations name, sorted."""
        return sorted({p.agent_ref for c in self.conversations.values() for p in c.participants})


def plan_run(manifests: list[Manifest]) -> LocalPlan | str:
    """The plan, or what is wrong with the manifests."""
    agents = {m.name: m.spec for m in manifests if m.kind == "Agent" and isinstance(m.spec, AgentSpec)}
    policies = {
        m.name: m.spec for m in manifests if m.kind == "ModelPolicy" and isinstance(m.spec, ModelPolicySpec)
    }
    conversations = {
        m.name: m.spec for m in manifests if m.kind == "Conversation" and isinstance(m.spec, ConversationSpec)
    }
    if not conversations:
        return "no Conversation manifest found"
    for conv_name, conv in conversations.items():
        missing = [p.agent_ref for p in conv.participants if p.agent_ref not in agents]
        if missing:
            return f"Conversation {conv_name} names unknown agents: {', '.join(missing)}"
    return LocalPlan(agents, policies, conversations)


def local_gateway_config(policies: dict[str, ModelPolicySpec], base_url: str, model: str) -> dict[str, Any]:
    """The ModelPolicies with every target pointed at the local model."""
    entries = []
    for name, spec in policies.items():
        data = spec.model_dump(mode="json", by_alias=True, exclude_none=True)
        data["targets"] = [{**t, "baseURL": base_url, "model": model} for t in data["targets"]]
        for target in data["targets"]:
            target.pop("apiKeySecretRef", None)
            target.pop("apiKeyEnv", None)
        entries.append({"name": name, "spec": data})
    return {"policies": entries}


def _direct_pricing(policies: dict[str, ModelPolicySpec], agent: AgentSpec) -> tuple[float, float] | None:
    """Without a gateway the agent calls the local model directly: its ModelPolicy prices that call only
    when every target has the same price (any of them could have been the one); else None (unknown)."""
    if agent.model_policy_ref is None or agent.model_policy_ref.name not in policies:
        return None
    prices = {
        (t.input_cost_per_1k, t.output_cost_per_1k) for t in policies[agent.model_policy_ref.name].targets
    }
    return prices.pop() if len(prices) == 1 else None


def agent_envs(
    plan: LocalPlan,
    *,
    args: argparse.Namespace,
    gateway_url: str | None,
    model_url: str,
    default_model: str,
    rabbitmq_url: str,
    postgres_url: str,
) -> dict[str, dict[str, str]]:
    """Each needed agent's environment: agents with a ModelPolicy call the gateway by policy name (which
    reports each call's cost), others the model at ``model_url`` directly."""
    wiring = Wiring(
        rabbitmq_url=rabbitmq_url,
        postgres_dsn=postgres_url,
        gateway_url=gateway_url,
        model_url=model_url,
        default_model=default_model,
        metrics_port_number=0,
    )
    envs = {}
    for name in plan.needed:
        spec = plan.agents[name]
        tuning = {
            "STOA_MODEL_MAX_TOKENS": str(args.max_tokens),
            "STOA_HEARTBEAT_SECONDS": "5",
            "STOA_MODEL_TIMEOUT_SECONDS": "120",
        }
        direct = gateway_url is None or spec.model_policy_ref is None
        prices = _direct_pricing(plan.policies, spec) if direct else None
        if prices is not None:
            tuning["STOA_MODEL_INPUT_COST_PER_1K"] = str(prices[0])
            tuning["STOA_MODEL_OUTPUT_COST_PER_1K"] = str(prices[1])
        if args.history_turns is not None:
            tuning["STOA_HISTORY_TURNS"] = str(args.history_turns)
        if args.model_api_key_env and direct:
            tuning["STOA_MODEL_API_KEY_ENV"] = args.model_api_key_env
        envs[name] = literal_env(agent_env(name, spec, wiring, tuning))
    return envs
