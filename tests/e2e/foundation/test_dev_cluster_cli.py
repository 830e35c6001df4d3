"""`stoa dev cluster up|down`: a control plane for humans that outlives the command."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlparse

from stoa_devenv.procs import port_open
from stoa_devenv.tools import kubectl_binary


def _stoa(args: list[str], cache: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "STOA_STATE_DIR": str(cache)}
    return subprocess.run(
        [sys.executable, "-m", "stoa_cli.main", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_dev_cluster_up_then_down(tmp_path: Path) -> None:
    # The control-plane binaries stay in the per-user cache; the state file goes to a private dir.
    up = _stoa(["dev", "cluster", "up", "--json"], tmp_path)
    assert up.returncode == 0, up.stderr
    info = json.loads(up.stdout.strip().splitlines()[-1])
    try:
        nodes = subprocess.run(
            [str(kubectl_binary()), "--kubeconfig", info["kubeconfig"], "get", "namespaces", "-o", "name"],
            capture_output=True,
            text=True,
            check=False,
        )
        assert nodes.returncode == 0, nodes.stderr
        assert "namespace/default" in nodes.stdout
    finally:
        down = _stoa(["dev", "cluster", "down"], tmp_path)
    assert down.returncode == 0, down.stderr
    port = urlparse(info["server"]).port
    assert port is not None
    assert not port_open(port)
