"""Small process helpers shared by the local components: free ports, readiness polling, log tails, and
the components run in their own process group (spawned with a log file, checked, stopped)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from stoa_devenv.errors import ComponentFailedError, ComponentMissingError


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    """Whether something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_until(check: Callable[[], bool], timeout: float, what: str, log: Path | None = None) -> None:
    """Poll ``check`` until it is true, or raise with the tail of ``log``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise ComponentFailedError(f"{what} not ready after {timeout:.0f}s{log_tail(log)}")


def log_tail(log: Path | None, lines: int = 30) -> str:
    """The last lines of a log file, formatted for an error message."""
    if log is None or not log.exists():
        return ""
    text = log.read_text(errors="replace").splitlines()[-lines:]
    return f"\n--- {log} (last {len(text)} lines) ---\n" + "\n".join(text)


def is_root() -> bool:
    return os.geteuid() == 0


def apt_install(packages: list[str], why: str) -> None:
    """Install Debian packages when we are root; otherwise explain how to get them."""
    if not is_root() or shutil.which("apt-get") is None:
        raise ComponentMissingError(
            f"{why}: missing Debian packages {' '.join(packages)}; "
            f"install them with: sudo apt-get install -y --no-install-recommends {' '.join(packages)}"
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    print(f"Installing Debian packages {' '.join(packages)} ({why})", flush=True)
    # Wait for another apt/dpkg run (other test sessions install their packages too) instead of failing.
    install = [
        "apt-get",
        "-o",
        "DPkg::Lock::Timeout=600",
        "install",
        "-y",
        "--no-install-recommends",
        *packages,
    ]
    result = subprocess.run(install, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:  # a fresh machine has no package lists yet
        subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True, check=False)
        result = subprocess.run(install, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise ComponentMissingError(
            f"apt-get install {' '.join(packages)} failed:\n{result.stdout[-2000:]}{result.stderr[-2000:]}"
        )


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def spawn_logged(cmd: list[str], log: Path, cwd: Path, env: dict[str, str] | None = None) -> int:
    """Start ``cmd`` in a session (process group) of its own, output appended to ``log``; its pid."""
    with log.open("ab") as out:
        proc = subprocess.Popen(
            cmd,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            cwd=cwd,
            env={**os.environ, **(env or {})},
        )
    return proc.pid


def exited(pid: int) -> bool:
    """Whether ``pid`` has exited: reaped if it is our child (started by this process), else gone."""
    try:
        waited, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return not pid_alive(pid)
    return waited != 0


def stop_group(pid: int, grace: float = 10.0) -> None:
    """SIGTERM the process group led by ``pid``, SIGKILL it after ``grace`` seconds, reap the leader."""
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        exited(pid)
        return
    deadline = time.monotonic() + grace
    while not exited(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
    exited(pid)
