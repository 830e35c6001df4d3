"""``stoa run DIR``: the manifests of DIR on this machine. PostgreSQL and RabbitMQ (started here unless
URLs are given), a model (embedded SmolLM2 unless --model-url), the Stoa gateway in front of it with the
ModelPolicy of DIR, every agent as N replica processes, and the transcript streamed as it is written."""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from stoa_agents.bus.broker import Bus
from stoa_agents.control import start_conversation
from stoa_agents.local import teardown
from stoa_agents.local.chaos import Chaos
from stoa_agents.local.fleet import Fleet
from stoa_agents.local.follow import follow
from stoa_agents.local.teardown import Teardown, started
from stoa_agents.local.wiring import agent_envs, plan_run
from stoa_agents.store.db import open_pool
from stoa_api.manifests import load_manifests


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


async def run_local(args: argparse.Namespace) -> int:
    plan = plan_run(load_manifests(args.directory))
    if isinstance(plan, str):
        print(f"{args.directory}: {plan}")
        return 2
    for note in plan.notes:
        print(f"Note: {note}", flush=True)
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="stoa-run-"))
    await asyncio.to_thread(work.mkdir, parents=True, exist_ok=True)
    async with Teardown() as owner:
        pg, mq, mdl = await asyncio.gather(
            teardown.postgres(owner, args.postgres_url),
            teardown.rabbitmq(owner, args.rabbitmq_url),
            teardown.model(owner, args.model_url, args.model_name, work),
            return_exceptions=True,
        )
        postgres_url, rabbitmq_url, (model_url, model_name) = started(pg), started(mq), started(mdl)
        via_gateway = bool(plan.policies) and not args.no_gateway
        gateway_url = (
            await teardown.gateway(owner, plan.policies, model_url, model_name, work) if via_gateway else None
        )
        db = await open_pool(postgres_url)
        owner.own("the database pool", db.close)
        bus = await Bus.connect(rabbitmq_url, name="stoa-run")
        owner.own("the broker connection", bus.close)
        envs = agent_envs(
            plan,
            args=args,
            gateway_url=gateway_url,
            model_url=model_url,
            default_model=model_name,
            rabbitmq_url=rabbitmq_url,
            postgres_url=postgres_url,
        )
        for name in plan.needed:
            await bus.declare_agent(name)
        replicas = args.replicas or max(plan.agents[n].replicas for n in plan.needed)
        fleet = Fleet(envs, replicas, work / "agents")
        owner.own_sync("the agent replicas", fleet.stop)
        await asyncio.to_thread(fleet.start)
        print(
            f"Agents: {', '.join(plan.needed)} x{replicas} replicas (logs in {work / 'agents'})", flush=True
        )
        begun = time.monotonic()
        for name, spec in plan.conversations.items():
            await start_conversation(db, bus, name, spec)
            print(f"\nConversation {name}: {spec.topic}\n", flush=True)
        return await follow(
            db,
            fleet,
            plan.conversations,
            chaos=Chaos(args.kill_active_every),
            started=begun,
            within_seconds=args.timeout,
            postgres_url=postgres_url,
        )
