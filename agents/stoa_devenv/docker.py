"""A private Docker engine for building images on a machine that runs none: containerd + dockerd of our own.

- its own ``--data-root`` under ``~/.cache/stoa/docker`` (layers and BuildKit's cache survive between runs),
  its own ``--exec-root``, pid files and unix socket under ``/run/stoa-docker-<hash of the cache dir>``, its
  own containerd (so a system containerd at the default socket is never used);
- ``--bridge=none --iptables=false --ip-masq=false``: it creates no interface and never touches the host's
  iptables; builds use ``--network host``, test containers ``--network none``;
- one engine per cache directory at a time (a file lock there; others wait and say for whom), stopped when
  the last ``with`` block of the process ends, and with the process if it dies (``PR_SET_PDEATHSIG``).

Needs root (dockerd does); installs ``docker.io``, ``containerd`` and ``runc`` when missing and root.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import functools
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from stoa_devenv.errors import ComponentFailedError, ComponentMissingError
from stoa_devenv.procs import apt_install, is_root, log_tail, pid_alive, wait_until
from stoa_devenv.tools import CACHE

DOCKER_CACHE = CACHE / "docker"
# One engine per cache directory (its data root): the lock lives there, the run dir is named after it.
ENGINE_LOCK = DOCKER_CACHE / "engine.lock"
RUN_DIR = Path("/run") / f"stoa-docker-{hashlib.sha256(str(DOCKER_CACHE).encode()).hexdigest()[:8]}"
# The client of Debian's docker.io matches its dockerd; a newer client elsewhere on PATH may lack buildx.
PACKAGE_CLIENT = Path("/usr/bin/docker")
PR_SET_PDEATHSIG = 1
# Written when BuildKit's cache is found inconsistent; the next engine starts from an empty data root (the
# image tarballs in ~/.cache/stoa/images are the real cache; the data root only speeds rebuilds up).
RESET_MARKER = "reset-data-root"
_SPAWNER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="stoa-engine-spawner")  # never shut down


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def ensure_docker_packages() -> None:
    """dockerd, containerd and runc from Debian, installed when missing (root), else a how-to error."""
    missing = [
        package
        for package, binary in (("docker.io", "dockerd"), ("containerd", "containerd"), ("runc", "runc"))
        if shutil.which(binary) is None
    ]
    if missing:
        apt_install(missing, "a private Docker engine to build the test bed's images")


def docker_client() -> str:
    if PACKAGE_CLIENT.exists():
        return str(PACKAGE_CLIENT)
    found = shutil.which("docker")
    if found is None:
        raise ComponentMissingError("docker client not found: apt-get install docker.io")
    return found


@dataclass(frozen=True)
class Docker:
    """The ``docker`` CLI bound to one engine's socket, with BuildKit and a private client config."""

    socket: Path
    config_dir: Path

    @property
    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "DOCKER_HOST": f"unix://{self.socket}",
            "DOCKER_CONFIG": str(self.config_dir),
            "DOCKER_BUILDKIT": "1",
        }

    def run(
        self, *args: str, check: bool = True, timeout: float | None = 600, stdout: IO[bytes] | None = None
    ) -> subprocess.CompletedProcess[str]:
        cmd = [docker_client(), *args]
        if stdout is not None:
            proc = subprocess.run(
                cmd, env=self.env, stdout=stdout, stderr=subprocess.PIPE, check=False, timeout=timeout
            )
            result = subprocess.CompletedProcess(
                cmd, proc.returncode, "", proc.stderr.decode(errors="replace")
            )
        else:
            result = subprocess.run(
                cmd, env=self.env, capture_output=True, text=True, check=False, timeout=timeout
            )
        if check and result.returncode != 0:
            raise ComponentFailedError(
                f"docker {' '.join(args[:3])} failed:\n{result.stdout[-3000:]}{result.stderr[-3000:]}"
            )
        return result

    def image_id(self, ref: str) -> str | None:
        result = self.run("image", "inspect", "--format", "{{.Id}}", ref, check=False)
        return result.stdout.strip() if result.returncode == 0 else None

    def image_size(self, ref: str) -> int:
        return int(self.run("image", "inspect", "--format", "{{.Size}}", ref).stdout.strip())

    def build(
        self,
        context: Path,
        dockerfile: Path,
        tag: str,
        *,
        target: str | None,
        args: Mapping[str, str],
        log: Path,
    ) -> None:
        """``docker build --network host`` (BuildKit, plain progress into ``log``)."""
        cmd = [docker_client(), "build", "--network", "host", "--progress", "plain", "-f", str(dockerfile)]
        cmd += ["--tag", tag]
        if target:
            cmd += ["--target", target]
        for key, value in args.items():
            cmd += ["--build-arg", f"{key}={value}"]
        with log.open("wb") as out:
            proc = subprocess.run(
                ["nice", "-n", "10", *cmd, str(context)],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                check=False,
            )
        if proc.returncode != 0:
            raise ComponentFailedError(f"docker build of {tag} failed{log_tail(log, 60)}")

    def import_rootfs(self, producer: list[str], changes: Sequence[str], tag: str, log: Path) -> None:
        """``producer | docker import --change ... - tag``: an image from a root file system tarball."""
        cmd = [docker_client(), "import", *(f"--change={change}" for change in changes), "-", tag]
        with log.open("wb") as out:
            source = subprocess.Popen(producer, stdout=subprocess.PIPE, stderr=out)
            assert source.stdout is not None
            sink = subprocess.run(cmd, env=self.env, stdin=source.stdout, stdout=out, stderr=out, check=False)
            source.stdout.close()
            produced = source.wait()
        if produced != 0 or sink.returncode != 0:
            raise ComponentFailedError(
                f"{producer[-3] if len(producer) > 2 else producer[0]} | docker import {tag} failed"
                f" ({produced}, {sink.returncode}){log_tail(log, 40)}"
            )

    def save(self, ref: str, archive: Path) -> None:
        """``docker save`` into ``archive`` atomically (a reader never sees half a tarball)."""
        tmp = archive.with_name(archive.name + f".{os.getpid()}.tmp")
        try:
            self.run("save", "--output", str(tmp), ref, timeout=900)
            tmp.replace(archive)
        finally:
            tmp.unlink(missing_ok=True)

    def load(self, archive: Path) -> None:
        self.run("load", "--input", str(archive), timeout=900)

    def tidy(self, keep_storage: str = "6GB") -> str | None:
        """Drop dangling images and BuildKit cache beyond ``keep_storage``; the daemon's error, if any."""
        self.run("image", "prune", "--force", check=False)
        result = self.run("builder", "prune", "--force", "--keep-storage", keep_storage, check=False)
        return None if result.returncode == 0 else (result.stderr.strip() or result.stdout.strip())

    def remove_images(self, refs: Sequence[str]) -> None:
        if refs:
            self.run("image", "rm", *refs, check=False)


