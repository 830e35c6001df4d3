"""`stoa dev cluster up|down`: a cluster for humans that outlives the command — the real node by default
(as root), the control plane alone with ``--no-node``; ``down`` leaves nothing behind."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlparse

import pytest

from stoa_devenv import netbed
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


def _kubectl(kubeconfig: str, *args: str) -> str:
    result = subprocess.run(
        [str(kubectl_binary()), "--kubeconfig", kubeconfig, *args],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.parametrize("flags", [[], ["--no-node"]], ids=["node", "control-plane"])
def test_dev_cluster_up_then_down(flags: list[str], tmp_path: Path) -> None:
    # The binaries stay in the per-user cache; the state file goes to a private dir.
    up = _stoa(["dev", "cluster", "up", "--json", *flags], tmp_path)
    assert up.returncode == 0, up.stderr
    info = json.loads(up.stdout.strip().splitlines()[-1])
    try:
        assert "namespace/default" in _kubectl(info["kubeconfig"], "get", "namespaces", "-o", "name")
        nodes = _kubectl(info["kubeconfig"], "get", "nodes", "-o", "jsonpath={.items[*].metadata.name}")
        assert nodes.split() == ([] if flags else ["stoa-node"])
    finally:
        down = _stoa(["dev", "cluster", "down"], tmp_path)
    assert down.returncode == 0, down.stderr
    port = urlparse(info["server"]).port
    assert port is not None
    if flags:
        assert not port_open(port)
    assert netbed.leftover_rules() == 0
    assert not netbed.bridge_exists()
