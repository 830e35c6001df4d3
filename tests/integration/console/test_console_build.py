"""The committed console (agents/stoa_web/static) is exactly what web/ builds from its lock file."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
WEB = REPO / "web"
STATIC = REPO / "agents" / "stoa_web" / "static"


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_committed_console_is_the_build_of_the_lock_file(tmp_path: Path) -> None:
    npm = shutil.which("npm")
    if npm is None:
        pytest.fail("npm is needed to check the console build (Node.js 20.19+ with npm)")
    work = tmp_path / "web"
    shutil.copytree(WEB, work, ignore=shutil.ignore_patterns("node_modules"))
    out = tmp_path / "static"

    def run(*args: str) -> None:
        proc = subprocess.run(
            [npm, *args], cwd=work, capture_output=True, text=True, check=False, timeout=600
        )
        assert proc.returncode == 0, f"npm {' '.join(args)}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"

    run("ci", "--no-audit", "--no-fund", "--prefer-offline")
    run("exec", "--", "tsc", "--noEmit")
    run("exec", "--", "vite", "build", "--outDir", str(out), "--emptyOutDir")
    built, committed = _files(out), _files(STATIC)
    assert sorted(built) == sorted(committed), "run `make console` and commit agents/stoa_web/static"
    changed = [name for name in built if built[name] != committed[name]]
    assert not changed, f"stale console build, run `make console`: {changed}"
