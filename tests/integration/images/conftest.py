"""Fixtures shared by the image tests."""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from stoa_devenv.procs import wait_until


@pytest.fixture
def containerd() -> Iterator[Path]:
    """A throwaway containerd (own root, state and socket; no CRI) to load images into."""
    base = Path(tempfile.mkdtemp(prefix="stoa-ctrd-"))
    socket = base / "containerd.sock"
    (base / "config.toml").write_text(
        f'version = 2\nroot = "{base / "root"}"\nstate = "{base / "state"}"\n'
        f'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n[grpc]\n  address = "{socket}"\n'
    )
    with (base / "log").open("wb") as log:
        proc = subprocess.Popen(["containerd", "--config", str(base / "config.toml")], stdout=log, stderr=log)
    try:
        wait_until(socket.exists, 30, "containerd", base / "log")
        yield socket
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        subprocess.run(["umount", "-R", str(base)], capture_output=True, check=False)
        subprocess.run(["rm", "-rf", str(base)], check=False)