class _Engine:
    """One running containerd + dockerd, holding the machine-wide lock while it runs."""

    def __init__(self, progress: bool, cache: Path = DOCKER_CACHE, run_dir: Path = RUN_DIR) -> None:
        self.cache = cache
        self.run_dir = run_dir
        self.progress = progress
        self._lock: IO[str] | None = None
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self.docker = Docker(run_dir / "docker.sock", cache / "client")

    def _say(self, message: str) -> None:
        if self.progress:
            print(message, file=sys.stderr, flush=True)

    def start(self) -> None:
        if not is_root():
            raise ComponentMissingError(
                "building images without a registry runs a private dockerd, which needs root; as a normal "
                "user with Docker, build with `make image` instead"
            )
        ensure_docker_packages()
        self.cache.mkdir(parents=True, exist_ok=True)
        self._acquire_lock()
        self._say(f"Starting the private dockerd (data root {self.cache}, socket {self.docker.socket})")
        try:
            self._stop_leftovers()
            self._reset_if_asked()
            started = time.monotonic()
            self._spawn_containerd()
            self._spawn_dockerd()
            self._say(
                f"Private dockerd ready in {time.monotonic() - started:.1f}s (socket {self.docker.socket})"
            )
        except BaseException:
            self.stop()
            raise

    def _reset_if_asked(self) -> None:
        """Start from an empty data root when the last session found BuildKit's cache broken."""
        marker = self.cache / RESET_MARKER
        if marker.exists():
            self._say(f"Resetting the private dockerd's layer cache: {marker.read_text().strip()}")
            for directory in ("data", "containerd"):
                shutil.rmtree(self.cache / directory, ignore_errors=True)
            marker.unlink()

    def _acquire_lock(self) -> None:
        lock = (self.cache / "engine.lock").open("a+")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            holder = lock.read().strip() or "another process"
            self._say(f"Waiting for the private dockerd, in use by {holder}")
            fcntl.flock(lock, fcntl.LOCK_EX)
        lock.seek(0)
        lock.truncate()
        lock.write(f"pid {os.getpid()} ({' '.join(sys.argv[:3])})")
        lock.flush()
        self._lock = lock

    def _spawn(self, name: str, cmd: list[str]) -> subprocess.Popen[bytes]:
        log = (self.run_dir / f"{name}.log").open("ab")

        def popen() -> subprocess.Popen[bytes]:
            return subprocess.Popen(
                cmd,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                preexec_fn=_die_with_parent,  # noqa: PLW1509 - only prctl(2) between fork and exec
            )

        # PR_SET_PDEATHSIG fires when the *thread* that forked exits: fork from one that lives as long as
        # the process, not from whichever worker thread first needed the engine.
        proc = _SPAWNER.submit(popen).result()
        log.close()
        self._procs[name] = proc
        (self.run_dir / f"{name}.pid").write_text(str(proc.pid))
        return proc

    def _wait(self, name: str, ready: Path, timeout: float) -> None:
        proc = self._procs[name]

        def up() -> bool:
            if proc.poll() is not None:
                raise ComponentFailedError(
                    f"{name} exited with {proc.returncode}{log_tail(self.run_dir / f'{name}.log')}"
                )
            return ready.exists()

        wait_until(up, timeout, name, self.run_dir / f"{name}.log")

    def _spawn_containerd(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        config = self.run_dir / "containerd.toml"
        config.write_text(
            "version = 2\n"
            f'root = "{self.cache / "containerd"}"\n'
            f'state = "{self.run_dir / "containerd"}"\n'
            'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
            "oom_score = 0\n"
            f'[grpc]\n  address = "{self.run_dir / "containerd.sock"}"\n'
            '[debug]\n  level = "warn"\n'
        )
        self._spawn("containerd", ["containerd", "--config", str(config)])
        self._wait("containerd", self.run_dir / "containerd.sock", 30)

    def _spawn_dockerd(self) -> None:
        daemon_json = self.run_dir / "daemon.json"  # not /etc/docker/daemon.json: nothing of the host's
        daemon_json.write_text(json.dumps({"features": {"buildkit": True}, "log-level": "warn"}))
        self.docker.config_dir.mkdir(parents=True, exist_ok=True)
        self._spawn(
            "dockerd",
            [
                "dockerd",
                "--config-file",
                str(daemon_json),
                "--containerd",
                str(self.run_dir / "containerd.sock"),
                "--data-root",
                str(self.cache / "data"),
                "--exec-root",
                str(self.run_dir / "exec"),
                "--pidfile",
                str(self.run_dir / "docker.pid"),
                "-H",
                f"unix://{self.docker.socket}",
                "--bridge=none",
                "--iptables=false",
                "--ip6tables=false",
                "--ip-masq=false",
                "--oom-score-adjust=0",
            ],
        )
        self._wait("dockerd", self.docker.socket, 60)
        wait_until(lambda: self.docker.run("version", check=False).returncode == 0, 30, "dockerd API")

    # -- teardown -----------------------------------------------------------------------------------------
    def stop(self) -> None:
        for name in ("dockerd", "containerd"):
            proc = self._procs.pop(name, None)
            if proc is not None:
                _terminate(proc.pid, functools.partial(_running, proc), grace=30)
            (self.run_dir / f"{name}.pid").unlink(missing_ok=True)
        _unmount_below(self.run_dir)
        _unmount_below(self.cache)
        shutil.rmtree(self.run_dir, ignore_errors=True)
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def _stop_leftovers(self) -> None:
        """Engines of an earlier run that died without stopping them (we hold the lock: they are ours)."""
        for name in ("dockerd", "containerd"):
            pidfile = self.run_dir / f"{name}.pid"
            if not pidfile.exists():
                continue
            with contextlib.suppress(ValueError, OSError):
                pid = int(pidfile.read_text())
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
                if str(self.run_dir) in cmdline:
                    self._say(f"Stopping a leftover private {name} (pid {pid})")
                    _terminate(pid, functools.partial(pid_alive, pid), grace=30)
        _unmount_below(self.run_dir)
        shutil.rmtree(self.run_dir, ignore_errors=True)
        self.run_dir.mkdir(parents=True)


def _running(proc: subprocess.Popen[bytes]) -> bool:
    return proc.poll() is None


def _terminate(pid: int, alive: Callable[[], bool], grace: float) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while alive() and time.monotonic() < deadline:
        time.sleep(0.1)
    if alive():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while alive() and time.monotonic() < deadline:
            time.sleep(0.1)


def _unmount_below(root: Path) -> None:
    """Lazily unmount whatever an engine left mounted under ``root`` (deepest first)."""
    prefix = str(root.resolve()) + "/"
    with open("/proc/self/mountinfo") as mounts:
        points = [line.split()[4] for line in mounts]
    for point in sorted((p for p in points if p.startswith(prefix)), key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True, check=False)


_engine: _Engine | None = None
_users = 0
_engine_mutex = threading.Lock()


class PrivateDocker:
    """``with PrivateDocker() as docker:`` starts containerd + dockerd (waiting for the machine-wide lock)
    and stops both when the last user in this process leaves: blocks nested or overlapping in one process,
    in any thread, share the running engine (a second engine would wait for the first one's lock)."""

    def __init__(self, progress: bool = True) -> None:
        self.progress = progress

    def __enter__(self) -> Docker:
        global _engine, _users  # noqa: PLW0603 - one engine per process, by design
        with _engine_mutex:
            if _engine is None:
                engine = _Engine(self.progress)
                engine.start()
                _engine = engine
            _users += 1
            return _engine.docker

    def __exit__(self, *exc: object) -> None:
        global _engine, _users  # noqa: PLW0603
        with _engine_mutex:
            _users -= 1
            if _users == 0 and _engine is not None:
                _engine.stop()
                _engine = None
