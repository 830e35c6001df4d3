"""Reuse the llama-cpp-python wheel this machine already compiled (``make model``) in the model image build.

Compiling llama.cpp takes ~6 min on 2 cores. ``make model`` compiles it once into pip's wheel cache with the
Makefile's ``LLAMA_CMAKE_ARGS`` (portable AVX2, the same flags the Dockerfile uses); here that wheel is copied
into a directory of our own under ``~/.cache/stoa/wheels`` and served over loopback to ``docker build
--network host`` as the Dockerfile's ``LLAMA_WHEELS`` (pip's find-links), so the image installs it instead of
compiling. A wheel only fits when its tags match the image's Python (Debian bookworm: CPython 3.11).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import http.server
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from stoa_devenv.procs import port_open
from stoa_devenv.tools import CACHE, REPO_ROOT

LLAMA_VERSION = "0.3.36"
LLAMA_DIST = "llama_cpp_python"
IMAGE_PYTHON = (3, 11)  # python3 of Debian bookworm, the bases' suite
WHEELS = CACHE / "wheels"
# A fixed port keeps the build argument, and so BuildKit's cache of the layer that installs the wheel, the
# same from one build to the next; any free port when it is taken (that layer then runs again, correctly).
PREFERRED_PORT = 38619
_WHEEL_NAME = re.compile(
    r"^(?P<name>[^-]+)-(?P<version>[^-]+)(-\d[^-]*)?-(?P<py>[^-]+)-(?P<abi>[^-]+)-(?P<plat>[^-]+)\.whl$"
)


def llama_cmake_args(makefile: Path = REPO_ROOT / "Makefile") -> str:
    """The Makefile's LLAMA_CMAKE_ARGS: the flags `make model` compiles with (the Dockerfile's too)."""
    match = re.search(r"^LLAMA_CMAKE_ARGS :?= (.+)$", makefile.read_text(), re.MULTILINE)
    if match is None:
        raise ValueError(f"{makefile} defines no LLAMA_CMAKE_ARGS")
    return match.group(1).strip()


def wheel_fits(filename: str, python: tuple[int, int] = IMAGE_PYTHON) -> bool:
    """Whether pip on that CPython (linux x86-64, glibc) can install the wheel ``filename``."""
    match = _WHEEL_NAME.match(filename)
    if match is None:
        return False
    major, minor = python
    pythons = {f"cp{major}{minor}", f"py{major}", f"py{major}{minor}"}
    abis = {f"cp{major}{minor}", "abi3", "none"}
    platform_ok = any(
        plat in {"any", "linux_x86_64"} or re.fullmatch(r"manylinux\w*_x86_64", plat)
        for plat in match["plat"].split(".")
    )
    return (
        bool(pythons & set(match["py"].split(".")))
        and bool(abis & set(match["abi"].split(".")))
        and platform_ok
    )


def wheel_dir(cmake_args: str) -> Path:
    digest = hashlib.sha256(cmake_args.encode()).hexdigest()[:12]
    return WHEELS / f"{LLAMA_DIST}-{LLAMA_VERSION}-{digest}"


def _pip_cached_wheels() -> list[Path]:
    """llama-cpp-python wheels in pip's wheel cache (no network), newest first."""
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "cache", "list", f"{LLAMA_DIST}-{LLAMA_VERSION}", "--format=abspath"],
        capture_output=True,
        text=True,
        check=False,
    )
    found = [Path(line.strip()) for line in proc.stdout.splitlines() if line.strip().endswith(".whl")]
    return sorted((p for p in found if p.exists()), key=lambda p: p.stat().st_mtime, reverse=True)


def find_llama_wheel() -> Path | None:
    """The reusable wheel (copied into our own directory on first use), or None: then the image compiles."""
    target = wheel_dir(llama_cmake_args())
    mine = sorted(p for p in target.glob("*.whl") if wheel_fits(p.name))
    if mine:
        return mine[-1]
    for cached in _pip_cached_wheels():
        if wheel_fits(cached.name):
            target.mkdir(parents=True, exist_ok=True)
            tmp = target / (cached.name + ".tmp")
            shutil.copyfile(cached, tmp)
            return tmp.replace(target / cached.name)
    return None


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        return


@contextlib.contextmanager
def serve_directory(directory: Path) -> Iterator[str]:
    """Serve ``directory``'s files (and an HTML index pip reads as find-links) on loopback; yields the URL."""
    handler = functools.partial(_QuietHandler, directory=str(directory))
    port = PREFERRED_PORT if not port_open(PREFERRED_PORT) else 0
    try:
        server = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
    except OSError:
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, name="llama-wheels", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
