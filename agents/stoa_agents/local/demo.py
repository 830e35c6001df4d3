"""``stoa run DIR``: the manifests of DIR on this machine. PostgreSQL and RabbitMQ (started here unless
URLs are given), a model (embedded SmolLM2 unless --model-url), the Stoa gateway in front of it with the
ModelPolicy of DIR, every agent as N replica processes, and the transcript streamed as it is written."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import tempfile
import time
from pathlib import Path
from typing import Any

import asyncpg
import yaml

from stoa_agents.bus.broker import Bus
from stoa_agents.control import agent_status, conversation_status, start_conversation
from stoa_agents.envcontract import Wiring, agent_env, literal_env
from stoa_agents.local.embedded import MODEL_ALIAS, EmbeddedModel, start_embedded_model
from stoa_agents.local.fleet import Fleet
from stoa_agents.local.transcript import COLORS, format_turn
from stoa_agents.store import repo
from stoa_agents.store.db import open_pool
from stoa_agents.turns.policy import TERMINAL_PHASES, speaker_for
from stoa_api.agent import AgentSpec
from stoa_api.conversation import ConversationSpec
from stoa_api.manifests import Manifest, load_manifests
from stoa_devenv.postgres import PostgresServer
from stoa_devenv.rabbitmq import RabbitMQServer
from stoa_gateway.server import start_gateway


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="stoa run", description=__doc__)
    parser.add_argument(
        "directory", help="directory (or file) with Agent, ModelPolicy and Conversation manifests"
    )
    parser.add_argument("--postgres-url", help="use this PostgreSQL instead of starting one")
    parser.add_argument("--rabbitmq-url", help="use this RabbitMQ instead of starting one")
    parser.add_argument(
        "--model-url", help="OpenAI-compatible base URL (Ollama, vLLM, OpenAI) instead of SmolLM2"
    )
    parser.add_argument("--model-name", help="model name at --model-url")
    parser.add_argument("--model-api-key-env", help="env var holding the API key for --model-url")
    parser.add_argument("--no-gateway", action="store_true", help="agents call the model directly")
    parser.add_argument(
        "--replicas", type=int, default=None, help="replicas per agent (default: the Agent spec)"
    )
    parser.add_argument(
        "--kill-active-every",
        type=int,
        default=0,
        metavar="N",
        help="chaos: kill -9 the active replica of the speaking agent every N turns",
    )
    parser.add_argument("--max-tokens", type=int, default=80, help="max tokens per turn")
    parser.add_argument(
        "--history-turns", type=int, help="recent turns shown to each speaker (default: manifests)"
    )
    parser.add_argument("--timeout", type=float, default=900.0, help="give up after this many seconds")
    parser.add_argument("--work-dir", help="where logs go (default: a new temporary directory)")
    return parser


def _split(
    manifests: list[Manifest],
) -> tuple[dict[str, AgentSpec], dict[str, Any], dict[str, ConversationSpec]]:
    agents = {m.name: m.spec for m in manifests if m.kind == "Agent" and isinstance(m.spec, AgentSpec)}
    policies = {m.name: m.spec for m in manifests if m.kind == "ModelPolicy"}
    conversations = {
        m.name: m.spec for m in manifests if m.kind == "Conversation" and isinstance(m.spec, ConversationSpec)
    }
    return agents, policies, conversations


def local_gateway_config(policies: dict[str, Any], base_url: str, model: str) -> dict[str, Any]:
    """The ModelPolicies with every target pointed at the local model (pure)."""
    entries = []
    for name, spec in policies.items():
        data = spec.model_dump(mode="json", by_alias=True, exclude_none=True)
        data["targets"] = [{**t, "baseURL": base_url, "model": model} for t in data["targets"]]
        for target in data["targets"]:
            target.pop("apiKeySecretRef", None)
            target.pop("apiKeyEnv", None)
        entries.append({"name": name, "spec": data})
    return {"policies": entries}


def _pricing(policies: dict[str, Any], agent: AgentSpec) -> tuple[float, float]:
    if agent.model_policy_ref is None or agent.model_policy_ref.name not in policies:
        return 0.0, 0.0
    target = policies[agent.model_policy_ref.name].targets[0]
    return float(target.input_cost_per_1k), float(target.output_cost_per_1k)


class Services:
    """PostgreSQL/RabbitMQ started here (when no URLs were given), torn down at the end."""

    def __init__(self) -> None:
        self.started: list[Any] = []

    async def postgres(self, url: str | None) -> str:
        if url:
            return url
        print("Starting PostgreSQL ...", flush=True)
        server = await asyncio.to_thread(lambda: PostgresServer(fsync=False).start())
        self.started.append(server)
        return server.dsn

    async def rabbitmq(self, url: str | None) -> str:
        if url:
            return url
        print("Starting RabbitMQ (~10 s) ...", flush=True)
        server = await asyncio.to_thread(lambda: RabbitMQServer().start())
        self.started.append(server)
        return server.url

    def destroy(self) -> None:
        for server in reversed(self.started):
            with contextlib.suppress(Exception):
                server.destroy()


def _agent_envs(
    agents: dict[str, AgentSpec],
    policies: dict[str, Any],
    needed: list[str],
    *,
    args: argparse.Namespace,
    gateway_url: str | None,
    model_url: str,
    default_model: str,
    rabbitmq_url: str,
    postgres_url: str,
) -> dict[str, dict[str, str]]:
    """Each agent's environment from the one env builder (as the operator's Deployment): agents with a
    ModelPolicy call the gateway by policy name, others the model at ``model_url`` directly."""
    wiring = Wiring(
        rabbitmq_url=rabbitmq_url,
        postgres_dsn=postgres_url,
        gateway_url=gateway_url,
        model_url=model_url,
        default_model=default_model,
        metrics_port_number=0,
    )
    envs = {}
    for name in needed:
        spec = agents[name]
        price_in, price_out = _pricing(policies, spec)
        tuning = {
            "STOA_MODEL_MAX_TOKENS": str(args.max_tokens),
            "STOA_MODEL_INPUT_COST_PER_1K": str(price_in),
            "STOA_MODEL_OUTPUT_COST_PER_1K": str(price_out),
            "STOA_HEARTBEAT_SECONDS": "5",
            "STOA_MODEL_TIMEOUT_SECONDS": "120",
        }
        if args.history_turns is not None:
            tuning["STOA_HISTORY_TURNS"] = str(args.history_turns)
        if args.model_api_key_env and (gateway_url is None or spec.model_policy_ref is None):
            tuning["STOA_MODEL_API_KEY_ENV"] = args.model_api_key_env
        envs[name] = literal_env(agent_env(name, spec, wiring, tuning))
    return envs


def _validate(conversations: dict[str, ConversationSpec], agents: dict[str, AgentSpec]) -> str | None:
    if not conversations:
        return "no Conversation manifest found"
    for conv_name, conv in conversations.items():
        missing = [p.agent_ref for p in conv.participants if p.agent_ref not in agents]
        if missing:
            return f"Conversation {conv_name} names unknown agents: {', '.join(missing)}"
    return None


class LocalRun:
    """Everything ``stoa run`` starts, torn down in reverse order."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.services = Services()
        self.embedded: EmbeddedModel | None = None
        self.gateway: Any = None
        self.fleet: Fleet | None = None
        self.db: asyncpg.Pool | None = None
        self.bus: Bus | None = None

    async def model(self, args: argparse.Namespace) -> tuple[str, str]:
        if args.model_url:
            return args.model_url, args.model_name or "default"
        print("Starting the embedded model SmolLM2-135M (llama.cpp) ...", flush=True)
        self.embedded = await asyncio.to_thread(start_embedded_model, self.work / "model.log")
        return self.embedded.base_url, MODEL_ALIAS

    async def gateway_url(self, policies: dict[str, Any], model_url: str, model_name: str) -> str:
        config = self.work / "gateway.yaml"
        await asyncio.to_thread(
            config.write_text, yaml.safe_dump(local_gateway_config(policies, model_url, model_name))
        )
        self.gateway = await start_gateway(config)
        print(f"Gateway {self.gateway.url} -> {model_url} (ModelPolicies: {', '.join(policies)})", flush=True)
        return str(self.gateway.base_url)

    async def close(self) -> None:
        if self.fleet is not None:
            await asyncio.to_thread(self.fleet.stop)
        if self.bus is not None:
            await self.bus.close()
        if self.db is not None:
            await self.db.close()
        if self.gateway is not None:
            await self.gateway.close()
        if self.embedded is not None:
            self.embedded.stop()
        await asyncio.to_thread(self.services.destroy)


