"""The ``stoa`` command: one entry point for the operator, agent runtime, gateway and local tooling."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence


def build_parser() -> argparse.ArgumentParser:
    # Only `stoa dev` needs the dev tooling; delegated commands start without it.
    from stoa_devenv import commands as dev_commands  # noqa: PLC0415

    parser = argparse.ArgumentParser(prog="stoa", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    dev_commands.add_parser(sub)
    for name, help_text in DELEGATED.items():
        delegated = sub.add_parser(name, help=help_text[2], add_help=False)
        delegated.add_argument("rest", nargs=argparse.REMAINDER)
    return parser


# command -> (module, function taking argv, help). Each subcommand parses its own flags.
DELEGATED: dict[str, tuple[str, str, str]] = {
    "agent": ("stoa_agents.cli", "agent_main", "run one agent replica (configured by STOA_* env)"),
    "run": ("stoa_agents.cli", "run_main", "run a directory of manifests locally (the debate demo)"),
    "transcript": ("stoa_agents.cli", "transcript_main", "print a stored conversation transcript"),
    "operator": ("stoa_operator.cli", "main", "run the Kubernetes operator (also: crds|rbac generate|check)"),
    "gateway": ("stoa_gateway.cli", "main", "serve the model gateway for a ModelPolicy config file"),
    "fake-model": ("stoa_testing.fake_provider", "main", "a scripted OpenAI-compatible fake provider"),
    "observability": (
        "stoa_telemetry.cli",
        "main",
        "the chart's alert rules and dashboard; SLO rules for manifests (slo-rules -f DIR)",
    ),
    "model-server": ("stoa_agents.local.model_server", "main", "serve the embedded demo model (SmolLM2)"),
    "api": ("stoa_web.cli", "api_main", "serve the HTTP API and web console (Kubernetes auth on every call)"),
    "conversations": (
        "stoa_web.client",
        "conversations_main",
        "start, list and follow conversations via the API",
    ),
}


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list and args_list[0] in DELEGATED:
        module, function, _ = DELEGATED[args_list[0]]
        entry = getattr(importlib.import_module(module), function)
        return int(entry(args_list[1:]) or 0)
    parser = build_parser()
    args = parser.parse_args(args_list)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
