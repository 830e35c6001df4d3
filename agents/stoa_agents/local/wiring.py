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

# Fields a cluster reads that mean nothing for local processes (stoa run says so when they are set).
CLUSTER_ONLY_AGENT_FIELDS = ("image", "resources", "slo", "probe")


@dataclass(frozen=True)
class LocalPlan:
    agents: dict[str, AgentSpec]
    policies: dict[str, ModelPolicySpec]
    conversations: dict[str, ConversationSpec]  # as stored: participant roles defaulted from the Agents
    notes: tuple[str, ...] = ()  # fields set in the manifests that stoa run does not use

    @property
    def needed(self) -> list[str]:
        """The agents the conversations name, sorted."""
        return sorted({p.agent_ref for c in self.conversations.values() for p in c.participants})


def _policy_problem(name: str, agent: AgentSpec, policies: dict[str, ModelPolicySpec]) -> str | None:
    """What the operator reports as the Agent's MissingReference, or None."""
    for ref in [agent.model_policy_ref, *agent.fallback_policies]:
        if ref is not None and ref.name not in policies:
            return f"Agent {name}: ModelPolicy {ref.name} not found"
    policy = policies[agent.policy_name()]
    if agent.model is not None and policy.target(agent.model) is None:
        targets = ", ".join(t.name for t in policy.targets)
        return (
            f"Agent {name}: ModelPolicy {agent.policy_name()} has no target {agent.model}"
            f" (spec.model pins a target by name; its targets: {targets})"
        )
    return None


def plan_run(manifests: list[Manifest]) -> LocalPlan | str:
    """The plan, or what is wrong with the manifests (what the operator would report on a cluster)."""
    agents = {m.name: m.spec for m in manifests if m.kind == "Agent" and isinstance(m.spec, AgentSpec)}
    policies = {
        m.name: m.spec for m in manifests if m.kind == "ModelPolicy" and isinstance(m.spec, ModelPolicySpec)
    }
    specs = {
        m.name: m.spec for m in manifests if m.kind == "Conversation" and isinstance(m.spec, ConversationSpec)
    }
    if not specs:
        return "no Conversation manifest found"
    conversations = {}
    for conv_name, conv in specs.items():
        missing = [p.agent_ref for p in conv.participants if p.agent_ref not in agents]
        if missing:
            return f"Conversation {conv_name} names unknown agents: {', '.join(missing)}"
        if conv.suspend or conv.stop:  # on a cluster: a later patch resumes or has stopped it
            field = "suspend" if conv.suspend else "stop"
            return (
                f"Conversation {conv_name} has {field}: true, which stoa run cannot act on later: "
                "set it to false"
            )
        try:
            conversations[conv_name] = conv.with_agent_roles({n: a.role for n, a in agents.items()})
        except ValueError as exc:
            return f"Conversation {conv_name}: {exc}"
    needed = sorted({p.agent_ref for c in conversations.values() for p in c.participants})
    notes = []
    for name in needed:
        problem = _policy_problem(name, agents[name], policies)
        if problem:
            return problem
        unused = [f for f in CLUSTER_ONLY_AGENT_FIELDS if f in agents[name].model_fields_set]
        if unused:
            notes.append(f"Agent {name}: {', '.join(unused)} apply on a cluster only")
    return LocalPlan(agents, policies, conversations, tuple(notes))


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
    when every target it could use has the same price (the pinned one, else any); else None (unknown)."""
    if agent.model_policy_ref is None or agent.model_policy_ref.name not in policies:
        return None
    targets = policies[agent.model_policy_ref.name].targets
    if agent.model is not None:
        targets = [t for t in targets if t.name == agent.model]
    prices = {(t.input_cost_per_1k, t.output_cost_per_1k) for t in targets}
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
