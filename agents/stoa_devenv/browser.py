"""Debian's headless Chromium for the console's browser tests (installed as root when missing).

Playwright drives it through ``executable_path`` (its own browser download cannot be reached here). The
flags keep Chromium from reaching out to the network at all: no background networking, component
updates, sync or QUIC, so a test run sends nothing off the machine.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from stoa_devenv.errors import ComponentMissingError
from stoa_devenv.procs import apt_install

CHROMIUM = Path("/usr/bin/chromium")
PACKAGES = ["chromium", "chromium-driver"]
FLAGS = [
    "--no-sandbox",  # tests run as root in CI; the page is our own console on loopback
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    "--metrics-recording-only",
    "--no-default-browser-check",
]


def chromium_binary() -> Path:
    """/usr/bin/chromium, installing Debian's chromium and chromium-driver first when missing."""
    if not CHROMIUM.exists():
        apt_install(PACKAGES, "headless Chromium for the web console's browser tests")
    found = CHROMIUM if CHROMIUM.exists() else (Path(p) if (p := shutil.which("chromium")) else None)
    if found is None:
        raise ComponentMissingError(f"Chromium not found at {CHROMIUM} after installing {' '.join(PACKAGES)}")
    return found
