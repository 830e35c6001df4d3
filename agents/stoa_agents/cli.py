"""Entry points for ``stoa agent``, ``stoa run`` and ``stoa transcript`` (each takes its own argv)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

from pydantic import ValidationError


def agent_main(argv: Sequence[str]) -> int:
    """``stoa agent``: run one agent replica, configured only by ``STOA_*`` environment variables."""
    parser = argparse.ArgumentParser(
        prog="stoa agent",
        description="Run one agent replica (configuration: STOA_* env, see docs/runtime.md)",
    )
    parser.parse_args(list(argv))
    # Each subcommand imports only what it runs (`stoa agent` must not load the local runner).
    from stoa_agents.runtime import run_agent  # noqa: PLC0415
    from stoa_agents.settings import AgentSettings  # noqa: PLC0415

    try:
        settings = AgentSettings()  # required fields come from the environment
    except (ValidationError, ValueError) as exc:
        print(f"Invalid agent configuration: {exc}", file=sys.stderr)
        return 2
    return run_agent(settings)


def transcript_main(argv: Sequence[str]) -> int:
    """``stoa transcript NAME --postgres-url URL``: print a stored transcript and its status."""
    parser = argparse.ArgumentParser(prog="stoa transcript", description="Print a stored conversation")
    parser.add_argument("conversation", help="conversation name")
    parser.add_argument("--postgres-url", required=True, help="PostgreSQL DSN of the Stoa state store")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    args = parser.parse_args(list(argv))
    from stoa_agents.local.transcript import print_transcript  # noqa: PLC0415 (per-subcommand import)

    return asyncio.run(print_transcript(args.postgres_url, args.conversation, as_json=args.json))


def run_main(argv: Sequence[str]) -> int:
    """``stoa run DIR``: run the manifests of DIR locally (PostgreSQL, RabbitMQ, model, agents)."""
    from stoa_agents.local.run import build_parser, run_local  # noqa: PLC0415 (per-subcommand import)

    args = build_parser().parse_args(list(argv))
    try:
        return asyncio.run(run_local(args))
    except KeyboardInterrupt:
        return 130
