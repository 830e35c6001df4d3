"""The private engine and the tooling around it when things go wrong: a failing build, a killed owner, a
busy engine, a containerd that is not there, and the `stoa dev images` command."""

from __future__ import annotations

import fcntl
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from stoa_devenv.docker import ENGINE_LOCK, RUN_DIR, PrivateDocker
from stoa_devenv.errors import ComponentFailedError
from stoa_devenv.imageload import load_into_containerd
from stoa_devenv.images import IMAGE_CACHE, ensure_images
from stoa_devenv.imagespec import SPECS, DockerfileSpec
from stoa_devenv.procs import pid_alive, wait_until

pytestmark = pytest.mark.timeout(2400)  # a cold cache builds debian-base / pause first


def _engine_pids() -> dict[str, int]:
    return {
        name: int((RUN_DIR / f"{name}.pid").read_text())
        for name in ("dockerd", "containerd")
        if (RUN_DIR / f"{name}.pid").exists()
    }


def test_a_failing_build_says_why_and_caches_nothing(tmp_path: Path) -> None:
    ensure_images(["debian-base"])
    (tmp_path / "Dockerfile").write_text(
        "ARG BASE_IMAGE=debian:bookworm-slim\nFROM ${BASE_IMAGE}\n"
        "RUN echo stoa-marker-before-failure && exit 3\n"
    )
    broken = DockerfileSpec(
        "broken-test", str(tmp_path), str(tmp_path / "Dockerfile"), bases={"BASE_IMAGE": "debian-base"}
    )
    with pytest.raises(ComponentFailedError) as failure:
        ensure_images(["broken-test"], specs={**SPECS, "broken-test": broken})
    message = str(failure.value)
    assert "docker build of stoa.local/broken-test:" in message
    assert "stoa-marker-before-failure" in message  # the log tail says what failed
    assert "exit code: 3" in message
    assert not list(IMAGE_CACHE.glob("broken-test-*"))  # nothing half-saved
    assert not RUN_DIR.exists()  # and the engine is stopped


def test_the_engine_dies_with_its_owner_and_the_next_one_starts(tmp_path: Path) -> None:
    owner = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import time; from stoa_devenv.docker import PrivateDocker\n"
            "PrivateDocker(progress=False).__enter__(); print('up', flush=True); time.sleep(300)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert owner.stdout is not None
    assert owner.stdout.readline().strip() == "up"
    pids = _engine_pids()
    assert set(pids) == {"dockerd", "containerd"}
    owner.kill()  # no chance to clean up: the engine must not outlive it
    owner.wait()
    wait_until(lambda: not any(pid_alive(p) for p in pids.values()), 60, "the orphaned engine to stop")
    with PrivateDocker(progress=False) as docker:  # takes over: leftover mounts and files are cleaned
        assert docker.run("version", "--format", "{{.Server.Version}}").stdout.strip()
    assert not RUN_DIR.exists()


