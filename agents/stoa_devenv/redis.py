"""A private Redis server (Debian's ``redis-server``) on a free loopback port, for shared gateway limits."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from stoa_devenv.errors import ComponentFailedError
from stoa_devenv.procs import apt_install, free_port, log_tail, wait_until


def redis_server_bin() -> str:
    """The ``redis-server`` binary, installing Debian's package when missing and root."""
    found = shutil.which("redis-server")
    if found is None:
        apt_install(["redis-server"], "Redis for the gateway's shared rate limits")
        found = shutil.which("redis-server")
    if found is None:
        raise ComponentFailedError("redis-server not found even after installing redis-server")
    return found


def redis_ready(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            sock.settimeout(1.0)
            return sock.recv(7).startswith(b"+PONG")
    except OSError:
        return False


@dataclass
class RedisServer:
    """One throwaway Redis without persistence (as a cache-only deployment runs it); ready in ~0.1 s."""

    base: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="stoa-redis-")))
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def log(self) -> Path:
        return self.base / "redis.log"

    def start(self) -> RedisServer:
        args = [
            redis_server_bin(),
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.base),
            "--logfile", str(self.log),
            "--protected-mode", "yes",
        ]  # fmt: skip
        self.process = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        wait_until(lambda: redis_ready(self.port), 20, f"Redis on port {self.port}", self.log)
        return self

    def kill(self) -> None:
        """Stop at once (SIGKILL): the data is lost, as when a cache-only Redis pod dies."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)
        self.process = None

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
        self.process = None

    def destroy(self) -> None:
        self.kill()
        shutil.rmtree(self.base, ignore_errors=True)

    def tail(self) -> str:
        return log_tail(self.log)
