"""What each image of the test bed is made of, and the cache key of its inputs (pure: no I/O).

Two kinds of image:
- a **base** built from Debian packages (``mmdebstrap --variant=minbase ... | docker import``): what the
  public ``python:3.11-slim-bookworm`` / ``debian:bookworm-slim`` images give where no registry is reachable;
- a **Dockerfile** image built on such bases (the repo's Dockerfile for Stoa and the model; the Dockerfiles in
  ``hack/images/`` for the chart's bundled RabbitMQ and PostgreSQL and the node's pause image).

An image's key hashes everything that decides its content: the spec itself, the Dockerfile, every file of
its build context (as ``.dockerignore`` filters it), the ids of its base images and the digest of a reused
wheel. Same key, same image: the cache serves it without building.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field

KEY_FORMAT = 1
REPOSITORY_PREFIX = "stoa.local/"
TAG_LENGTH = 16
SUITE = "bookworm"
# Keep the bases as slim as Docker's: no usrmerge (and the perl it pulls), no docs, man pages or locales
# (copyright files stay). The dpkg filters stay in the image, so packages added later are slim too.
MMDEBSTRAP_OPTIONS = (
    "--variant=minbase",
    "--hook-dir=/usr/share/mmdebstrap/hooks/merged-usr",
    "--dpkgopt=path-exclude=/usr/share/man/*",
    "--dpkgopt=path-exclude=/usr/share/doc/*",
    "--dpkgopt=path-include=/usr/share/doc/*/copyright",
    "--dpkgopt=path-exclude=/usr/share/locale/*",
    "--dpkgopt=path-include=/usr/share/locale/locale.alias",
    "--dpkgopt=path-exclude=/usr/share/info/*",
    '--aptopt=APT::Install-Recommends "false"',
)
# `docker import` gives an image without any configuration; these are what Docker's Debian images set.
BASE_CHANGES = (
    "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "ENV LANG=C.UTF-8",
)


@dataclass(frozen=True)
class BaseSpec:
    """An image made from Debian packages with mmdebstrap."""

    name: str
    packages: tuple[str, ...]
    cmd: str  # the CMD, in exec form JSON
    suite: str = SUITE

    def mmdebstrap_args(self) -> list[str]:
        include = [f"--include={','.join(self.packages)}"] if self.packages else []
        return ["mmdebstrap", "--quiet", *MMDEBSTRAP_OPTIONS, *include, self.suite, "-"]

    def import_changes(self) -> list[str]:
        return [*BASE_CHANGES, f"CMD {self.cmd}"]


@dataclass(frozen=True)
class DockerfileSpec:
    """An image built with ``docker build``; paths are relative to the repository root."""

    name: str
    context: str
    dockerfile: str
    target: str | None = None
    # build argument -> name of the base spec whose image it receives
    bases: Mapping[str, str] = field(default_factory=dict)
    args: Mapping[str, str] = field(default_factory=dict)
    # whether the build may reuse the llama-cpp-python wheel (the model image)
    llama_wheel: bool = False


Spec = BaseSpec | DockerfileSpec

PYTHON_BASE = BaseSpec(
    "python-base", ("python3", "python3-venv", "python-is-python3", "ca-certificates"), '["python3"]'
)
DEBIAN_BASE = BaseSpec("debian-base", (), '["bash"]')
SPECS: dict[str, Spec] = {
    spec.name: spec
    for spec in (
        PYTHON_BASE,
        DEBIAN_BASE,
        DockerfileSpec("stoa", ".", "Dockerfile", target="stoa", bases={"PYTHON_IMAGE": "python-base"}),
        DockerfileSpec(
            "stoa-model",
            ".",
            "Dockerfile",
            target="model",
            bases={"PYTHON_IMAGE": "python-base"},
            llama_wheel=True,
        ),
        DockerfileSpec(
            "rabbitmq",
            "hack/images/rabbitmq",
            "hack/images/rabbitmq/Dockerfile",
            bases={"BASE_IMAGE": "debian-base"},
        ),
        DockerfileSpec(
            "postgres",
            "hack/images/postgres",
            "hack/images/postgres/Dockerfile",
            bases={"BASE_IMAGE": "debian-base"},
        ),
        DockerfileSpec(
            "pause", "hack/images/pause", "hack/images/pause/Dockerfile", bases={"BASE_IMAGE": "debian-base"}
        ),
    )
}
# What a node running Stoa's chart needs (the model image only where the real model is wanted).
NODE_IMAGES = ("stoa", "rabbitmq", "postgres", "pause")


def repository(name: str) -> str:
    return REPOSITORY_PREFIX + name


def dependencies(spec: Spec) -> list[str]:
    return sorted(set(spec.bases.values())) if isinstance(spec, DockerfileSpec) else []


def build_order(names: Iterable[str], specs: Mapping[str, Spec] = SPECS) -> list[str]:
    """The images to provide for ``names``, each after the bases it is built on."""
    order: list[str] = []

    def visit(name: str, path: tuple[str, ...]) -> None:
        if name in order:
            return
        if name in path:
            raise ValueError(f"image dependency cycle: {' -> '.join((*path, name))}")
        if name not in specs:
            raise ValueError(f"unknown image {name!r}; known: {', '.join(sorted(specs))}")
        for dep in dependencies(specs[name]):
            visit(dep, (*path, name))
        order.append(name)

    for name in names:
        visit(name, ())
    return order


def build_levels(names: Iterable[str], specs: Mapping[str, Spec] = SPECS) -> list[list[str]]:
    """``build_order`` grouped into levels: each image one level above the highest of its bases."""
    level: dict[str, int] = {}
    for name in build_order(names, specs):
        level[name] = 1 + max((level[dep] for dep in dependencies(specs[name])), default=-1)
    return [[n for n in level if level[n] == i] for i in range(max(level.values(), default=-1) + 1)]


@dataclass(frozen=True)
class FileDigest:
    path: str  # relative to the build context
    sha256: str
    executable: bool


def input_key(
    spec: Spec,
    dockerfile: bytes = b"",
    files: Iterable[FileDigest] = (),
    base_ids: Mapping[str, str] | None = None,
    wheel_sha256: str | None = None,
) -> str:
    """The hex sha256 of everything that decides the image's content.

    Left out on purpose, because they do not change what ends up in the image: ``EXTRA_CA_CERTS`` (trust
    for the build's own downloads) and the URL the reused wheel is served from (its digest is in).
    """
    document = {
        "format": KEY_FORMAT,
        "kind": type(spec).__name__,
        "spec": {k: dict(v) if isinstance(v, Mapping) else v for k, v in asdict(spec).items()},
        "dockerfile": hashlib.sha256(dockerfile).hexdigest(),
        "files": [[f.path, f.sha256, f.executable] for f in sorted(files, key=lambda f: f.path)],
        "bases": dict(sorted((base_ids or {}).items())),
        "wheel": wheel_sha256,
    }
    return hashlib.sha256(json.dumps(document, sort_keys=True).encode()).hexdigest()


def image_ref(name: str, key: str) -> str:
    """The local reference of an image: ``stoa.local/<name>:<first 16 hex of its key>``."""
    return f"{repository(name)}:{key[:TAG_LENGTH]}"


# The chart values that point charts/stoa at these images (one place, used by the CLI and the e2e).
_CHART_SPLIT_KEYS = {"stoa": "image", "stoa-model": "bundled.model.image"}
_CHART_REF_KEYS = {"rabbitmq": "bundled.rabbitmq.image", "postgres": "bundled.postgres.image"}


def chart_image_values(refs: Mapping[str, str]) -> dict[str, str]:
    """``helm --set`` values (key -> value) for the images among ``refs`` ({image name: reference})."""
    values: dict[str, str] = {}
    for name, ref in refs.items():
        if name in _CHART_SPLIT_KEYS:
            repository, tag = ref.rsplit(":", 1)
            values[f"{_CHART_SPLIT_KEYS[name]}.repository"] = repository
            values[f"{_CHART_SPLIT_KEYS[name]}.tag"] = tag
        elif name in _CHART_REF_KEYS:
            values[_CHART_REF_KEYS[name]] = ref
    return values