def test_a_busy_engine_makes_others_wait_and_say_for_whom(capsys: pytest.CaptureFixture[str]) -> None:
    ENGINE_LOCK.parent.mkdir(parents=True, exist_ok=True)
    with ENGINE_LOCK.open("a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        held.seek(0)
        held.truncate()
        held.write(f"pid {os.getpid()} (the busy-engine test)")
        held.flush()
        entered = threading.Event()

        def use_engine() -> None:
            with PrivateDocker():
                entered.set()

        waiter = threading.Thread(target=use_engine)
        waiter.start()
        wait_until(
            lambda: "in use by" in capsys.readouterr().err or not waiter.is_alive(), 30, "the wait message"
        )
        assert not entered.is_set()
        fcntl.flock(held, fcntl.LOCK_UN)
    waiter.join(timeout=120)
    assert entered.is_set()


def test_loading_into_a_containerd_that_is_not_there_fails_clearly() -> None:
    pause = ensure_images(["pause"])["pause"]
    with pytest.raises(ComponentFailedError, match=r"no containerd socket at /nonexistent/containerd\.sock"):
        load_into_containerd("/nonexistent/containerd.sock", [pause])
    with tempfile.TemporaryDirectory() as empty:  # a socket file nobody serves
        dead = Path(empty) / "containerd.sock"
        server = socket.socket(socket.AF_UNIX)
        server.bind(str(dead))
        server.close()
        with pytest.raises(ComponentFailedError, match="ctr images ls failed"):
            load_into_containerd(dead, [pause])


def _stoa(*args: str, state: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "CONTAINERD_ADDRESS"}
    return subprocess.run(
        [sys.executable, "-m", "stoa_cli.main", "dev", "images", *args],
        env={**env, "STOA_STATE_DIR": str(state)},
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )


def test_dev_images_command_builds_lists_and_loads(containerd: Path, tmp_path: Path) -> None:
    listed = _stoa("pause", "--json", state=tmp_path)
    assert listed.returncode == 0, listed.stderr
    pause = json.loads(listed.stdout.strip().splitlines()[-1])["pause"]
    assert pause["ref"].startswith("stoa.local/pause:")
    assert Path(pause["archive"]).is_file()
    started = time.monotonic()
    loaded = _stoa(
        "pause",
        "--load",
        "--address",
        str(containerd),
        "--tag",
        "pause=registry.k8s.io/pause:3.10",
        state=tmp_path,
    )
    assert loaded.returncode == 0, loaded.stderr
    assert f"pause={pause['ref']}" in loaded.stdout
    assert "imported" in loaded.stderr
    assert time.monotonic() - started < 60
    images = subprocess.run(
        ["ctr", "--address", str(containerd), "-n", "k8s.io", "images", "ls", "-q"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert {pause["ref"], "registry.k8s.io/pause:3.10"} <= set(images)
    nowhere = _stoa("pause", "--load", state=tmp_path)  # no --address, no CONTAINERD_ADDRESS, no node
    assert nowhere.returncode == 1
    assert "no node to load into" in nowhere.stderr
    assert "Traceback" not in nowhere.stderr


def test_overlapping_users_in_one_process_share_one_engine() -> None:
    with PrivateDocker(progress=False) as outer:
        pids = _engine_pids()
        with PrivateDocker(progress=False) as inner:  # e.g. ensure_images inside a test's engine fixture
            assert inner == outer
            assert _engine_pids() == pids
        assert outer.run("version", "--format", "{{.Server.Version}}").stdout.strip()  # still up
    assert not RUN_DIR.exists()


def test_an_engine_started_by_a_short_lived_thread_outlives_it() -> None:
    """ensure_images builds in worker threads; the engine one of them started must live on after it."""
    started: dict[str, Any] = {}

    def start() -> None:
        started["block"] = PrivateDocker(progress=False)
        started["docker"] = started["block"].__enter__()

    worker = threading.Thread(target=start)
    worker.start()
    worker.join()
    try:
        time.sleep(2)  # a death signal tied to the thread would have stopped dockerd by now
        assert all(pid_alive(pid) for pid in _engine_pids().values())
        assert started["docker"].run("version", "--format", "{{.Server.Version}}").stdout.strip()
    finally:
        started["block"].__exit__(None, None, None)


def test_a_broken_layer_cache_is_reset_at_the_next_start(tmp_path: Path) -> None:
    """After a session found BuildKit's cache unprunable, the next engine starts from an empty data root."""
    cache = tmp_path / "cache"
    (cache / "docker" / "data" / "stale").mkdir(parents=True)
    (cache / "docker" / "reset-data-root").write_text("snapshot x not found\n")
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            "from stoa_devenv.docker import PrivateDocker\n"
            "with PrivateDocker() as d:\n"
            "    print(d.run('info', '--format', '{{.DockerRootDir}}').stdout.strip())",
        ],
        env={**os.environ, "STOA_CACHE_DIR": str(cache)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(cache / "docker" / "data")
    assert "Resetting the private dockerd's layer cache: snapshot x not found" in proc.stderr
    assert not (cache / "docker" / "data" / "stale").exists()
    assert not (cache / "docker" / "reset-data-root").exists()