async def run_local(args: argparse.Namespace) -> int:
    manifests = load_manifests(args.directory)
    agents, policies, conversations = _split(manifests)
    problem = _validate(conversations, agents)
    if problem:
        print(f"{args.directory}: {problem}")
        return 2
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="stoa-run-"))
    await asyncio.to_thread(work.mkdir, parents=True, exist_ok=True)
    run = LocalRun(work)
    try:
        pg_task = asyncio.create_task(run.services.postgres(args.postgres_url))
        mq_task = asyncio.create_task(run.services.rabbitmq(args.rabbitmq_url))
        model_url, model_name = await run.model(args)
        postgres_url, rabbitmq_url = await pg_task, await mq_task
        via_gateway = bool(policies) and not args.no_gateway
        gateway_url = await run.gateway_url(policies, model_url, model_name) if via_gateway else None
        run.db = await open_pool(postgres_url)
        run.bus = await Bus.connect(rabbitmq_url, name="stoa-run")
        needed = sorted({p.agent_ref for c in conversations.values() for p in c.participants})
        envs = _agent_envs(
            agents,
            policies,
            needed,
            args=args,
            gateway_url=gateway_url,
            model_url=model_url,
            default_model=model_name,
            rabbitmq_url=rabbitmq_url,
            postgres_url=postgres_url,
        )
        for name in needed:
            await run.bus.declare_agent(name)
        replicas = args.replicas or max(agents[n].replicas for n in needed)
        run.fleet = Fleet(envs, replicas, work / "agents")
        await asyncio.to_thread(run.fleet.start)
        print(f"Agents: {', '.join(needed)} x{replicas} replicas (logs in {work / 'agents'})", flush=True)
        started = time.monotonic()
        for name, spec in conversations.items():
            await start_conversation(run.db, run.bus, name, spec)
            print(f"\nConversation {name}: {spec.topic}\n", flush=True)
        return await _follow(
            run.db, run.fleet, conversations, args=args, started=started, postgres_url=postgres_url
        )
    finally:
        await run.close()


