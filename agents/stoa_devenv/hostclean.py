"""Removing what a node leaves on the host: processes, cgroups and mounts. Each function is idempotent and
touches only what is named after the test bed (a cgroup name, a path prefix)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")


def _cgroup_dirs(name: str) -> list[Path]:
    """``name`` (e.g. ``kubepods``) under every mounted cgroup hierarchy, v1 controllers and v2 alike."""
    if not CGROUP_ROOT.exists():
        return []
    found = [CGROUP_ROOT / name] if (CGROUP_ROOT / name / "cgroup.procs").exists() else []
    found += [d / name for d in CGROUP_ROOT.iterdir() if (d / name).is_dir()]
    return found


def _cgroup_pids(directory: Path) -> set[int]:
    pids: set[int] = set()
    for procs in directory.rglob("cgroup.procs"):
        with contextlib.suppress(OSError):
            pids.update(int(line) for line in procs.read_text().split())
    return pids


def kill_cgroup_tree(name: str, timeout: float = 10) -> None:
    """SIGKILL every process in the cgroup ``name`` and its children, until none is left."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pids = set().union(*(_cgroup_pids(d) for d in _cgroup_dirs(name))) if _cgroup_dirs(name) else set()
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.2)


def remove_cgroup_tree(name: str) -> None:
    """rmdir the cgroup ``name`` and its children, deepest first (they must be empty of processes)."""
    for directory in _cgroup_dirs(name):
        for child in sorted((p for p in directory.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
            with contextlib.suppress(OSError):
                child.rmdir()
        with contextlib.suppress(OSError):
            directory.rmdir()


def kill_matching(fragment: str) -> None:
    """SIGKILL processes whose command line contains ``fragment`` (a path only the test bed uses)."""
    me = os.getpid()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if fragment in cmdline:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(entry.name), signal.SIGKILL)


def mounts_under(prefix: Path) -> list[str]:
    """Mount points at or below ``prefix``, deepest first (from /proc/self/mountinfo)."""
    points = []
    root = str(prefix.resolve())
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].encode().decode("unicode_escape")
        if point == root or point.startswith(root + "/"):
            points.append(point)
    return sorted(points, key=lambda p: -p.count("/"))


def unmount_under(prefix: Path) -> None:
    """Lazily unmount everything at or below ``prefix`` (volumes, root filesystems, network namespaces)."""
    for _ in range(3):
        points = mounts_under(prefix)
        if not points:
            return
        for point in points:
            subprocess.run(["umount", "-l", point], capture_output=True, check=False)
