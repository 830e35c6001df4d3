"""The previous release, for the upgrade test: the repository as it was just before the chart got its
current version (``git archive`` of the parent of the commit that set it), and the Stoa image built from
that tree (cached like every image: built once per machine).

Needs the repository's history (a clone, not a shallow one): otherwise it fails saying so.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import yaml

from stoa_devenv.images import ImageRef, ensure_images
from stoa_devenv.imagespec import SPECS, DockerfileSpec
from stoa_devenv.tools import CACHE
from tests.e2e.node.bed import REPO

CHART_FILE = "charts/stoa/Chart.yaml"


@dataclass(frozen=True)
class Previous:
    revision: str  # the commit
    version: str  # its chart version
    tree: Path  # the repository at that commit

    @property
    def chart(self) -> Path:
        return self.tree / "charts" / "stoa"

    @property
    def examples(self) -> Path:
        return self.tree / "examples" / "debate"


def _git(*args: str) -> str:
    proc = subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise AssertionError(f"git {' '.join(args)}: {proc.stderr.strip()}")
    return proc.stdout


def _version_at(revision: str) -> str | None:
    proc = subprocess.run(
        ["git", "-C", str(REPO), "show", f"{revision}:{CHART_FILE}"],
        capture_output=True,
        text=True,
        check=False,
    )
    return str(yaml.safe_load(proc.stdout)["version"]) if proc.returncode == 0 else None


def previous_revision() -> tuple[str, str]:
    """(commit, chart version) of the last commit before the chart's current version."""
    current = str(yaml.safe_load((REPO / CHART_FILE).read_text())["version"])
    if _version_at("HEAD") not in (None, current):  # a version bump not committed yet: HEAD is the previous
        return _git("rev-parse", "HEAD").strip(), str(_version_at("HEAD"))
    for commit in _git("log", "--format=%H", "--", CHART_FILE).split():
        before = _version_at(f"{commit}^")
        if _version_at(commit) == current and before not in (None, current):
            return _git("rev-parse", f"{commit}^").strip(), str(before)
    raise AssertionError(
        f"no chart version before {current} in the git history of {REPO}"
        " (a shallow clone? git fetch --unshallow)"
    )


def previous_release() -> Previous:
    """The previous release's tree, extracted once under ~/.cache/stoa/previous/<commit> (a fixed path, so
    its image is cached by content like the others)."""
    revision, version = previous_revision()
    tree = CACHE / "previous" / revision
    if not (tree / CHART_FILE).exists():
        tree.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=tree.parent, prefix=f".{revision[:12]}-"))
        archive = subprocess.Popen(
            ["git", "-C", str(REPO), "archive", "--format=tar", revision], stdout=subprocess.PIPE
        )
        subprocess.run(["tar", "-x", "-C", str(staging)], stdin=archive.stdout, check=True)
        assert archive.wait() == 0, f"git archive {revision} failed"
        try:
            staging.rename(tree)
        except OSError:  # another session extracted it meanwhile
            shutil.rmtree(staging, ignore_errors=True)
    return Previous(revision, version, tree)


def previous_image(previous: Previous) -> ImageRef:
    """The Stoa image of the previous release (its Dockerfile and sources), built or taken from the cache."""
    spec = DockerfileSpec(
        "stoa-previous",
        str(previous.tree),
        str(previous.tree / "Dockerfile"),
        target="stoa",
        bases={"PYTHON_IMAGE": "python-base"},
    )
    (ref,) = ensure_images(["stoa-previous"], specs={**SPECS, "stoa-previous": spec}).values()
    return ref