async def _follow(
    db: asyncpg.Pool,
    fleet: Fleet,
    conversations: dict[str, ConversationSpec],
    *,
    args: argparse.Namespace,
    started: float,
    postgres_url: str,
) -> int:
    seen: dict[str, int] = dict.fromkeys(conversations, 0)
    colors: dict[str, str] = {}
    kills = 0
    last_kill_turns = 0
    deadline = started + args.timeout
    while True:
        for replica in fleet.supervise():
            print(f"      (restarted {replica.agent} as {replica.pod})", flush=True)
        done = True
        total_turns = 0
        for name, spec in conversations.items():
            status = await conversation_status(db, name)
            if status is None:
                done = False
                continue
            for turn in await repo.load_transcript(db, status.id, seen[name]):
                color = colors.setdefault(turn.speaker, COLORS[len(colors) % len(COLORS)])
                print(format_turn(turn, color), flush=True)
                seen[name] = turn.seq
            total_turns += status.turns
            if status.phase not in TERMINAL_PHASES:
                done = False
                if args.kill_active_every and total_turns - last_kill_turns >= args.kill_active_every:
                    conv = await repo.find_conversation(db, name)
                    if conv is not None:
                        speaker = speaker_for(spec, conv.next_seq, await repo.load_turns(db, conv.id))
                        active = (await agent_status(db, speaker)).active_pod
                        if active and fleet.kill(active):
                            kills += 1
                            last_kill_turns = total_turns
                            print(
                                f"      (chaos: kill -9 {active}, the active replica of {speaker})",
                                flush=True,
                            )
        if done:
            break
        if time.monotonic() > deadline:
            print(f"Timed out after {args.timeout:.0f}s")
            return 1
        await asyncio.sleep(0.2)
    elapsed = time.monotonic() - started
    return await _summary(
        db, conversations, elapsed=elapsed, kills=kills, fleet=fleet, postgres_url=postgres_url
    )


async def _summary(
    db: asyncpg.Pool,
    conversations: dict[str, ConversationSpec],
    *,
    elapsed: float,
    kills: int,
    fleet: Fleet,
    postgres_url: str,
) -> int:
    print("\n" + "=" * 72)
    failed = False
    agents = sorted({p.agent_ref for c in conversations.values() for p in c.participants})
    for name in conversations:
        status = await conversation_status(db, name)
        assert status is not None
        failed = failed or status.phase.value == "Failed"
        print(f"Conversation {name}: {status.phase.value} - {status.reason}")
        print(
            f"  turns {status.turns}, tokens in/out {status.tokens_in}/{status.tokens_out}, "
            f"cost ${status.cost_usd:.6f}, time {elapsed:.1f}s"
        )
        for agent, share in status.agents.items():
            print(f"  {agent}: {share.turns} turns, {share.tokens_out} tokens out, ${share.cost_usd:.6f}")
    takeovers = 0
    for agent in agents:
        st = await agent_status(db, agent)
        takeovers += st.takeovers
        print(f"  {agent}: active pod {st.active_pod} (takeovers {st.takeovers})")
    print(f"Takeovers {takeovers}, kills {kills}, replica restarts {fleet.restarts}")
    print(
        f"Transcript later: stoa transcript {' | '.join(conversations)} --postgres-url {postgres_url}"
        " (this run's services are removed on exit unless you passed --postgres-url)"
    )
    return 1 if failed else 0
