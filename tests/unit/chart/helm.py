"""Run the local helm binary against charts/stoa and parse what it renders (no cluster needed)."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from stoa_devenv.tools import helm_binary

REPO_ROOT = Path(__file__).resolve().parents[3]
CHART = REPO_ROOT / "charts" / "stoa"


@dataclass(frozen=True)
class HelmResult:
    returncode: int
    stdout: str
    stderr: str

    def objects(self) -> list[dict[str, Any]]:
        return [doc for doc in yaml.safe_load_all(self.stdout) if doc]


def helm(*args: str) -> HelmResult:
    proc = subprocess.run(
        [str(helm_binary()), *args], capture_output=True, text=True, check=False, timeout=120
    )
    return HelmResult(proc.returncode, proc.stdout, proc.stderr)


def template(
    *values: str, values_file: Path | None = None, namespace: str = "stoa-system", release: str = "stoa"
) -> HelmResult:
    """``helm template <release> charts/stoa`` with ``--set`` values (and an optional values file)."""
    args = ["template", release, str(CHART), "--namespace", namespace]
    for value in values:
        args += ["--set", value]
    if values_file is not None:
        args += ["--values", str(values_file)]
    return helm(*args)


def render(*values: str) -> list[dict[str, Any]]:
    result = template(*values)
    assert result.returncode == 0, result.stderr
    return result.objects()


def find(objects: list[dict[str, Any]], kind: str, name: str | None = None) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
