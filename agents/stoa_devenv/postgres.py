"""A private PostgreSQL server (Debian's ``postgresql`` package) on a free loopback port."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from stoa_devenv.errors import ComponentFailedError, ComponentMissingError
from stoa_devenv.procs import apt_install, free_port, is_root


def postgres_bindir() -> Path:
    """Directory holding initdb/pg_ctl, installing Debian's server when missing and root."""
    for _ in range(2):
        candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), reverse=True)
        if candidates:
            return Path(candidates[0]).parent
        found = shutil.which("initdb")
        if found:
            return Path(os.path.realpath(found)).parent
        apt_install(["postgresql"], "PostgreSQL server for Stoa's state store")
    raise ComponentMissingError("initdb not found even after installing postgresql")


@dataclass
class PostgresServer:
    """One throwaway PostgreSQL cluster. ``fsync`` stays on unless asked: restart tests need durability."""

    base: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="stoa-pg-")))
    port: int = field(default_factory=free_port)
    fsync: bool = True
    bindir: Path = field(default_factory=postgres_bindir)

    @property
    def data(self) -> Path:
        return self.base / "data"

    @property
    def log(self) -> Path:
        return self.base / "postgres.log"

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        cmd = [str(self.bindir / args[0]), *args[1:]]
        if is_root():
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        return subprocess.run(cmd, capture_output=True, text=True, check=False)

    def start(self) -> PostgresServer:
        if is_root():
            shutil.chown(self.base, "postgres", "postgres")
        if not (self.data / "PG_VERSION").exists():
            res = self._run(
                "initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"
            )
            if res.returncode != 0:
                raise ComponentFailedError(f"initdb failed: {res.stdout}{res.stderr}")
        opts = (
            f"-p {self.port} -k {self.base} -c listen_addresses=127.0.0.1 -c max_connections=300"
            f" -c fsync={'on' if self.fsync else 'off'}"
            f" -c synchronous_commit={'on' if self.fsync else 'off'}"
        )
        res = self._run(
            "pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60", "start", "-o", opts
        )
        if res.returncode != 0:
            tail = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise ComponentFailedError(f"PostgreSQL did not start: {res.stdout}{res.stderr}\n{tail}")
        return self

    def stop(self, mode: str = "fast") -> None:
        """Stop the server; ``mode="immediate"`` simulates a crash (no checkpoint)."""
        if (self.data / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def restart(self, mode: str = "fast") -> None:
        self.stop(mode)
        self.start()

    def destroy(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.base, ignore_errors=True)
